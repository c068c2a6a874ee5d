package xconnect

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestHas(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want bool
	}{
		{"", false},
		{"http2xconnect=1", true},
		{"madvdontneed=1,http2xconnect=1", true},
		{"http2xconnect=1,http2xconnect=0", false},
		{"http2xconnect=0", false},
		{"xhttp2xconnect=1", false},
		{" http2xconnect=1 ", true},
	} {
		if got := Has(tc.in); got != tc.want {
			t.Errorf("Has(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
}

// TestEnsureRunsAgain runs this test binary as a child with GODEBUG unset:
// the child calls Ensure, which must re-exec it (same PID, same args) with
// extended CONNECT on, so that it reports Enabled and its HTTP/2 server
// advertises SETTINGS_ENABLE_CONNECT_PROTOCOL.
func TestEnsureRunsAgain(t *testing.T) {
	if os.Getenv("XCONNECT_CHILD") == "1" {
		pid := os.Getenv("XCONNECT_PID")
		if pid == "" {
			os.Setenv("XCONNECT_PID", strconv.Itoa(os.Getpid()))
		} else if pid != strconv.Itoa(os.Getpid()) {
			t.Fatalf("re-exec changed the PID: %s then %d", pid, os.Getpid())
		}
		if err := Ensure(); err != nil {
			t.Fatal(err)
		}
		// Only the re-executed process gets here.
		if !Enabled() || pid == "" {
			t.Fatalf("Ensure returned without re-exec: GODEBUG=%q", os.Getenv("GODEBUG"))
		}
		os.Stdout.WriteString("CHILD-OK " + os.Getenv("GODEBUG") + "\n")
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestEnsureRunsAgain$", "-test.v")
	cmd.Env = append(withoutGODEBUG(os.Environ()), "XCONNECT_CHILD=1", "GODEBUG=madvdontneed=1")
	done := make(chan struct{})
	var out []byte
	var err error
	go func() { out, err = cmd.CombinedOutput(); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		cmd.Process.Kill()
		t.Fatal("child did not finish in 60 s")
	}
	if err != nil || !strings.Contains(string(out), "CHILD-OK madvdontneed=1,http2xconnect=1") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
