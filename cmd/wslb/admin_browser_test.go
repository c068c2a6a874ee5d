package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/pool"
)

// TestStatusPageAdminButtons opens /status in headless Chromium on a
// loopback admin listener, clicks a backend's drain button and sees the
// page and the pool change, then ready again; with a token configured, the
// page sends the one it keeps in sessionStorage, and a wrong one shows
// the server's error and changes nothing.
func TestStatusPageAdminButtons(t *testing.T) {
	exe := browserFind(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	dir := t.TempDir()
	token := filepath.Join(dir, "token")
	os.WriteFile(token, []byte("t0ken"), 0o600)

	for _, tc := range []struct {
		name, admin string
		token       bool
	}{
		{"loopback", "{listen: 127.0.0.1:0}", false},
		{"token", fmt.Sprintf("{listen: 127.0.0.1:0, token_file: %s}", token), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			be := echo.WS(t, echo.WSOptions{})
			path := filepath.Join(t.TempDir(), "wslb.yaml")
			os.WriteFile(path, fmt.Appendf(nil, `
admin: %s
listeners: [{name: web, listen: 127.0.0.1:0, mode: l7, pool: ws}]
pools: [{name: ws, backends: [{address: %s}], health: {check: none}}]
`, tc.admin, be), 0o644)
			in := startServeFile(t, path).in
			b, _ := in.gen.Load().pools["ws"].Backend(be)

			bctx, console := browserStart(ctx, t, exe)
			if err := chromedp.Do(bctx, chromedp.Navigate("http://"+in.adminLn.Addr().String()+"/status")); err != nil {
				t.Fatalf("navigate: %v", err)
			}
			row := fmt.Sprintf(`tr[data-pool="ws"][data-backend=%q]`, be)
			word, msg := row+` [data-field="admin-word"]`, row+` [data-field="admin-msg"]`
			button := func(state string) string { return row + ` button[data-state="` + state + `"]` }
			browserWaitTexts(bctx, t, "ready", map[string]string{word: "ready"})

			if tc.token {
				// A wrong token: the error shows, nothing changes, and
				// the page forgets it.
				js(bctx, t, `sessionStorage.setItem("wslb-admin-token", "bad")`)
				click(bctx, t, button("drain"))
				browserWaitTexts(bctx, t, "the 401", map[string]string{msg: "wrong token: send the one in admin.token_file"})
				if b.Admin() != pool.AdminReady {
					t.Fatalf("a wrong token changed the state to %v", b.Admin())
				}
				js(bctx, t, `sessionStorage.setItem("wslb-admin-token", "t0ken")`)
			}
			click(bctx, t, button("drain"))
			browserWaitTexts(bctx, t, "drain", map[string]string{word: "drain", msg: ""})
			if b.Admin() != pool.AdminDrain {
				t.Fatalf("the pool says %v after the click, want drain", b.Admin())
			}
			click(bctx, t, button("ready"))
			browserWaitTexts(bctx, t, "ready again", map[string]string{word: "ready"})
			if b.Admin() != pool.AdminReady {
				t.Fatalf("the pool says %v, want ready", b.Admin())
			}
			console.check(t)
		})
	}
}

// js runs expr in the page.
func js(ctx context.Context, t *testing.T, expr string) {
	t.Helper()
	if _, err := chromedp.Run(ctx, chromedp.Evaluate[any](expr)); err != nil {
		t.Fatalf("%s: %v", expr, err)
	}
}

// click clicks the element sel names, as a user's click does: the page's
// own listener runs.
func click(ctx context.Context, t *testing.T, sel string) {
	t.Helper()
	ok, err := chromedp.Run(ctx, chromedp.Evaluate[bool](fmt.Sprintf(`(() => { const b = document.querySelector(%q);
		if (!b || b.disabled || b.closest("[hidden]")) return false; b.click(); return true; })()`, sel)))
	if err != nil || !ok {
		t.Fatalf("click %s: %v (found, shown and enabled: %v)", sel, err, ok)
	}
}
