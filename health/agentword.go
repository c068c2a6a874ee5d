package health

import (
	"strconv"
	"strings"

	"github.com/wslb/wslb/pool"
)

// The words of an agent's answer, as HAProxy reads them: separated by
// spaces, tabs or commas, in any case and any order; everything after a '#'
// is a free-text reason. When words contradict each other the last wins.

// Administrative words, passed to Hooks.SetAdmin.
const (
	AgentReady = "ready"
	AgentDrain = "drain"
	AgentMaint = "maint"
)

// agentReply is one answer, parsed.
type agentReply struct {
	pct     int    // a weight percentage; -1 when the answer has none
	admin   string // AgentReady, AgentDrain, AgentMaint or ""
	state   string // "up", or the down word as sent (down, stopped, fail); "" for neither
	reason  string // the text after '#', trimmed
	unknown []string
}

// parseAgent reads one line. It never fails: words it does not understand
// are listed in unknown and otherwise ignored.
func parseAgent(line string) agentReply {
	r := agentReply{pct: -1}
	if i := strings.IndexByte(line, '#'); i >= 0 {
		line, r.reason = line[:i], strings.TrimSpace(line[i+1:])
	}
	words := strings.FieldsFunc(line, func(c rune) bool {
		return c == ' ' || c == '\t' || c == ',' || c == '\r' || c == '\n'
	})
	for _, w := range words {
		lw := strings.ToLower(w)
		switch lw {
		case AgentReady, AgentDrain, AgentMaint:
			r.admin = lw
		case "up":
			r.state = lw
		case "down", "stopped", "fail":
			// HAProxy marks all three down; the word says whether it was
			// expected (stopped) or not (fail), so it is logged as sent.
			r.state = lw
		default:
			if n, ok := percent(lw); ok {
				r.pct = n
			} else {
				r.unknown = append(r.unknown, w)
			}
		}
	}
	return r
}

// percent reads "N%" with N a whole number (HAProxy's format); anything
// else is not a percentage.
func percent(w string) (int, bool) {
	digits, ok := strings.CutSuffix(w, "%")
	if !ok || digits == "" || strings.TrimLeft(digits, "0123456789") != "" {
		return 0, false
	}
	n, err := strconv.Atoi(digits)
	if err != nil {
		// More digits than an int holds: as large as it gets, which the
		// weight cap turns into the largest weight.
		return pool.AgentMaxPercent, true
	}
	return n, true
}

// apply tells the backend what the agent said, logging and announcing each
// change once: an agent repeating itself every interval logs nothing.
func (a *AgentChecker) apply(r agentReply, line string) {
	b := a.Backend
	attrs := []any{"pool", a.Pool, "backend", b.String()}
	a.logUnknown(r.unknown, attrs)
	if r.pct >= 0 && b.SetAgentPercent(r.pct) {
		a.Log.Debug("agent weight", append(attrs, "percent", b.AgentPercent(), "weight", b.Weight())...)
	}
	if r.state != "" {
		a.applyState(r, attrs)
	}
	if r.admin != "" && b.SetAgentAdmin(r.admin) {
		a.Log.Info("agent state", append(attrs, "state", r.admin)...)
		if a.Hooks.SetAdmin != nil {
			a.Hooks.SetAdmin(b, r.admin)
		}
	}
}

// applyState takes the backend out on down (stopped, fail) and lets it back
// on up; up restores only the agent's own verdict, the active checks keep
// theirs.
func (a *AgentChecker) applyState(r agentReply, attrs []any) {
	b := a.Backend
	down := r.state != "up"
	if !b.SetAgentDown(down) {
		return
	}
	if r.reason != "" {
		attrs = append(attrs, "agent_reason", r.reason)
	}
	var err error
	if down {
		err = agentDownError{word: r.state, reason: r.reason}
		a.Log.Warn("backend down: its agent says "+r.state, append(attrs, "reason", ReasonAgent)...)
	} else {
		a.Log.Info("backend up: its agent says up", append(attrs, "reason", ReasonAgent, "healthy", b.Healthy())...)
	}
	if a.Hooks.OnChange != nil {
		a.Hooks.OnChange(a.Pool, b, b.Healthy(), ReasonAgent, err)
	}
}

// logUnknown logs each word the agent sent that wslb does not read, once
// per checker, at debug: agents written for HAProxy may send maxconn:N.
func (a *AgentChecker) logUnknown(words []string, attrs []any) {
	for _, w := range words {
		lw := strings.ToLower(w)
		if a.unknown[lw] || len(a.unknown) >= agentMaxUnknown {
			continue
		}
		if a.unknown == nil {
			a.unknown = map[string]bool{}
		}
		a.unknown[lw] = true
		a.Log.Debug("agent word ignored: not one of N%, ready, drain, maint, up, down, stopped, fail", append(attrs, "word", w)...)
	}
}

// agentDownError is the "last error" of a backend its agent took down, for
// the status page.
type agentDownError struct{ word, reason string }

func (e agentDownError) Error() string {
	if e.reason == "" {
		return "agent says " + e.word
	}
	return "agent says " + e.word + ": " + e.reason
}
