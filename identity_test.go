package kommander

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestIdentityIsWrittenOnceAndCheckedAfter: the first start stores the identity; a later
// start with the same values passes, with the members in any order; any other cluster name,
// node ID, partition count, member set or replication factor is refused with an error that
// names both (S34).
func TestIdentityIsWrittenOnceAndCheckedAfter(t *testing.T) {
	dir := t.TempDir()
	base := clusterIdentity{Cluster: "c", Node: "n3", Partitions: 8, Members: []string{"n3", "n1", "n2"}}
	if _, created, err := checkIdentity(dir, base); err != nil || !created {
		t.Fatalf("first start: created %v, %v", created, err)
	}
	same := base
	same.Members = []string{"n1", "n2", "n3"}
	if _, created, err := checkIdentity(dir, same); err != nil || created {
		t.Fatalf("same identity: created %v, %v", created, err)
	}
	for name, c := range map[string]struct {
		id    clusterIdentity
		names string
	}{
		"partitions": {clusterIdentity{Cluster: "c", Node: "n3", Partitions: 4, Members: base.Members}, "4 partitions"},
		"members":    {clusterIdentity{Cluster: "c", Node: "n3", Partitions: 8, Members: []string{"n3"}}, "members [n3]"},
		"cluster":    {clusterIdentity{Cluster: "d", Node: "n3", Partitions: 8, Members: base.Members}, `cluster "d"`},
		"node":       {clusterIdentity{Cluster: "c", Node: "n4", Partitions: 8, Members: []string{"n1", "n2", "n4"}}, `node "n4"`},
		"factor":     {clusterIdentity{Cluster: "c", Node: "n3", Partitions: 8, Members: base.Members, ReplicationFactor: 2}, "replication factor 2"},
	} {
		_, _, err := checkIdentity(dir, c.id)
		if !errors.Is(err, ErrIdentityMismatch) {
			t.Errorf("%s: %v, want ErrIdentityMismatch", name, err)
			continue
		}
		for _, want := range []string{c.names, "8 partitions", "members [n1 n2 n3]", dir} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("%s: error %q does not name %q", name, err, want)
			}
		}
	}
}

// TestDamagedIdentityIsAnError: a damaged identity file is never taken for a missing one
// (which would let any configuration in).
func TestDamagedIdentityIsAnError(t *testing.T) {
	dir := t.TempDir()
	for _, content := range []string{"", "{", `{"format":1}`, `{"format":9,"cluster":"c","node":"n1","partitions":1,"members":["n1"]}`, `{"format":1,"node":"n1","partitions":1,"members":["n1"],"extra":1}`} {
		if err := os.WriteFile(filepath.Join(dir, identityFileName), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		_, created, err := checkIdentity(dir, clusterIdentity{Cluster: "c", Node: "n1", Partitions: 1, Members: []string{"n1"}})
		if err == nil || created || !strings.Contains(err.Error(), identityFileName) {
			t.Errorf("content %q: created %v, err %v; want an error naming the file", content, created, err)
		}
	}
}
