package pool

// Hold is a reason a backend takes no new conns while the ones it has run
// on: Pick skips it, wslb_backend_up reads 0, and nothing else changes (its
// health checks go on, its conns, counts and series stay). Reasons combine:
// the backend takes conns again once every one is lifted.
type Hold uint32

// The hold reasons.
const (
	// HoldVanished: discovery no longer finds its address in the answers;
	// it is held for resolver.hold, then removed, unless it reappears.
	HoldVanished Hold = 1 << iota
	// HoldAdmin: an operator or the backend's agent put it in drain or
	// maint (admin.go); SetAdmin sets and lifts it.
	HoldAdmin
)

// Holds are the reasons b is held now; 0 when it is not.
func (b *Backend) Holds() Hold { return Hold(b.holds.Load()) }

// Held reports whether any hold is on b.
func (b *Backend) Held() bool { return b.holds.Load() != 0 }

// SetHold puts the hold h on b (on) or lifts it.
func (b *Backend) SetHold(h Hold, on bool) {
	if on {
		b.holds.Or(uint32(h))
	} else {
		b.holds.And(^uint32(h))
	}
}
