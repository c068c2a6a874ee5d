package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAdminTokenAndUnix: Load resolves admin.token_file and a unix:
// admin.listen against the config file's folder and reads the token
// without its surrounding white space; a missing or blank token file and a
// unix: without a path are problems with their line.
func TestAdminTokenAndUnix(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	write("token", "\n  s3cret \t\n")
	write("blank", " \n\t\n")
	conf := func(admin string) string {
		return write("wslb.yaml", "admin:\n"+admin+strings.TrimPrefix(oneListener, "\n")+validPools)
	}

	c, err := Load(conf("  listen: unix:admin.sock\n  token_file: token\n"))
	if err != nil {
		t.Fatal(err)
	}
	if want := "unix:" + filepath.Join(dir, "admin.sock"); c.Admin.Listen != want {
		t.Errorf("admin.listen %q, want %q", c.Admin.Listen, want)
	}
	if c.Admin.Token != "s3cret" || c.Admin.TokenFile != filepath.Join(dir, "token") {
		t.Errorf("token %q from %q", c.Admin.Token, c.Admin.TokenFile)
	}
	if p, ok := UnixPath(c.Admin.Listen); !ok || p != filepath.Join(dir, "admin.sock") {
		t.Errorf("UnixPath = %q, %v", p, ok)
	}

	for _, tc := range []struct{ admin, want string }{
		{"  token_file: missing\n", ":2: admin.token_file: cannot read the token: open " + filepath.Join(dir, "missing")},
		{"  token_file: blank\n", ":2: admin.token_file: " + filepath.Join(dir, "blank") + " is empty: put the bearer token in it"},
		{"  listen: \"unix:\"\n", ":2: admin.listen: unix: needs a socket path, e.g. unix:/run/wslb/admin.sock"},
	} {
		path := conf(tc.admin)
		_, err := Load(path)
		if err == nil || !strings.Contains(err.Error(), path+tc.want) {
			t.Errorf("admin:\n%s: error %v, want %q", tc.admin, err, path+tc.want)
		}
	}

	// Parse reads no file: the token is left for Load.
	c, err = Parse([]byte("admin:\n  token_file: token\n"+strings.TrimPrefix(oneListener, "\n")+validPools), "x.yaml")
	if err != nil || c.Admin.Token != "" || c.Admin.TokenFile != "token" {
		t.Fatalf("Parse: %v, token %q, file %q", err, c.Admin.Token, c.Admin.TokenFile)
	}
}
