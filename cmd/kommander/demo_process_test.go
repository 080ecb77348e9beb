//go:build unix

package main

import (
	"bufio"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestDemoInterruptedStillCleansUp: Ctrl-C during the demo stops the nodes and removes the
// temporary directory before the process exits.
func TestDemoInterruptedStillCleansUp(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a real process; skipped with -short")
	}
	cmd := exec.Command(kommanderBinary(t), "demo", "-duration", "30s", "-election-timeout", "400ms")
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
	}()
	dirRE := regexp.MustCompile(` in (\S+)$`)
	dir := ""
	deadline := time.After(60 * time.Second)
	for {
		var line string
		var ok bool
		select {
		case line, ok = <-lines:
		case <-deadline:
			t.Fatal("the demo did not start replicating within 60s")
		}
		if !ok {
			t.Fatal("the demo ended before replicating")
		}
		if m := dirRE.FindStringSubmatch(line); m != nil && dir == "" && strings.HasPrefix(line, "kommander demo") {
			dir = m[1]
		}
		if strings.HasPrefix(line, "Replicating") {
			break
		}
	}
	if dir == "" {
		t.Fatal("the demo did not name its directory")
	}
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	for range lines {
	}
	err = cmd.Wait()
	if ee, ok := err.(*exec.ExitError); !ok || ee.ExitCode() != 1 {
		t.Errorf("interrupted demo: %v, want exit status 1", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("the interrupted demo left %s behind (%v)", dir, err)
	}
}
