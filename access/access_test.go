package access

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func sample() *Entry {
	return &Entry{
		Kind: KindTunnel, Listener: "public", Client: netip.MustParseAddrPort("127.0.0.1:50000"),
		Pool: "ws", Backend: "127.0.0.1:9001", Route: "/websocket/", Method: "GET", Path: "/websocket/chat",
		Status: 101, Upgrade: true, Rx: 12, Tx: 34, Duration: 1500 * time.Millisecond, Reason: "client",
	}
}

func TestJSONLine(t *testing.T) {
	var buf bytes.Buffer
	l, err := Open("stdout", "json", &buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(sample())
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatalf("%v: %s", err, buf.String())
	}
	want := map[string]any{
		"msg": "tunnel", "listener": "public", "client": "127.0.0.1:50000", "pool": "ws",
		"backend": "127.0.0.1:9001", "route": "/websocket/", "method": "GET", "path": "/websocket/chat",
		"status": 101.0, "upgrade": true, "rx": 12.0, "tx": 34.0, "duration": 1.5, "reason": "client", "level": "INFO",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v (%T), want %v", k, got[k], got[k], v)
		}
	}
	if _, ok := got["time"]; !ok {
		t.Error("no time")
	}
	if _, ok := got["real_ip"]; ok {
		t.Error("real_ip present though not set")
	}
}

func TestTextLineLeavesOutEmptyFields(t *testing.T) {
	var buf bytes.Buffer
	l, err := Open("stdout", "text", &buf)
	if err != nil {
		t.Fatal(err)
	}
	l.Log(&Entry{Kind: KindConn, Listener: "tcp", Client: netip.MustParseAddrPort("127.0.0.1:1"), Reason: "no_backend"})
	line := buf.String()
	for _, want := range []string{"msg=conn", "listener=tcp", "status=0", "upgrade=false", "rx=0", "tx=0", "reason=no_backend"} {
		if !strings.Contains(line, want) {
			t.Errorf("line lacks %q: %s", want, line)
		}
	}
	for _, absent := range []string{"backend=", "method=", "path=", "route="} {
		if strings.Contains(line, absent) {
			t.Errorf("line has empty %q: %s", absent, line)
		}
	}
}

func TestOffIsNil(t *testing.T) {
	l, err := Open("off", "text", nil)
	if err != nil || l != nil {
		t.Fatalf("Open(off) = %v, %v; want nil, nil", l, err)
	}
	// A nil Logger is usable: the proxies call it unconditionally.
	l.Log(sample())
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
}

func TestBadFormatAndPath(t *testing.T) {
	if _, err := Open("stdout", "xml", &bytes.Buffer{}); err == nil {
		t.Error("format xml accepted")
	}
	if _, err := Open(filepath.Join(t.TempDir(), "missing", "a.log"), "text", nil); err == nil {
		t.Error("a file in a missing folder accepted")
	}
}

// TestFileReopen is logrotate's dance: move the file away, signal, and the
// next lines go to a new file under the old name while none are lost.
func TestFileReopen(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "access.log")
	os.WriteFile(path, []byte("kept\n"), 0o644)
	l, err := Open(path, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	l.Log(sample())
	rotated := path + ".1"
	if err := os.Rename(path, rotated); err != nil {
		t.Fatal(err)
	}
	l.Log(sample()) // still to the moved file, as with nginx until the signal
	if err := l.Reopen(); err != nil {
		t.Fatal(err)
	}
	l.Log(sample())
	if n := lines(t, rotated); n != 3 {
		t.Errorf("rotated file has %d lines, want 3 (one kept, appended to)", n)
	}
	if n := lines(t, path); n != 1 {
		t.Errorf("new file has %d lines, want 1", n)
	}
}

func lines(t *testing.T, path string) int {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	n := 0
	for sc := bufio.NewScanner(f); sc.Scan(); {
		n++
	}
	return n
}
