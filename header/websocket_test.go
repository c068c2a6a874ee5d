package header

import (
	"errors"
	"net/http"
	"strings"
	"testing"
)

// rfcKey and rfcAccept are the example of RFC 6455 §1.3.
const (
	rfcKey    = "dGhlIHNhbXBsZSBub25jZQ=="
	rfcAccept = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
)

func TestCheckWebSocketRequest(t *testing.T) {
	tests := []struct {
		name     string
		h        http.Header
		wantKey  string
		wantErr  error
		wantText string // in the error, to check it says what is wrong
	}{
		{"valid", http.Header{"Sec-Websocket-Key": {rfcKey}, "Sec-Websocket-Version": {"13"}}, rfcKey, nil, ""},
		{"valid, padded with spaces", http.Header{"Sec-Websocket-Key": {" " + rfcKey + "\t"}, "Sec-Websocket-Version": {" 13 "}}, rfcKey, nil, ""},
		{"missing key", http.Header{"Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "no Sec-WebSocket-Key"},
		{"two keys", http.Header{"Sec-Websocket-Key": {rfcKey, rfcKey}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "2 Sec-WebSocket-Key"},
		{"two keys in one line", http.Header{"Sec-Websocket-Key": {rfcKey + ", " + rfcKey}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"15 bytes", http.Header{"Sec-Websocket-Key": {"AAAAAAAAAAAAAAAAAAAA"}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"17 bytes", http.Header{"Sec-Websocket-Key": {"AAAAAAAAAAAAAAAAAAAAAAA="}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"unpadded", http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25jZQ"}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"URL alphabet", http.Header{"Sec-Websocket-Key": {"dGhlIHNhbXBsZSBub25j_-=="}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"not base64", http.Header{"Sec-Websocket-Key": {"not a base64 key at all!"}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"empty key", http.Header{"Sec-Websocket-Key": {""}, "Sec-Websocket-Version": {"13"}}, "", ErrBadKey, "not 16"},
		{"version 8", http.Header{"Sec-Websocket-Key": {rfcKey}, "Sec-Websocket-Version": {"8"}}, "", ErrBadVersion, `"8"`},
		{"version 8 wins over a bad key", http.Header{"Sec-Websocket-Key": {"x"}, "Sec-Websocket-Version": {"8"}}, "", ErrBadVersion, `"8"`},
		{"two versions", http.Header{"Sec-Websocket-Key": {rfcKey}, "Sec-Websocket-Version": {"13", "8"}}, "", ErrBadVersion, `"13, 8"`},
		{"version list", http.Header{"Sec-Websocket-Key": {rfcKey}, "Sec-Websocket-Version": {"13, 8"}}, "", ErrBadVersion, `"13, 8"`},
		{"empty version", http.Header{"Sec-Websocket-Key": {rfcKey}, "Sec-Websocket-Version": {""}}, "", ErrBadVersion, `""`},
		{"missing version", http.Header{"Sec-Websocket-Key": {rfcKey}}, "", ErrBadKey, "no Sec-WebSocket-Version"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			key, err := CheckWebSocketRequest(tt.h)
			if key != tt.wantKey || !errors.Is(err, tt.wantErr) || (err == nil) != (tt.wantErr == nil) {
				t.Fatalf("got (%q, %v); want (%q, %v)", key, err, tt.wantKey, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantText) {
				t.Errorf("error %q does not mention %q", err, tt.wantText)
			}
		})
	}
}

func TestAcceptKey(t *testing.T) {
	if got := AcceptKey(rfcKey); got != rfcAccept {
		t.Errorf("AcceptKey(%q) = %q; want %q", rfcKey, got, rfcAccept)
	}
}

func TestCheckSwitch(t *testing.T) {
	ok := func() http.Header {
		return http.Header{"Connection": {"Upgrade"}, "Upgrade": {"websocket"}, "Sec-Websocket-Accept": {rfcAccept}}
	}
	with := func(k string, v ...string) http.Header {
		h := ok()
		if v == nil {
			delete(h, k)
		} else {
			h[k] = v
		}
		return h
	}
	tests := []struct {
		name     string
		resp     http.Header
		token    string
		wantText string // "" means no error
	}{
		{"right", ok(), "websocket", ""},
		{"any case", http.Header{"Connection": {"keep-alive, UPGRADE"}, "Upgrade": {"WebSocket"}, "Sec-Websocket-Accept": {rfcAccept}}, "websocket", ""},
		{"wrong accept", with("Sec-Websocket-Accept", AcceptKey("x")), "websocket", "does not match"},
		{"accept in another case", with("Sec-Websocket-Accept", strings.ToLower(rfcAccept)), "websocket", "does not match"},
		{"missing accept", with("Sec-Websocket-Accept"), "websocket", "no Sec-WebSocket-Accept"},
		{"two accepts", with("Sec-Websocket-Accept", rfcAccept, rfcAccept), "websocket", "2 Sec-WebSocket-Accept"},
		{"missing Connection", with("Connection"), "websocket", "Connection: upgrade"},
		{"Connection without upgrade", with("Connection", "keep-alive"), "websocket", "Connection: upgrade"},
		{"missing Upgrade", with("Upgrade"), "websocket", "no Upgrade"},
		{"wrong Upgrade token", with("Upgrade", "h2c"), "websocket", `"h2c" when "websocket"`},
		{"wanted token not first", with("Upgrade", "foo, websocket"), "websocket", `"foo" when "websocket"`},
		{"other protocol needs no accept", http.Header{"Connection": {"upgrade"}, "Upgrade": {"Foo/2"}}, "foo/2", ""},
		{"no token requested", ok(), "", "no upgrade was requested"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckSwitch(tt.resp, tt.token, rfcKey)
			switch {
			case tt.wantText == "" && err != nil:
				t.Errorf("got %v; want nil", err)
			case tt.wantText != "" && (err == nil || !strings.Contains(err.Error(), tt.wantText)):
				t.Errorf("got %v; want an error mentioning %q", err, tt.wantText)
			}
		})
	}
}
