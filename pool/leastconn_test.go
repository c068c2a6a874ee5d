package pool

import (
	"slices"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

func TestLeastConnHeld(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		picks   int
		want    []int64
	}{
		{name: "equal", weights: []int{1, 1, 1}, picks: 30, want: []int64{10, 10, 10}},
		{name: "weighted", weights: []int{1, 2, 3}, picks: 60, want: []int64{10, 20, 30}},
		{name: "weighted unevenly", weights: []int{5, 1}, picks: 12, want: []int64{10, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(testConfig(config.BalanceLeastConn, tt.weights...))
			for range tt.picks {
				if _, err := p.Pick(clientIP(1), nil); err != nil {
					t.Fatalf("Pick: %v", err)
				}
			}
			got := make([]int64, 0, len(tt.want))
			for _, b := range p.Backends() {
				got = append(got, b.Active())
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("Active() = %v; want %v", got, tt.want)
			}
		})
	}
}

// TestLeastConnRotatesTies checks that picks released at once (plain requests)
// spread over equal backends instead of all landing on the first.
func TestLeastConnRotatesTies(t *testing.T) {
	p := New(testConfig(config.BalanceLeastConn, 1, 1, 1))
	got := make([]int, 3)
	var order []int
	for range 30 {
		b, err := p.Pick(clientIP(1), nil)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		got[index(p, b)]++
		order = append(order, index(p, b))
		b.Release()
	}
	if !slices.Equal(got, []int{10, 10, 10}) {
		t.Errorf("picks per backend = %v; want [10 10 10] (order %v)", got, order)
	}
}

// TestLeastConnPrefersLeastLoaded checks the ratio comparison against held load.
func TestLeastConnPrefersLeastLoaded(t *testing.T) {
	p := New(testConfig(config.BalanceLeastConn, 1, 2, 1))
	bs := p.Backends()
	// Loads 2/1, 3/2, 1/1: backend 2 (1.0) beats 1 (1.5) and 0 (2.0).
	for range 2 {
		bs[0].reserve(time.Now())
	}
	for range 3 {
		bs[1].reserve(time.Now())
	}
	bs[2].reserve(time.Now())
	for i := range 3 { // the cursor must not matter when there is no tie
		b, err := p.Pick(clientIP(1), nil)
		if err != nil {
			t.Fatalf("Pick: %v", err)
		}
		if b != bs[2] {
			t.Fatalf("pick %d: got %s; want %s", i, b, bs[2])
		}
		b.Release()
	}
}
