package kommander

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"testing"
)

// snapKVSM is the node tests' kvSM with snapshots: the whole map of a partition, as JSON.
type snapKVSM struct{ *kvSM }

type kvSnapshot struct {
	Applied uint64
	KV      map[string]string
}

func (s snapKVSM) Snapshot(p int) (io.WriterTo, error) {
	s.mu.Lock()
	b, err := json.Marshal(kvSnapshot{Applied: s.applied[p], KV: s.kv[p]})
	s.mu.Unlock()
	return bytes.NewBuffer(b), err
}

func (s snapKVSM) Restore(p int, index uint64, r io.Reader) error {
	var snap kvSnapshot
	if err := json.NewDecoder(r).Decode(&snap); err != nil {
		return fmt.Errorf("decode the kv snapshot: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if snap.KV == nil {
		snap.KV = map[string]string{}
	}
	s.kv[p], s.applied[p] = snap.KV, index
	return nil
}

// useSnapshots gives every node of c a Snapshotter state machine and a snapshot store
// kept across restarts, with snapshots every `every` entries and `trailing` entries kept.
func (c *nodeCluster) useSnapshots(every, trailing int) []*SnapshotStore {
	stores := make([]*SnapshotStore, len(c.ids))
	for i := range stores {
		stores[i] = NewMemorySnapshotStore()
	}
	prev := c.cfg
	c.cfg = func(i int, cfg *Config) {
		if prev != nil {
			prev(i, cfg)
		}
		cfg.StateMachine = snapKVSM{c.sms[i]}
		if cfg.DataDir == "" {
			cfg.SnapshotStore = stores[i]
		}
		cfg.SnapshotEntries, cfg.SnapshotTrailingEntries = every, trailing
	}
	return stores
}

// writeBatches writes n puts of distinct keys to partition p through node i, in batches.
func (c *nodeCluster) writeBatches(i, p, n int, prefix string) {
	c.t.Helper()
	const batch = 500
	for done := 0; done < n; done += batch {
		cmds := make([]Command, 0, batch)
		for j := done; j < min(n, done+batch); j++ {
			cmds = append(cmds, Command{Type: "put", Data: put(fmt.Sprintf("%s%d", prefix, j), fmt.Sprint(j))})
		}
		if _, err := c.nodes[i].ReplicateBatch(ctxT(c.t), p, cmds); err != nil {
			c.t.Fatalf("write %d..: %v", done, err)
		}
	}
}

// waitCaughtUp waits, while the clock is pumped, until every running node applied
// partition p as far as node i has (no-op entries included, unlike waitApplied).
func (c *nodeCluster) waitCaughtUp(i, p int) {
	c.t.Helper()
	idx := c.nodes[i].Status().Partitions[p].Applied
	c.await(fmt.Sprintf("partition %d applied through %d everywhere", p, idx), func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		for _, n := range c.nodes {
			if n != nil && n.Status().Partitions[p].Applied < idx {
				return false
			}
		}
		return true
	})
}

// sameState checks that every running node's state machine holds the same map as node i's.
func (c *nodeCluster) sameState(i, p int) {
	c.t.Helper()
	c.sms[i].mu.Lock()
	want := maps.Clone(c.sms[i].kv[p])
	c.sms[i].mu.Unlock()
	for j, sm := range c.sms {
		sm.mu.Lock()
		same := maps.Equal(sm.kv[p], want)
		size := len(sm.kv[p])
		sm.mu.Unlock()
		if !same {
			c.t.Errorf("%s holds %d keys, unlike %s's %d", c.ids[j], size, c.ids[i], len(want))
		}
	}
}

// S20: a follower stopped while the leader writes, snapshots and compacts its log rejoins
// by snapshot, and its state then equals the leader's; the leader keeps replicating to it
// from the log afterwards.
func TestNodeFollowerRejoinsBySnapshotS20(t *testing.T) {
	const writes = 100000
	c := newNodeCluster(t, 3, 1, false)
	c.useSnapshots(5000, 1000)
	c.startAll()
	defer c.pump()()
	lead := c.leaders()[0]
	lag := (lead + 1) % 3
	c.stop(lag)
	c.writeBatches(lead, 0, writes, "k")
	st := c.stores[lead]
	if first := st.FirstIndex(0); first < writes/2 {
		t.Fatalf("leader's log starts at %d after %d writes: not compacted", first, writes)
	}
	c.start(lag)
	c.waitCaughtUp(lead, 0)
	c.sameState(lead, 0)
	if m := c.nodes[lag].Metrics(); m.SnapshotsInstalled == 0 {
		t.Fatalf("the follower caught up without a snapshot: %+v", m)
	}
	if m := c.nodes[lead].Metrics(); m.SnapshotsSent != 1 {
		t.Fatalf("the leader completed %d transfers, want 1 (no snapshot loop)", m.SnapshotsSent)
	}
	c.writeBatches(lead, 0, 10, "after")
	c.waitCaughtUp(lead, 0)
	c.sameState(lead, 0)
	c.checkSameLogs()
}

// Node.Snapshot takes a snapshot on demand; a restarted node comes back from it and the
// log after it, with the same state (S22).
func TestNodeSnapshotOnDemandAndRestartFromItS22(t *testing.T) {
	c := newNodeCluster(t, 3, 2, false)
	stores := c.useSnapshots(1<<30, 0)
	c.startAll()
	defer c.pump()()
	lead := c.leaders()[1]
	c.writeBatches(lead, 1, 1000, "a")
	idx, err := c.nodes[lead].Snapshot(context.Background(), 1)
	if err != nil || idx < 1000 {
		t.Fatalf("Snapshot = %d, %v", idx, err)
	}
	if refs, _ := stores[lead].list(1); len(refs) != 1 || refs[0].index != idx {
		t.Fatalf("snapshots in the store: %v", refs)
	}
	if _, err := c.nodes[lead].Snapshot(context.Background(), 0); err != nil {
		t.Fatalf("Snapshot of an empty partition: %v", err)
	}
	c.writeBatches(lead, 1, 100, "b")
	c.stopAll()
	for i := range c.sms {
		c.sms[i] = c.sms[i].restarted()
	}
	c.startAll()
	lead = c.leaders()[1]
	c.waitCaughtUp(lead, 1)
	if v, ok := c.sms[lead].get(1, "a999"); !ok || v != "999" {
		t.Fatalf("a999 = %q, %v after the restart", v, ok)
	}
	c.sameState(lead, 1)
}
