package main

import (
	"context"
	"debug/elf"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/wslb/wslb/internal/echo"
	"github.com/wslb/wslb/internal/loopback"
	"github.com/wslb/wslb/internal/syncbuf"
	"github.com/wslb/wslb/internal/tcptest"
	"github.com/wslb/wslb/internal/wait"
)

const dockerfilePath = "../../deploy/docker/Dockerfile"

// containerConfig is where the Dockerfile's CMD reads the config, the path
// deploy/kubernetes mounts its ConfigMap at.
const containerConfig = "/etc/wslb/config.yaml"

// nonroot is distroless's nonroot user and group, the image's USER.
const nonroot = 65532

// dockerfile is what TestDockerBinary reads from deploy/docker/Dockerfile.
type dockerfile struct {
	buildEnv   []string // NAME=VALUE before `go build` in the build stage's RUN
	buildArgs  []string // the words after `go build`, ARGs expanded
	finalFrom  string   // the last stage's image
	user       string   // the last stage's USER
	entrypoint []string
	cmd        []string
}

// TestDockerBinary builds wslb exactly as deploy/docker/Dockerfile does
// (docker itself cannot run here: there is no engine), checks the binary
// is static, and runs it as the image would: as distroless's nonroot user
// (when the test runs as root; else as the test's own non-root user), with
// the image's ENTRYPOINT and CMD, on a config at the path the image reads.
func TestDockerBinary(t *testing.T) {
	df := readDockerfile(t, dockerfilePath)
	if !strings.HasPrefix(df.finalFrom, "gcr.io/distroless/static") && df.finalFrom != "scratch" {
		t.Errorf("final stage FROM %s: want distroless/static or scratch (no libc, no shell)", df.finalFrom)
	}
	if df.user == "" || df.user == "0" || strings.HasPrefix(df.user, "root") || strings.HasPrefix(df.user, "0:") {
		t.Errorf("final stage USER %q: want a non-root user", df.user)
	}
	if !slices.Contains(df.buildEnv, "CGO_ENABLED=0") {
		t.Errorf("go build env %q lacks CGO_ENABLED=0", df.buildEnv)
	}
	for _, flag := range []string{"-trimpath", "-ldflags=-s -w"} {
		if !slices.ContainsFunc(df.buildArgs, func(a string) bool { return strings.HasPrefix(a, flag) }) {
			t.Errorf("go build %q lacks %s", df.buildArgs, flag)
		}
	}
	args := append(df.entrypoint[1:], df.cmd...)
	if i := slices.Index(args, containerConfig); i < 1 || args[i-1] != "-config" {
		t.Fatalf("ENTRYPOINT %q + CMD %q: want -config %s", df.entrypoint, df.cmd, containerConfig)
	}

	dir := sharedTempDir(t)
	exe := buildAsDockerfile(t, df, filepath.Join(dir, "wslb"))
	checkStatic(t, exe)

	backend := echo.TCP(t)
	admin, public := loopback.FreeAddr(t), loopback.FreeAddr(t)
	cfg := filepath.Join(dir, "config.yaml")
	writeFile(t, cfg, fmt.Sprintf(`admin: {listen: "%s"}
listeners:
  - {name: public, listen: "%s", mode: l4, pool: p}
pools:
  - {name: p, backends: [{address: "%s"}]}
`, admin, public, backend.Addr()))
	for i, a := range args {
		if a == containerConfig {
			args[i] = cfg
		}
	}

	cmd := exec.Command(exe, args...)
	cmd.Dir = dir
	logs := &syncbuf.Buffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if os.Geteuid() == 0 {
		cmd.SysProcAttr.Credential = &syscall.Credential{Uid: nonroot, Gid: nonroot}
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", exe, err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("wslb's output:\n%s", logs.String())
		}
	})

	if os.Geteuid() == 0 {
		if uid := processUID(t, cmd.Process.Pid); uid != fmt.Sprint(nonroot) {
			t.Errorf("wslb runs as uid %s, want %d", uid, nonroot)
		}
	}
	wait.For(t, "/healthz and /readyz to answer 200", func() bool {
		return httpStatus("http://"+admin+"/healthz") == http.StatusOK &&
			httpStatus("http://"+admin+"/readyz") == http.StatusOK
	})
	c := tcptest.Dial(t, public)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, 4)
	if _, err := c.Read(got); err != nil || string(got) != "ping" {
		t.Fatalf("echo through the l4 listener: %q, %v", got, err)
	}
	c.Close()

	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		exited <- err // for the cleanup
		if err != nil {
			t.Fatalf("wslb after SIGTERM: %v, want exit 0", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("wslb did not exit within 20 s of SIGTERM with no conn left")
	}
}

