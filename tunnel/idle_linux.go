//go:build linux

package tunnel

// expire shuts tunnels idle for their timeout and ends graceful closes that
// waited long enough (timeout). The heap is lazy: an entry whose tunnel
// moved bytes since it was pushed goes back with a later key.
func (l *loop) expire() {
	for len(l.heap) > 0 && l.heap[0].deadline <= l.now {
		t := l.heap[0]
		if d := t.due(); d > l.now {
			t.deadline = d
			l.heap.fix(0)
			continue
		}
		t.timeout()
	}
}

// idleHeap is a min-heap of tunnels by deadline (due); each knows its index.
type idleHeap []*loopTunnel

func (h *idleHeap) push(t *loopTunnel) {
	t.hidx = int32(len(*h))
	*h = append(*h, t)
	h.up(int(t.hidx))
}

func (h *idleHeap) remove(i int) {
	s := *h
	last := len(s) - 1
	s[i].hidx = -1
	if i != last {
		s[i] = s[last]
		s[i].hidx = int32(i)
	}
	s[last] = nil
	*h = s[:last]
	if i != last {
		h.fix(i)
	}
}

func (h idleHeap) fix(i int) {
	if !h.down(i) {
		h.up(i)
	}
}

func (h idleHeap) less(i, j int) bool { return h[i].deadline < h[j].deadline }

func (h idleHeap) swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].hidx, h[j].hidx = int32(i), int32(j)
}

func (h idleHeap) up(i int) {
	for i > 0 {
		p := (i - 1) / 2
		if !h.less(i, p) {
			return
		}
		h.swap(i, p)
		i = p
	}
}

func (h idleHeap) down(i int) bool {
	start := i
	for {
		c := 2*i + 1
		if c >= len(h) {
			break
		}
		if r := c + 1; r < len(h) && h.less(r, c) {
			c = r
		}
		if !h.less(c, i) {
			break
		}
		h.swap(i, c)
		i = c
	}
	return i > start
}
