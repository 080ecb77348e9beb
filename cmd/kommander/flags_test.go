package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func TestNodeRejectsFlagsThatCannotWork(t *testing.T) {
	base := []string{"node", "-id", "n1", "-raft", "127.0.0.1:0", "-http", "127.0.0.1:0", "-data", t.TempDir(), "-peers", "n1=127.0.0.1:1"}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"node"}, "is required"},
		{append(base[:len(base):len(base)], "-transport", "udp"), "want tcp or http"},
		{append(base[:len(base):len(base)], "-tls-cert", "c.pem"), "go together"},
		{append(base[:len(base):len(base)], "-partitions", "0"), "at least 1"},
		{append(base[:len(base):len(base)], "-log-level", "loud"), "-log-level"},
		{append(base[:len(base):len(base)], "-secret-file", "/nonexistent/secret"), "-secret-file"},
		{append(base[:len(base):len(base)], "extra"), "unexpected argument"},
		{[]string{"node", "-id", "n1", "-raft", "127.0.0.1:0", "-http", "127.0.0.1:0", "-data", t.TempDir(), "-peers", "n1"}, "id=addr"},
		{append(base[:len(base):len(base)], "-discovery", "dns"), "want static, registry or multicast"},
		{append(base[:len(base):len(base)], "-bootstrap-expect", "3"), "-bootstrap-expect is for -discovery registry or multicast"},
		{append(base[:len(base):len(base)], "-registry", "http://r:1"), "-registry is for -discovery registry"},
		{append(base[:len(base):len(base)], "-discovery", "registry", "-bootstrap-expect", "3", "-registry", "http://r:1"), "-peers is for -discovery static"},
		{append(base[:len(base)-2:len(base)-2], "-discovery", "registry", "-bootstrap-expect", "3"), "needs -registry"},
		{append(base[:len(base)-2:len(base)-2], "-discovery", "multicast"), "needs -bootstrap-expect"},
		{append(base[:len(base)-2:len(base)-2], "-discovery", "multicast", "-bootstrap-expect", "3", "-seeds", "http://r:1"), "-seeds is for -discovery registry"},
		{base[:len(base)-2], "-peers is required"},
		{append(base[:len(base)-2:len(base)-2], "-discovery", "multicast", "-bootstrap-expect", "3", "-multicast-group", "10.0.0.1:7"), "not an IPv4 multicast address"},
		{append(base[:len(base)-2:len(base)-2], "-discovery", "registry", "-bootstrap-expect", "3", "-registry", "ftp://r"), "-registry"},
		{[]string{"node", "-id", "n1", "-raft", "0.0.0.0:0", "-http", "127.0.0.1:0", "-data", t.TempDir(), "-discovery", "multicast", "-bootstrap-expect", "3"}, "give a host they can reach"},
	} {
		var out, errOut bytes.Buffer
		if code := run(context.Background(), tc.args, &out, &errOut); code != 1 || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%q: exit %d, stderr %q; want exit 1 and %q", tc.args[1:], code, &errOut, tc.want)
		}
	}
}

func TestUnknownCommandPrintsUsage(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"frob"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), "usage: kommander") {
		t.Fatalf("exit %d, stderr %q", code, &errOut)
	}
	if code := run(context.Background(), nil, &out, &errOut); code != 2 {
		t.Fatalf("no command: exit %d", code)
	}
}