// readDockerfile reads the build stage's `go build` line and the final
// stage's image, USER, ENTRYPOINT and CMD. ARGs are expanded with their
// defaults; BuildKit's TARGETOS and TARGETARCH with this machine's.
func readDockerfile(t *testing.T, path string) dockerfile {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	vars := map[string]string{"TARGETOS": runtime.GOOS, "TARGETARCH": runtime.GOARCH}
	var df dockerfile
	for _, line := range dockerLines(string(data)) {
		instr, rest, _ := strings.Cut(line, " ")
		rest = strings.TrimSpace(rest)
		switch strings.ToUpper(instr) {
		case "FROM":
			words := strings.Fields(rest)
			for len(words) > 1 && strings.HasPrefix(words[0], "--") {
				words = words[1:]
			}
			df.finalFrom, df.user, df.entrypoint, df.cmd = words[0], "", nil, nil
		case "ARG":
			for _, w := range strings.Fields(rest) {
				if k, v, ok := strings.Cut(w, "="); ok {
					vars[k] = v
				}
			}
		case "RUN":
			words := shellWords(t, os.Expand(rest, func(k string) string { return vars[k] }))
			i := slices.Index(words, "go")
			if i < 0 || i+1 >= len(words) || words[i+1] != "build" {
				continue
			}
			for _, w := range words[:i] {
				if strings.Contains(w, "=") && !strings.HasPrefix(w, "--") {
					df.buildEnv = append(df.buildEnv, w)
				}
			}
			df.buildArgs = words[i+2:]
		case "USER":
			df.user = rest
		case "ENTRYPOINT":
			df.entrypoint = jsonArray(t, rest)
		case "CMD":
			df.cmd = jsonArray(t, rest)
		}
	}
	if df.buildArgs == nil || len(df.entrypoint) == 0 {
		t.Fatalf("%s: found no RUN ... go build line or no ENTRYPOINT", path)
	}
	return df
}

// dockerLines joins continued lines and drops comments and blank lines.
func dockerLines(text string) []string {
	var out []string
	var cur strings.Builder
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if strings.HasPrefix(l, "#") || (l == "" && cur.Len() == 0) {
			continue
		}
		if s, ok := strings.CutSuffix(l, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(l)
		out = append(out, cur.String())
		cur.Reset()
	}
	return out
}

// shellWords splits a RUN line as sh would, for the quoting a go build
// line uses: single and double quotes, no escapes, no expansions (ARGs are
// expanded before).
func shellWords(t *testing.T, s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	var quote rune
	for _, r := range s {
		switch {
		case quote != 0 && r == quote:
			quote = 0
		case quote != 0:
			w.WriteRune(r)
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		default:
			w.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		t.Fatalf("unterminated quote in %q", s)
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

// jsonArray reads an exec-form instruction's ["a", "b"]; the shell form
// needs a shell, which distroless has not.
func jsonArray(t *testing.T, s string) []string {
	t.Helper()
	s, ok := strings.CutPrefix(s, "[")
	s, ok2 := strings.CutSuffix(s, "]")
	if !ok || !ok2 {
		t.Fatalf("%q: want the exec form [\"...\"] (distroless has no shell)", s)
	}
	var out []string
	for _, f := range strings.Split(s, ",") {
		out = append(out, strings.Trim(strings.TrimSpace(f), `"`))
	}
	return out
}

// buildAsDockerfile runs the Dockerfile's go build, with its environment
// and flags, from the repository root, writing the binary to out.
func buildAsDockerfile(t *testing.T, df dockerfile, out string) string {
	t.Helper()
	args := slices.Clone(df.buildArgs)
	i := slices.Index(args, "-o")
	if i < 0 || i+1 >= len(args) {
		t.Fatalf("go build %q: no -o", args)
	}
	args[i+1] = out
	t.Logf("go build %s, with %s", strings.Join(args, " "), strings.Join(df.buildEnv, " "))
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBinary(), append([]string{"build"}, args...)...)
	cmd.Dir = "../.."
	cmd.Env = append(os.Environ(), df.buildEnv...)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s %q with %q: %v\n%s", goBinary(), cmd.Args[1:], df.buildEnv, err, b)
	}
	return out
}

// checkStatic fails unless exe needs no dynamic loader and no shared
// library, and carries no symbol table (-s).
func checkStatic(t *testing.T, exe string) {
	t.Helper()
	f, err := elf.Open(exe)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("%s has a %v program header: not static", exe, p.Type)
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("%s needs shared libraries %q (%v)", exe, libs, err)
	}
	if f.Section(".symtab") != nil {
		t.Errorf("%s has a symbol table: -ldflags -s was not applied", exe)
	}
}

// goBinary is the go command of the toolchain running the test.
func goBinary() string {
	if p := filepath.Join(runtime.GOROOT(), "bin", "go"); runtime.GOROOT() != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return "go"
}

// sharedTempDir is a temporary folder that another user may enter and read
// (t.TempDir is 0700), removed when the test ends.
func sharedTempDir(t *testing.T) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "wslb-deploy-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

func writeFile(t *testing.T, path, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// processUID is the real uid of process pid, from /proc.
func processUID(t *testing.T, pid int) string {
	t.Helper()
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(l, "Uid:"); ok {
			return strings.Fields(rest)[0]
		}
	}
	t.Fatalf("no Uid line in /proc/%d/status", pid)
	return ""
}

// httpStatus is the status of a GET of url, or 0 when it failed.
func httpStatus(url string) int {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0
	}
	resp.Body.Close()
	return resp.StatusCode
}
