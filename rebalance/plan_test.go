package rebalance

import (
	"slices"
	"testing"
)

func TestPlan(t *testing.T) {
	up := func(tunnels, weight int) Load { return Load{Tunnels: tunnels, Weight: weight, Available: true} }
	down := func(tunnels int) Load { return Load{Tunnels: tunnels, Weight: 1} }
	tests := []struct {
		name      string
		loads     []Load
		tolerance float64
		want      []int
	}{
		{"balanced", []Load{up(10, 1), up(10, 1)}, 0.2, []int{0, 0}},
		{"within tolerance", []Load{up(11, 1), up(9, 1)}, 0.2, []int{0, 0}},
		// 3 → 6 backends: share 500, each old one sheds 500.
		{"scale out", []Load{up(1000, 1), up(1000, 1), up(1000, 1), up(0, 1), up(0, 1), up(0, 1)}, 0.2,
			[]int{500, 500, 500, 0, 0, 0}},
		// Down to the share rounded up: 10 over 3 is 3.33, so 4.
		{"rounded up", []Load{up(10, 1), up(0, 1), up(0, 1)}, 0.2, []int{6, 0, 0}},
		// Weight 3 of 4: share 75 of 100, 90 is within 1.2 × 75.
		{"weighted within", []Load{up(90, 3), up(10, 1)}, 0.2, []int{0, 0}},
		{"weighted over", []Load{up(10, 3), up(90, 1)}, 0.2, []int{0, 65}},
		// An unavailable backend's tunnels are neither moved nor counted.
		{"unavailable left alone", []Load{down(500), up(20, 1), up(0, 1)}, 0.2, []int{0, 10, 0}},
		{"none available", []Load{down(5), down(0)}, 0.2, []int{0, 0}},
		{"zero tolerance", []Load{up(11, 1), up(9, 1)}, 0, []int{1, 0}},
		{"empty", nil, 0.2, []int{}},
		// Once moving, a backend goes on down to its share.
		{"moving within tolerance", []Load{{Tunnels: 11, Weight: 1, Available: true, Moving: true}, up(9, 1)}, 0.2, []int{1, 0}},
		{"moving at share", []Load{{Tunnels: 10, Weight: 1, Available: true, Moving: true}, up(10, 1)}, 0.2, []int{0, 0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := Plan(tc.loads, tc.tolerance)
			if !slices.Equal(got, tc.want) {
				t.Errorf("Plan = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestLimit: the limit goes one close at a time to the most left to close.
func TestLimit(t *testing.T) {
	for _, tc := range []struct {
		want  []int
		limit int
		got   []int
	}{
		{[]int{21, 17, 0, 0}, 10, []int{7, 3, 0, 0}},
		{[]int{15, 0}, 100, []int{15, 0}},
		{[]int{5, 5, 5}, 4, []int{2, 1, 1}},
		{[]int{}, 10, []int{}},
	} {
		if got := Limit(tc.want, tc.limit); !slices.Equal(got, tc.got) {
			t.Errorf("Limit(%v, %d) = %v, want %v", tc.want, tc.limit, got, tc.got)
		}
	}
}
