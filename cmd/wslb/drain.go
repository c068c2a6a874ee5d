package main

import (
	"context"
	"os"
	"sync"
	"syscall"
	"time"
)

// drain stops every listener accepting at once (new conns are refused, not
// left queued), lets the conns run for drain_timeout, then closes the rest
// spread over close_spread, waits for listeners retired by reloads, and stops
// the admin server. Another SIGTERM/SIGINT cuts it short.
func (in *instance) drain(sigs <-chan os.Signal) {
	in.mu.Lock() // no reload from here on
	defer in.mu.Unlock()
	in.draining.Store(true)
	in.beginDrain()
	g := in.gen.Load()
	if g.stopDiscovery != nil {
		g.stopDiscovery() // the backends stay as they are while the conns run out
	}
	if g.stopRebalance != nil {
		g.stopRebalance() // the drain ends every tunnel anyway
	}
	for _, l := range g.listeners {
		l.stop()
	}
	for _, l := range g.listeners {
		<-l.served
	}
	ctx, cutShort := context.WithCancel(context.Background())
	defer cutShort()
	done := make(chan struct{})
	go func() {
		for {
			select {
			case s := <-sigs:
				switch s {
				case syscall.SIGHUP:
					in.log.Warn("SIGHUP ignored: draining")
				case syscall.SIGUSR1:
					in.reopenAccessLog()
				default:
					in.log.Warn("second signal: closing every conn now", "signal", s.String())
					cutShort()
					in.cutRetiring()
					return
				}
			case <-done:
				return
			}
		}
	}()
	var wg sync.WaitGroup
	for _, l := range g.listeners {
		wg.Go(func() { l.fl.Drain(ctx, g.cfg.Shutdown.DrainTimeout, g.cfg.Shutdown.CloseSpread) })
	}
	wg.Wait()
	in.retiring.Wait()
	close(done)
	if in.admin != nil {
		shutdownCtx, cancel := context.WithTimeout(context.Background(), time.Second)
		in.admin.Shutdown(shutdownCtx)
		cancel()
	}
}

// reopenAccessLog is SIGUSR1: logrotate moved the file away.
func (in *instance) reopenAccessLog() {
	if err := in.access.Reopen(); err != nil {
		in.log.Error("cannot reopen the access log; still writing to the old file", "err", err)
		return
	}
	in.log.Info("access log reopened")
}
