package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kommander-go/kommander"
)

func TestRegistryRejectsFlagsThatCannotWork(t *testing.T) {
	short := filepath.Join(t.TempDir(), "short")
	if err := os.WriteFile(short, []byte("short\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"registry"}, "-listen is required"},
		{[]string{"registry", "-listen", "127.0.0.1:0", "-secret-file", "/nonexistent/secret"}, "-secret-file"},
		{[]string{"registry", "-listen", "127.0.0.1:0", "-secret-file", short}, "at least 16"},
		{[]string{"registry", "-listen", "127.0.0.1:0", "-ttl", "-1s"}, "must be positive"},
		{[]string{"registry", "-listen", "127.0.0.1:0", "-seeds", "10.0.0.1:7000"}, "seed"},
		{[]string{"registry", "-listen", "127.0.0.1:0", "extra"}, "unexpected argument"},
		{[]string{"registry", "-listen", "no-port"}, "-listen"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and %q", tc.args[1:], code, &errOut, tc.want)
		}
	}
}

// syncBuffer is a bytes.Buffer safe for a writer and a reader in different goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestRegistryCommandServesUntilCanceled(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("registry-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var errOut syncBuffer
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"registry", "-listen", "127.0.0.1:0", "-cluster", "c1", "-secret-file", secret}, &bytes.Buffer{}, &errOut)
	}()
	listening := regexp.MustCompile(`msg="registry running" listen=(\S+)`)
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	var addr string
	for addr == "" {
		if m := listening.FindStringSubmatch(errOut.String()); m != nil {
			addr = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("the registry did not start: %s", errOut.String())
		} else {
			<-tick.C
		}
	}
	d, err := kommander.RegistryDiscovery(kommander.RegistryOptions{Cluster: "c1", Secret: []byte("registry-secret-0123456789")}, "http://"+addr)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Announce(context.Background(), kommander.Announcement{ID: "n1", Addr: "10.0.0.1:7000"}); err != nil {
		t.Fatal(err)
	}
	peers, err := d.Peers(context.Background())
	if err != nil || len(peers) != 1 || peers[0] != (kommander.Peer{ID: "n1", Addr: "10.0.0.1:7000"}) {
		t.Fatalf("peers %v, %v", peers, err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	cancel()
	if code := <-done; code != 0 {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
}
