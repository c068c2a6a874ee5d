package config

import (
	"reflect"
	"testing"
)

// TestListenList: listen takes one address or a list (nginx's several
// listen lines); a bad entry is one problem on its line, named by its index.
func TestListenList(t *testing.T) {
	c := mustParse(t, `
listeners:
  - name: a
    listen: ["127.0.0.1:0", "127.0.0.1:0", "[::1]:0", ":0"]
    mode: l4
    pool: ws
  - name: b
    listen:
      - 127.0.0.2:8080
      - '{{ GetAllInterfaces | include "name" "^lo$" | include "type" "IPv4" | attr "address" }}:8080'
    mode: l4
    pool: ws
  - name: c
    listen: 127.0.0.3:8080
    mode: l4
    pool: ws
`+validPools)
	for i, want := range []Addrs{
		{"127.0.0.1:0", "127.0.0.1:0", "[::1]:0", ":0"},
		{"127.0.0.2:8080", "127.0.0.1:8080"},
		{"127.0.0.3:8080"},
	} {
		if got := c.Listeners[i].Listen; !reflect.DeepEqual(got, want) {
			t.Errorf("listeners[%d].listen = %q, want %q", i, got, want)
		}
	}

	// A bad entry is named by its index; a single address by its key.
	expect(t, `
listeners:
  - name: a
    listen:
      - 127.0.0.1:8080
      - 127.0.0.1
      - localhost:80
      - ""
      - 127.0.0.1:8080
      - 127.0.0.01:8080
      - 127.0.0.1:08080
    mode: l4
    pool: ws
  - name: b
    listen: ["[::1]:9000", "[0::1]:9000"]
    mode: l4
    pool: ws
  - name: c
    listen: []
    mode: l4
    pool: ws
  - name: d
    listen: 127.0.0.1:8080
    mode: l4
    pool: ws
  - name: e
    listen: {addr: 1}
    mode: l4
    pool: ws
`+validPools,
		want{5, "listeners[0].listen[1]", `invalid address "127.0.0.1": use ip:port, :port or a go-sockaddr template`},
		want{6, "listeners[0].listen[2]", `host "localhost" must be an IP address`},
		want{7, "listeners[0].listen[3]", "empty address"},
		want{8, "listeners[0].listen[4]", `duplicate listen address "127.0.0.1:8080" (first on line 4)`},
		want{9, "listeners[0].listen[5]", `host "127.0.0.01" must be an IP address`},
		want{10, "listeners[0].listen[6]", `duplicate listen address "127.0.0.1:8080" (first on line 4)`},
		want{14, "listeners[1].listen[1]", `duplicate listen address "[::1]:9000" (first on line 14)`},
		want{18, "listeners[2].listen", "listen is required: use ip:port, :port, a go-sockaddr template, or a list of them"},
		want{22, "listeners[3].listen", `duplicate listen address "127.0.0.1:8080" (first on line 4)`},
		want{26, "listeners[4].listen", "want an address or a list of addresses, got a mapping"},
	)
}
