package admin

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// checkHost answers 421 to a request whose Host does not name a loopback
// listener at listen (its bound host:port): only localhost, *.localhost, a
// loopback address or listen itself may, with any port. A page on
// evil.example whose name an attacker re-points at 127.0.0.1 (DNS
// rebinding) sends Host: evil.example, and so cannot read the admin
// listener from a browser on this host. A request without Host (HTTP/1.0)
// names nothing a page could rebind and passes.
func checkHost(next http.Handler, listen string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Host == "" || localHost(r.Host, listen) {
			next.ServeHTTP(w, r)
			return
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Connection", "close")
		w.WriteHeader(http.StatusMisdirectedRequest)
		fmt.Fprintf(w, "421 Misdirected Request: Host %q does not name this admin listener, which is bound to loopback (%s): "+
			"use localhost, a loopback address or %s\n", r.Host, listen, listen)
	})
}

// localHost reports whether host, a Host header, is localhost, a name under
// .localhost, a loopback address or listen, with or without a port.
func localHost(host, listen string) bool {
	if strings.EqualFold(host, listen) {
		return true
	}
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	}
	name = strings.TrimSuffix(strings.ToLower(strings.Trim(name, "[]")), ".")
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	if lh, _, err := net.SplitHostPort(listen); err == nil && strings.EqualFold(name, lh) {
		return true
	}
	ip, err := netip.ParseAddr(name)
	return err == nil && ip.Unmap().IsLoopback()
}

// loopback reports whether addr, a bound address, is a loopback one.
func loopback(addr net.Addr) bool {
	ta, ok := addr.(*net.TCPAddr)
	return ok && ta.IP.IsLoopback()
}
