//go:build linux

package poller

import (
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkInbox is one item through the inbox, on one goroutine: put, a
// wait that returns at once, take. busy: put while the loop is not waiting,
// as on a loop serving events (no eventfd write or read); waiting: put while
// it is about to wait, so the put writes the eventfd and the wait reads it.
// The difference is what the elision saves per item.
func BenchmarkInbox(b *testing.B) {
	for name, waiting := range map[string]bool{"busy": false, "waiting": true} {
		b.Run(name, func(b *testing.B) {
			set, err := New()
			if err != nil {
				b.Fatal(err)
			}
			defer set.Close()
			in, err := NewInbox[int](set)
			if err != nil {
				b.Fatal(err)
			}
			defer in.Release()
			events := make([]unix.EpollEvent, 8)
			for i := 0; b.Loop(); i++ {
				if waiting {
					// As Wait publishes it before it blocks.
					in.mu.Lock()
					in.waiting = true
					in.mu.Unlock()
				}
				in.Put(i)
				if _, drain := in.Wait(events, 0); !drain {
					b.Fatal("Wait did not report the item")
				}
				if q, _ := in.Take(); len(q) != 1 {
					b.Fatalf("Take = %v", q)
				}
			}
		})
	}
}
