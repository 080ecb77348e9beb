//go:build unix

package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

// TestNodeProcessReplacesAMemberThroughTheAdminAPI (S27) with real processes: a fourth
// node joins (-join) and is added through the admin API of a member while writers write;
// then an original node hands its leaderships over (POST /admin/transfer), is killed and
// removed; the new node ends with every acknowledged write in its own state, and every
// member agrees on the new configuration.
func TestNodeProcessReplacesAMemberThroughTheAdminAPI(t *testing.T) {
	if testing.Short() {
		t.Skip("starts real processes; skipped with -short")
	}
	c := startProcCluster(t, 3, 2, processFlags...)
	n4 := c.addNode("n4", filepath.Join(t.TempDir(), "n4"), "", "-join")
	c.nodes[n4].peers = c.peers + ",n4=" + c.nodes[n4].raft
	defer c.dropNode(n4)
	w := c.startWriters("member", 3) // through n1, n2 and n3
	defer w.end()
	w.grow(100, "writes are acknowledged before the new node joins")

	c.start(n4)
	body := fmt.Sprintf(`{"id":"n4","addr":%q}`, c.nodes[n4].raft)
	c.expect(1, "POST", "/admin/members", []byte(body), http.StatusOK)
	c.eventually(60*time.Second, "n4 a voter on every node", func() bool {
		return everyNodeSees(c, []int{0, 1, 2, n4}, []string{"n1", "n2", "n3", "n4"})
	})
	w.grow(50, "writes are acknowledged with four voters")

	// n1 hands every partition it leads over before it goes.
	r := c.expect(0, "POST", "/admin/transfer", nil, http.StatusOK)
	var moved struct {
		Partitions []transferResult `json:"partitions"`
	}
	if err := json.Unmarshal(r.body, &moved); err != nil {
		t.Fatalf("transfer answer %s: %v", r, err)
	}
	for _, p := range moved.Partitions {
		if p.Error != "" || p.Leader == "n1" {
			t.Fatalf("partition %d after the transfer: leader %q, error %q", p.Partition, p.Leader, p.Error)
		}
	}
	c.kill(0)
	c.expect(2, "DELETE", "/admin/members/n1", nil, http.StatusOK)
	c.eventually(60*time.Second, "n1 removed on every live node", func() bool {
		return everyNodeSees(c, []int{1, 2, n4}, []string{"n2", "n3", "n4"})
	})
	w.grow(50, "writes are acknowledged after n1 was removed")
	w.end()

	keys := w.acked.snapshot()
	c.waitHolds(n4, keys)
	t.Logf("n4 holds all %d acknowledged writes", len(keys))
}

// everyNodeSees reports whether every node in on lists voters (sorted) and no learners in
// every partition (GET /admin/members).
func everyNodeSees(c *procCluster, on []int, voters []string) bool {
	for _, i := range on {
		r, err := c.do(i, "GET", "/admin/members", nil)
		if err != nil || r.code != http.StatusOK {
			return false
		}
		var got struct {
			Partitions []partitionMembers `json:"partitions"`
		}
		if json.Unmarshal(r.body, &got) != nil || len(got.Partitions) != c.parts {
			return false
		}
		for _, p := range got.Partitions {
			v := slices.Clone(p.Voters)
			slices.Sort(v)
			if !slices.Equal(v, voters) || len(p.Learners) > 0 {
				return false
			}
		}
	}
	return true
}
