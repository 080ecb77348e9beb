package main

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

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

func TestRegistryCommandServesUntilCanceled(t *testing.T) {
	secret := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(secret, []byte("registry-secret-0123456789\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	logR, logW := io.Pipe()
	var logs strings.Builder // read only after the command returned
	done := make(chan int, 1)
	go func() {
		done <- run(ctx, []string{"registry", "-listen", "127.0.0.1:0", "-cluster", "c1", "-secret-file", secret}, &bytes.Buffer{}, logW)
		logW.Close()
	}()
	// The log says where the registry listens; the reader keeps draining it afterwards.
	listening := regexp.MustCompile(`msg="registry running" listen=(\S+)`)
	addrs := make(chan string, 1)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		sc := bufio.NewScanner(logR)
		for sc.Scan() {
			logs.WriteString(sc.Text() + "\n")
			if m := listening.FindStringSubmatch(sc.Text()); m != nil {
				addrs <- m[1]
			}
		}
		close(addrs)
	}()
	addr, ok := <-addrs
	if !ok {
		<-drained
		t.Fatalf("the registry did not start: %s", logs.String())
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
	code := <-done
	<-drained
	if code != 0 {
		t.Fatalf("exit %d: %s", code, logs.String())
	}
}
