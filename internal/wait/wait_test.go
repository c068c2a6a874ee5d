package wait

import (
	"testing"
	"time"
)

func TestUntil(t *testing.T) {
	n := 0
	if !Until(Timeout, func() bool { n++; return n == 3 }) || n != 3 {
		t.Fatalf("Until stopped after %d tries; want true on the third", n)
	}
	start := time.Now()
	if Until(20*time.Millisecond, func() bool { return false }) {
		t.Fatal("Until held for a condition that never holds")
	}
	if d := time.Since(start); d < 20*time.Millisecond || d > 2*time.Second {
		t.Errorf("Until gave up after %v, want about 20ms", d)
	}
}

func TestWithin(t *testing.T) {
	start := time.Now()
	ready := start.Add(30 * time.Millisecond)
	took := Within(t, "the clock", time.Second, func() bool { return time.Now().After(ready) })
	if took < 30*time.Millisecond || took > time.Since(start) {
		t.Fatalf("Within took %v, want at least 30ms and at most %v", took, time.Since(start))
	}
}
