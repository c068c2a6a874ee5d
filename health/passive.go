package health

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/wslb/wslb/fdbudget"
	"github.com/wslb/wslb/pool"
)

// Passive turns failed dials into ejections (pool.Backend.DialFailed keeps
// the window) and announces each ejection once. One Passive serves every
// pool: the backend knows its pool's name and settings. Its zero value works.
type Passive struct {
	Log   *slog.Logger     // nil: discard
	Hooks Hooks            // OnChange is told of each ejection; OnResult is not used
	Now   func() time.Time // nil: time.Now
}

// DialFailed records a failed dial to b. Its signature is l4's and l7's
// OnDialError, so cmd wires it directly; a proxy may also call it for a conn
// reset before the backend sent any byte. A dial cancelled by its caller (a
// client gone, a drain), or one that failed for lack of local descriptors,
// buffers or memory, says nothing about the backend and is not counted.
// There is no matching "up" call: with checks on, the next pass ends the
// ejection (the Checker announces it); with check none it lapses when
// fail_timeout has passed, which Backend.Healthy reflects when read.
func (p *Passive) DialFailed(b *pool.Backend, err error) {
	if errors.Is(err, context.Canceled) || fdbudget.Exhausted(err) {
		return
	}
	now := time.Now
	if p.Now != nil {
		now = p.Now
	}
	if !b.DialFailed(now()) {
		return
	}
	logger(p.Log).Warn("backend down", "pool", b.PoolName(), "backend", b.String(), "reason", ReasonPassive, "err", err)
	if p.Hooks.OnChange != nil {
		p.Hooks.OnChange(b.PoolName(), b, false, ReasonPassive, err)
	}
}
