package kommander

import "testing"

// TestOnlyALeaderReplicatingCreatesAReplica: a node keeps no state for a partition it does
// not host on the word of a non-member, a vote request, a message without a term or a
// partition number out of range; only a member leader's append or heartbeat creates one.
func TestOnlyALeaderReplicatingCreatesAReplica(t *testing.T) {
	c, pl := runningPlacedCluster(t, 3, 3, 1)
	x := c.index(pl.first(1))
	n := c.nodes[x]
	p := uint32(0)
	if pl.hosts(0, c.ids[x]) {
		p = 2
	}
	lead := pl.first(int(p))
	before := n.Metrics().MessagesDropped
	n.deliver([]Message{
		{Type: MsgVote, Partition: p, From: lead, To: n.ID(), Term: 5},
		{Type: MsgPreVote, Partition: p, From: lead, To: n.ID(), Term: 5},
		{Type: MsgHeartbeat, Partition: p, From: "stranger", To: n.ID(), Term: 5},
		{Type: MsgAppend, Partition: p, From: lead, To: n.ID(), Term: 0},
		{Type: MsgForward, Partition: p, From: lead, To: n.ID(), Term: 5, Entries: []Entry{{ID: 1}}},
		{Type: MsgHeartbeat, Partition: 3, From: lead, To: n.ID(), Term: 5},
		{Type: MsgHeartbeat, Partition: 1 << 20, From: lead, To: n.ID(), Term: 5},
	})
	c.waitFor("the messages are dropped", 50, func() bool { return n.Metrics().MessagesDropped >= before+7 })
	if n.slots[p].Load() != nil || len(n.Status().Partitions) != 1 {
		t.Fatalf("%s hosts %+v after messages that create no replica", n.ID(), n.Status().Partitions)
	}
}

// TestLeaderReplicatingCreatesAReplicaThatWaitsToBeAdded: a member leader's heartbeat
// for a partition a node does not host creates the replica, with no voters: it takes the
// leader's term and never campaigns; after a restart the node hosts it again, because it
// has state for it.
func TestLeaderReplicatingCreatesAReplicaThatWaitsToBeAdded(t *testing.T) {
	c, pl := runningPlacedCluster(t, 4, 4, 3)
	p, x := -1, -1
	for q := 0; q < 4 && p < 0; q++ {
		for i, id := range c.ids {
			if !pl.hosts(q, id) {
				p, x = q, i
				break
			}
		}
	}
	n := c.nodes[x]
	lead := c.nodes[c.index(pl.first(p))]
	term := lead.Status().Partitions[0].Term
	for _, ps := range lead.Status().Partitions {
		if ps.Partition == p {
			term = ps.Term
		}
	}
	n.deliver([]Message{{Type: MsgHeartbeat, Partition: uint32(p), From: lead.ID(), To: n.ID(), Term: term}})
	c.waitFor("the replica is created", 50, func() bool { return n.slots[p].Load() != nil })
	for k := 0; k < 5*n.elTicks; k++ {
		c.clock.Advance(c.tick)
	}
	hosted := func() PartitionStatus {
		for _, ps := range n.Status().Partitions {
			if ps.Partition == p {
				return ps
			}
		}
		t.Fatalf("%s does not host partition %d: %+v", n.ID(), p, n.Status().Partitions)
		return PartitionStatus{}
	}
	if st := hosted(); st.Role != "follower" || st.Term != term {
		t.Fatalf("the created replica campaigned or moved its term: %+v (leader's term %d)", st, term)
	}
	c.stop(x)
	c.sms[x] = c.sms[x].restarted()
	c.start(x)
	n = c.nodes[x]
	hosted()
}
