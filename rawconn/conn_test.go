//go:build linux

package rawconn

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/wslb/wslb/internal/wait"
)

// pair returns a Conn over the accepted end of a loopback TCP conn, told
// neither address, and the dialing end.
func pair(t *testing.T) (*Conn, *net.TCPConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	peer, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { peer.Close() })
	ac, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	// The accepted socket, taken out of Go's netpoller as an event loop
	// takes one: a duplicate, non-blocking as the original.
	rc, _ := ac.(*net.TCPConn).SyscallConn()
	fd := -1
	rc.Control(func(s uintptr) { fd, err = unix.FcntlInt(s, unix.F_DUPFD_CLOEXEC, 0) })
	ac.Close()
	if err != nil {
		t.Fatal(err)
	}
	c := New(fd, nil, nil)
	t.Cleanup(func() { c.Close() })
	return c, peer.(*net.TCPConn)
}

// polled reports whether c moved to the netpoller.
func polled(c *Conn) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.f != nil
}

func TestReadWriteStayRaw(t *testing.T) {
	c, peer := pair(t)
	peer.Write([]byte("ping"))
	buf := make([]byte, 16)
	// The bytes may take a moment to arrive; a read that finds none moves
	// c to the netpoller, which this test is not about.
	wait.For(t, "the bytes to arrive", func() bool {
		n, _, _ := unix.Recvfrom(c.fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		return n == 4
	})
	n, err := c.Read(buf)
	if err != nil || string(buf[:n]) != "ping" {
		t.Fatalf("Read = %q, %v; want ping", buf[:n], err)
	}
	if _, err := c.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	if _, err := io.ReadFull(peer, buf[:4]); err != nil || string(buf[:4]) != "pong" {
		t.Fatalf("peer read %q, %v; want pong", buf[:4], err)
	}
	if polled(c) {
		t.Error("a read and a write that did not wait moved the conn to the netpoller")
	}
	if got, want := c.RemoteAddr().String(), peer.LocalAddr().String(); got != want {
		t.Errorf("RemoteAddr = %s, want %s", got, want)
	}
	if got, want := c.LocalAddr().String(), peer.RemoteAddr().String(); got != want {
		t.Errorf("LocalAddr = %s, want %s", got, want)
	}
}

func TestReadWaits(t *testing.T) {
	c, peer := pair(t)
	got := make(chan string, 1)
	go func() {
		buf := make([]byte, 16)
		n, err := c.Read(buf)
		if err != nil {
			got <- err.Error()
			return
		}
		got <- string(buf[:n])
	}()
	wait.For(t, "the read to wait in the netpoller", func() bool { return polled(c) })
	peer.Write([]byte("late"))
	select {
	case s := <-got:
		if s != "late" {
			t.Fatalf("Read = %q, want late", s)
		}
	case <-time.After(wait.Timeout):
		t.Fatal("Read did not return the bytes written while it waited")
	}
}

func TestDeadlines(t *testing.T) {
	t.Run("set while raw, bounds the wait", func(t *testing.T) {
		c, _ := pair(t)
		c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := c.Read(make([]byte, 1))
		if ne, ok := errors.AsType[net.Error](err); !ok || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read past its deadline = %v, want a timeout", err)
		}
	})
	t.Run("passed, with bytes there", func(t *testing.T) {
		c, peer := pair(t)
		peer.Write([]byte("x"))
		c.SetDeadline(time.Now().Add(-time.Second))
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Read with its deadline passed = %v, want a timeout", err)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("Write with its deadline passed = %v, want a timeout", err)
		}
	})
	t.Run("cleared", func(t *testing.T) {
		c, peer := pair(t)
		c.SetReadDeadline(time.Now().Add(-time.Second))
		c.SetReadDeadline(time.Time{})
		peer.Write([]byte("x"))
		if _, err := c.Read(make([]byte, 1)); err != nil {
			t.Fatalf("Read after the deadline was cleared = %v", err)
		}
	})
}

func TestWriteWaitsWhenFull(t *testing.T) {
	c, peer := pair(t)
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB: more than both buffers
	done := make(chan error, 1)
	go func() {
		n, err := c.Write(data)
		if err == nil && n != len(data) {
			err = io.ErrShortWrite
		}
		done <- err
	}()
	wait.For(t, "the write to wait in the netpoller", func() bool { return polled(c) })
	got, err := io.ReadAll(io.LimitReader(peer, int64(len(data))))
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("peer read %d bytes, %v; want the %d written", len(got), err, len(data))
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestClose(t *testing.T) {
	c, peer := pair(t)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1))
		errc <- err
	}()
	wait.For(t, "the read to wait", func() bool { return polled(c) })
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Errorf("a Read waiting when Close came = %v, want net.ErrClosed", err)
	}
	if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after Close = %v, want net.ErrClosed", err)
	}
	if err := c.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
	peer.SetReadDeadline(time.Now().Add(wait.Timeout))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read after Close = %v, want EOF", err)
	}

	raw, _ := pair(t)
	if err := raw.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Read after Close = %v, want net.ErrClosed", err)
	}
}

func TestEOFAndCloseWrite(t *testing.T) {
	c, peer := pair(t)
	if err := c.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	peer.SetReadDeadline(time.Now().Add(wait.Timeout))
	if _, err := peer.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("peer read after CloseWrite = %v, want EOF", err)
	}
	peer.Close()
	c.SetReadDeadline(time.Now().Add(wait.Timeout))
	if _, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("Read after the peer closed = %v, want io.EOF", err)
	}
}

func TestDetach(t *testing.T) {
	for _, poll := range []bool{false, true} {
		c, peer := pair(t)
		want := c.fd
		if poll {
			if _, err := c.SyscallConn(); err != nil { // moves it to the netpoller
				t.Fatal(err)
			}
		}
		fd, err := c.Detach()
		if err != nil {
			t.Fatal(err)
		}
		if !poll && fd != want {
			t.Errorf("Detach of a raw conn = fd %d, want its own %d, untouched", fd, want)
		}
		if _, err := c.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Detach = %v, want net.ErrClosed", err)
		}
		if _, err := unix.Write(fd, []byte("detached")); err != nil {
			t.Fatalf("write on the detached socket (polled %v): %v", poll, err)
		}
		unix.Close(fd)
		buf, err := io.ReadAll(peer)
		if err != nil || string(buf) != "detached" {
			t.Errorf("peer read %q, %v; want detached then EOF", buf, err)
		}
	}
}

// TestConcurrent has a reader, a writer and a closer race, as a drain
// closes a conn that is being read and written; -race checks the rest.
func TestConcurrent(t *testing.T) {
	for range 20 {
		c, peer := pair(t)
		go io.Copy(peer, peer) // echo
		var wg sync.WaitGroup
		wg.Go(func() {
			for range 100 {
				if _, err := c.Write([]byte("abc")); err != nil {
					return
				}
			}
		})
		wg.Go(func() {
			buf := make([]byte, 64)
			for {
				if _, err := c.Read(buf); err != nil {
					return
				}
			}
		})
		wg.Go(func() { c.Close() })
		wg.Wait()
	}
}
