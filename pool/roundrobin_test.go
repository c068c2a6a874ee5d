package pool

import (
	"slices"
	"testing"

	"github.com/wslb/wslb/config"
)

func TestRoundRobinSequence(t *testing.T) {
	tests := []struct {
		name    string
		weights []int
		down    int // index of a backend set down first; -1 for none
		want    []int
	}{
		{name: "nginx 5,1,1", weights: []int{5, 1, 1}, down: -1, want: []int{0, 0, 1, 0, 2, 0, 0, 0, 0, 1, 0, 2, 0, 0}},
		{name: "equal", weights: []int{1, 1, 1}, down: -1, want: []int{0, 1, 2, 0, 1, 2}},
		{name: "reduced by gcd", weights: []int{2, 4}, down: -1, want: []int{1, 0, 1, 1, 0, 1}},
		{name: "heavy one down", weights: []int{5, 1, 1}, down: 0, want: []int{1, 2, 1, 2, 1, 2}},
		{name: "light one down", weights: []int{1, 1, 2}, down: 2, want: []int{0, 1, 0, 1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := New(testConfig(config.BalanceRoundRobin, tt.weights...))
			if tt.down >= 0 {
				p.Backends()[tt.down].SetUp(false)
			}
			var got []int
			for range tt.want {
				b, err := p.Pick(clientIP(1), nil)
				if err != nil {
					t.Fatalf("Pick: %v", err)
				}
				got = append(got, index(p, b))
				b.Release()
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("sequence = %v; want %v", got, tt.want)
			}
		})
	}
}

func TestSmoothScheduleBounded(t *testing.T) {
	tests := []struct {
		name    string
		weights []int64
		minLen  int
		maxLen  int
	}{
		{name: "small", weights: []int64{5, 1, 1}, minLen: 7, maxLen: 7},
		// Scaling rounds down but keeps one slot each.
		{name: "huge weights are scaled", weights: []int64{1 << 40, 1}, minLen: maxSchedule - 1, maxLen: maxSchedule + 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := smoothSchedule(tt.weights)
			if len(s) < tt.minLen || len(s) > tt.maxLen {
				t.Errorf("len = %d; want %d..%d", len(s), tt.minLen, tt.maxLen)
			}
			for i := range tt.weights {
				if !slices.Contains(s, int32(i)) {
					t.Errorf("backend %d has no slot", i)
				}
			}
		})
	}
}
