package header

import (
	"net/http"
	"strings"
)

// UpgradeToken reports whether h asks for a protocol upgrade that may be
// tunnelled, and to which protocol.
//
// present is true when the request asks for an upgrade at all: some Connection
// header lists the "upgrade" option (any case, any position, RFC 9110 §7.6.1) and
// an Upgrade header is present (§7.8). An Upgrade header without that option is
// no upgrade request: §7.8 has every sender of Upgrade list "upgrade" in
// Connection so that intermediaries do not forward the header.
//
// token is the first protocol of the Upgrade list (in the client's order of
// preference, §7.8) that matches an entry of allowed, lowercased as that entry
// is spelled. A protocol is "name" or "name/version" and matches an entry only
// as a whole, without regard to ASCII case: an allowed "websocket" does not
// admit "websocket/13". h2c (RFC 7540 §3.2, deprecated by RFC 9113 §3.1) is
// never returned, at any version and whatever allowed says, because an HTTP/2
// conn behind the tunnel would bypass every l7 rule.
//
// When present is true and token is "", the caller removes the upgrade
// (RemoveHopByHop does) and forwards the request as a plain one.
func UpgradeToken(h http.Header, allowed []string) (token string, present bool) {
	if !hasToken(h["Connection"], "upgrade") || len(h["Upgrade"]) == 0 {
		return "", false
	}
	for offered := range tokens(h["Upgrade"]) {
		if name, _, _ := strings.Cut(offered, "/"); equalFold(name, "h2c") {
			continue
		}
		for _, a := range allowed {
			if equalFold(offered, a) {
				return strings.ToLower(a), true
			}
		}
	}
	return "", true
}
