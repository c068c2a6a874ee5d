package pool

import (
	"cmp"
	"hash/fnv"
	"math"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/wslb/wslb/config"
)

// order is client's fallback order over p's backends: highest score first.
func order(p *Pool, client netip.Addr) []*Backend {
	bs := slices.Clone(p.Backends())
	h := hashIP(client)
	slices.SortFunc(bs, func(a, b *Backend) int { return cmp.Compare(score(h, b), score(h, a)) })
	return bs
}

func pick(t *testing.T, p *Pool, client netip.Addr, exclude *Backend) *Backend {
	t.Helper()
	b, err := p.Pick(client, exclude)
	if err != nil {
		t.Fatalf("Pick(%v): %v", client, err)
	}
	b.Release()
	return b
}

func TestHashMatchesFNV(t *testing.T) {
	tests := []struct {
		name   string
		client netip.Addr
		bytes  []byte
	}{
		{name: "ipv4", client: netip.MustParseAddr("192.0.2.7"), bytes: []byte{192, 0, 2, 7}},
		{name: "ipv4-mapped counts as ipv4", client: netip.MustParseAddr("::ffff:192.0.2.7"), bytes: []byte{192, 0, 2, 7}},
		{name: "ipv6", client: netip.MustParseAddr("2001:db8::1"), bytes: netip.MustParseAddr("2001:db8::1").AsSlice()},
		{name: "zero", client: netip.Addr{}, bytes: nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := fnv.New64a()
			f.Write(tt.bytes)
			if got, want := hashIP(tt.client), f.Sum64(); got != want {
				t.Errorf("hashIP = %#x; want FNV-1a %#x", got, want)
			}
		})
	}
}

// TestSourceHashStable pins the mapping, recorded from this implementation: it
// must not change between releases, or every upgrade would reshuffle clients.
func TestSourceHashStable(t *testing.T) {
	p := New(testConfig(config.BalanceSourceHash, 1, 1, 1, 1))
	tests := []struct {
		name    string
		clients []string
		want    []int
	}{
		{
			name: "ipv4",
			clients: []string{
				"192.0.2.1", "192.0.2.2", "192.0.2.3", "192.0.2.4", "192.0.2.5", "192.0.2.6", "192.0.2.7", "192.0.2.8",
				"192.0.2.9", "192.0.2.10", "192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.14", "192.0.2.15", "192.0.2.16",
			},
			want: []int{0, 0, 2, 3, 1, 0, 1, 1, 2, 0, 3, 1, 1, 2, 0, 1},
		},
		{name: "ipv6", clients: []string{"2001:db8::1", "2001:db8::2", "2001:db8::3"}, want: []int{1, 3, 1}},
		{name: "zero address", clients: []string{"invalid"}, want: []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for i, s := range tt.clients {
				client, _ := netip.ParseAddr(s) // "invalid" gives the zero Addr
				for range 3 {
					if got := index(p, pick(t, p, client, nil)); got != tt.want[i] {
						t.Fatalf("%s: backend %d; want %d", s, got, tt.want[i])
					}
				}
			}
		})
	}
}

func TestSourceHashIgnoresPort(t *testing.T) {
	p := New(testConfig(config.BalanceSourceHash, 1, 1, 1, 1))
	for i := range 100 {
		ip := clientIP(i)
		// Callers pass the address of the client's AddrPort, so its port cannot matter.
		a := netip.AddrPortFrom(ip, 40000)
		b := netip.AddrPortFrom(ip, uint16(1024+i))
		if pick(t, p, a.Addr(), nil) != pick(t, p, b.Addr(), nil) {
			t.Fatalf("client %v: different backends for ports %d and %d", ip, a.Port(), b.Port())
		}
	}
}

// TestSourceHashAddBackend checks consistency: adding a fifth backend moves
// about 1/5 of clients, and only to the new backend.
func TestSourceHashAddBackend(t *testing.T) {
	const clients = 10000
	c := testConfig(config.BalanceSourceHash, 1, 1, 1, 1)
	four := New(c)
	before := make([]*Backend, clients)
	for i := range clients {
		before[i] = pick(t, four, clientIP(i), nil)
	}
	c.Backends = append(c.Backends, testBackend(5, 1))
	five := Reconcile(four, c)
	added := five.Backends()[4]
	moved := 0
	for i := range clients {
		b := pick(t, five, clientIP(i), nil)
		if b == before[i] {
			continue
		}
		moved++
		if b != added {
			t.Fatalf("client %d moved from %s to %s, not to the new backend", i, before[i], b)
		}
	}
	if got, want := float64(moved)/clients, 1.0/5; math.Abs(got-want) > 0.02 {
		t.Errorf("moved %.3f of clients; want %.3f ± 0.02", got, want)
	}
}

func TestSourceHashWeights(t *testing.T) {
	const clients = 12000
	weights := []int{1, 2, 3}
	p := New(testConfig(config.BalanceSourceHash, weights...))
	got := make([]int, len(weights))
	for i := range clients {
		got[index(p, pick(t, p, clientIP(i), nil))]++
	}
	for i, w := range weights {
		share, want := float64(got[i])/clients, float64(w)/6
		if math.Abs(share-want) > 0.03 {
			t.Errorf("backend %d (weight %d): share %.3f; want %.3f ± 0.03", i, w, share, want)
		}
	}
}

// TestSourceHashFallback checks that a client whose backend is unavailable goes
// to the next backend in its own order, and that clients of other backends stay.
func TestSourceHashFallback(t *testing.T) {
	tests := []struct {
		name string
		take func(b *Backend) (exclude *Backend, undo func())
	}{
		{name: "down", take: func(b *Backend) (*Backend, func()) {
			b.SetUp(false)
			return nil, func() { b.SetUp(true) }
		}},
		{name: "full", take: func(b *Backend) (*Backend, func()) {
			b.reserve(time.Now())
			return nil, b.Release
		}},
		{name: "excluded", take: func(b *Backend) (*Backend, func()) {
			return b, func() {}
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := testConfig(config.BalanceSourceHash, 1, 1, 2, 1)
			c.MaxConnectionsPerBackend = 1
			p := New(c)
			for i := range 500 {
				client := clientIP(i)
				want := order(p, client)
				if got := pick(t, p, client, nil); got != want[0] {
					t.Fatalf("client %d: picked %s; want the top of its order %s", i, got, want[0])
				}
				exclude, undo := tt.take(want[0])
				if got := pick(t, p, client, exclude); got != want[1] {
					t.Errorf("client %d: fallback %s; want its second choice %s", i, got, want[1])
				}
				undo()
				// Taking out a backend the client does not use must not move it.
				exclude, undo = tt.take(want[3])
				if got := pick(t, p, client, exclude); got != want[0] {
					t.Errorf("client %d moved to %s when an unrelated backend went", i, got)
				}
				undo()
			}
		})
	}
}
