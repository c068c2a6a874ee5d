package config

import (
	"os"
	"strings"
)

// admin checks the admin listener's settings. With files, a unix socket's
// path and the token file are resolved against dir, and the token is read:
// a token file that cannot be read, or holds nothing but white space, would
// otherwise leave the write API either shut or open by surprise.
func (v *checker) admin(a *Admin, withFiles bool, dir string) {
	if path, ok := UnixPath(a.Listen); ok {
		if path == "" {
			v.add("admin.listen", "unix: needs a socket path, e.g. unix:/run/wslb/admin.sock")
		} else if withFiles {
			a.Listen = UnixPrefix + resolve(dir, path)
		}
	} else if a.Listen != "" { // empty disables the admin listener
		v.listen("admin.listen", &a.Listen)
	}
	if a.TokenFile == "" || !withFiles {
		return
	}
	a.TokenFile = resolve(dir, a.TokenFile)
	data, err := os.ReadFile(a.TokenFile)
	if err != nil {
		v.add("admin.token_file", "cannot read the token: %v", err)
		return
	}
	a.Token = strings.TrimSpace(string(data))
	if a.Token == "" {
		v.add("admin.token_file", "%s is empty: put the bearer token in it, or set token_file to \"\" for no token", a.TokenFile)
	}
}

// UnixPrefix marks an admin.listen that is a unix socket path.
const UnixPrefix = "unix:"

// UnixPath is the socket path of a unix:PATH listen address, and whether
// it is one.
func UnixPath(listen string) (string, bool) {
	return strings.CutPrefix(listen, UnixPrefix)
}
