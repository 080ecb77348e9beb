package kommander

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// TestAddressBookTakesOnlyNewerRecords: records arrive in any order and every node ends
// with the newest; a removed member's new address is recorded but does not admit it.
func TestAddressBookTakesOnlyNewerRecords(t *testing.T) {
	var m metrics
	n := &Node{cfg: Config{NodeID: "a"}, addrs: map[string]string{"a": "a:1", "b": "b:1"}, out: newOutbox("a", []string{"a", "b"}, &m)}
	n.initBook(nil)
	rec := func(id, addr string, ver uint64) *Message {
		return &Message{Type: msgAddressBook, From: "b", To: "a", Entries: []Entry{{Type: id, Data: []byte(addr), Index: ver}}}
	}
	n.receiveBook(rec("c", "c:2", 2))
	n.receiveBook(rec("c", "c:1", 1)) // older, arriving late
	if n.addrs["c"] != "c:2" || !slices.Contains(n.out.peers, "c") {
		t.Fatalf("addrs %v, outbox peers %v: want c at c:2", n.addrs, n.out.peers)
	}
	n.retirePeer("c")
	n.receiveBook(rec("c", "c:3", 3))
	if n.addrs["c"] != "c:3" || slices.Contains(n.out.peers, "c") {
		t.Fatalf("addrs %v, outbox peers %v: want c's address recorded and c not admitted", n.addrs, n.out.peers)
	}
	n.receiveBook(rec("a", "elsewhere", 9)) // nobody tells a node its own address
	if n.addrs["a"] != "a:1" {
		t.Fatalf("a's own address changed to %q", n.addrs["a"])
	}
	n.setAddr("c", "c:4") // a change made here outranks everything seen
	if r := n.book.records["c"]; r.Ver != 4 || n.addrs["c"] != "c:4" {
		t.Fatalf("record %+v, addrs %v: want c:4 at version 4", r, n.addrs)
	}
}

// TestAddressBookReachesEveryNodeAndSurvivesARestart: an address set on one node is
// passed to the others, kept in their data directories, and in effect again when they
// restart with their original flags.
func TestAddressBookReachesEveryNodeAndSurvivesARestart(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.useWAL()
	c.startAll()
	c.leaders()
	c.nodes[0].SetPeerAddr("n9", "n9")
	for i := 1; i < 3; i++ {
		c.waitFor("n9's address recorded on "+c.ids[i], 100, func() bool {
			return readIdentity(t, c.dataDirs[i]).Book["n9"].Addr == "n9"
		})
	}
	c.stop(1)
	n, err := NewNode(c.config(1))
	if err != nil {
		t.Fatalf("NewNode after restart: %v", err)
	}
	defer n.Stop(ctxT(t))
	// n9 is no member: its address is known, and it is not talked to.
	if n.addrs["n9"] != "n9" || slices.Contains(n.out.peers, "n9") || !slices.Equal(n.out.peers, []string{"n1", "n3"}) {
		t.Fatalf("after a restart: addrs %v, outbox peers %v; want n9's address and peers n1 n3", n.addrs, n.out.peers)
	}
}

// TestRestartAfterAMembershipChangeIsNotAMismatch: once the membership changed, the
// configuration is in the log, and a restart with the original flags (or with flags that
// list the new members) is no identity mismatch; the other values are still checked.
func TestRestartAfterAMembershipChangeIsNotAMismatch(t *testing.T) {
	dir := t.TempDir()
	base := clusterIdentity{Cluster: "c", Node: "n1", Partitions: 8, Members: []string{"n1", "n2", "n3"}}
	if _, _, err := checkIdentity(dir, base); err != nil {
		t.Fatal(err)
	}
	grown := base
	grown.Members = []string{"n1", "n2", "n3", "n4", "n5"}
	if _, _, err := checkIdentity(dir, grown); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("other members before any change: %v, want ErrIdentityMismatch", err)
	}
	var inc incarnations
	have, _, _ := checkIdentity(dir, base)
	inc.init("n1", dir, have, false, base.Members, 1)
	if err := inc.reconfigured(); err != nil {
		t.Fatal(err)
	}
	for _, want := range []clusterIdentity{base, grown} {
		if _, _, err := checkIdentity(dir, want); err != nil {
			t.Fatalf("members %v after a change: %v", want.Members, err)
		}
	}
	other := grown
	other.Partitions = 4
	if _, _, err := checkIdentity(dir, other); !errors.Is(err, ErrIdentityMismatch) {
		t.Fatalf("other partition count after a change: %v, want ErrIdentityMismatch", err)
	}
}

func readIdentity(t *testing.T, dir string) clusterIdentity {
	t.Helper()
	var id clusterIdentity
	b, err := os.ReadFile(filepath.Join(dir, identityFileName))
	if err == nil {
		err = json.Unmarshal(b, &id)
	}
	if err != nil {
		t.Fatalf("read the identity in %s: %v", dir, err)
	}
	return id
}
