//go:build linux

package l7

import (
	"context"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/pool"
	"github.com/wslb/wslb/tunnel"
)

// The event loop's idle backend conns: one cache per worker's loop, like
// pool.IdleCache for its goroutines, kept alive-checked by epoll itself.

// takeIdle returns the newest idle conn to b in the loop's cache, or nil.
// Any conn the backend closed while it idled is gone already (dropIdle).
func (l *evLoop) takeIdle(b *pool.Backend) *loopBackend {
	list := l.idle[b]
	n := len(list)
	if n == 0 {
		return nil
	}
	be := list[n-1]
	list[n-1] = nil
	l.idle[b] = list[:n-1]
	b.AddIdle(-1)
	be.reused, be.got, be.resp, be.head = true, false, nil, nil
	be.readable, be.rdhup = false, false
	return be
}

// adopt takes an idle conn to b from the worker's goroutine cache, where
// the first request of every client conn leaves its backend conn, into the
// loop: cheaper than a new dial, for wslb and for the backend.
func (l *evLoop) adopt(b *pool.Backend) *loopBackend {
	c, br, ok := l.w.cache.Get(b)
	if !ok {
		return nil
	}
	if br != nil {
		putReader(br) // empty: Get hands out no conn with bytes waiting
	}
	if !tunnel.Plain(c) {
		c.Close()
		return nil
	}
	fd, err := tunnel.Detach(c)
	if err != nil {
		return nil
	}
	be := &loopBackend{l: l, fd: fd, b: b, reused: true}
	if be.slot, err = l.watch(fd, be); err != nil {
		unix.Close(fd)
		return nil
	}
	return be
}

// putIdle keeps be for another request, at most b.IdleMax() per backend,
// evicting the oldest, as pool.IdleCache does.
func (l *evLoop) putIdle(be *loopBackend) {
	b := be.b
	limit := b.IdleMax()
	if limit <= 0 || b.Context().Err() != nil || b.TLS() != nil {
		be.close()
		return
	}
	be.owner = nil
	list := l.idle[b]
	if list == nil {
		// Nobody picks a removed backend: its conns go when it does.
		stop := context.AfterFunc(b.Context(), func() { l.purge(b) })
		l.idleStop[b] = stop
	}
	list = append(list, be)
	b.AddIdle(1)
	for len(list) > limit {
		list[0].close()
		list = list[1:]
		b.AddIdle(-1)
	}
	l.idle[b] = list
}

// dropIdle closes be, idle in the cache: the backend closed it or sent
// something while it idled.
func (l *evLoop) dropIdle(be *loopBackend) {
	list := l.idle[be.b]
	for i, o := range list {
		if o == be {
			l.idle[be.b] = append(list[:i], list[i+1:]...)
			be.b.AddIdle(-1)
			break
		}
	}
	be.close()
}

// purge asks the loop to close the idle conns of b, a removed backend.
func (l *evLoop) purge(b *pool.Backend) {
	l.in.Put(note{purge: b}) // refused: closing closes every idle conn
}

// closeIdle closes every idle conn to b.
func (l *evLoop) closeIdle(b *pool.Backend) {
	for _, be := range l.idle[b] {
		be.close()
		b.AddIdle(-1)
	}
	delete(l.idle, b)
	if stop := l.idleStop[b]; stop != nil {
		stop()
		delete(l.idleStop, b)
	}
}
