package main

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"
)

// TestDeployModule runs the tests of the deploy module (deploy/go.mod: the
// Kubernetes manifests decoded against the Kubernetes API types), which
// `go test ./...` of this module does not enter, so that the README's one
// test command covers them too. A clean clone downloads the module's
// dependencies from the module proxy the first time.
func TestDeployModule(t *testing.T) {
	limit := 5 * time.Minute
	if d, ok := t.Deadline(); ok && time.Until(d)-10*time.Second < limit {
		limit = time.Until(d) - 10*time.Second
	}
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, goBinary(), "test", "-count=1", "./...")
	cmd.Dir = "../../deploy"
	// The deploy module stands alone: no go.work may pull it into another.
	cmd.Env = append(os.Environ(), "GOWORK=off")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test ./... in deploy/: %v\n%s", err, out)
	}
	t.Logf("deploy/: %s", out)
}
