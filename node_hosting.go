package kommander

import (
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
)

// This file is which partitions a node hosts (keeps a replica of). With
// Config.ReplicationFactor a node hosts the partitions the placement gives it, those it
// has state for (it was added to them before a restart), and those a leader starts
// replicating to it: a replica created that way has no voters and waits to be added by a
// configuration entry, which is how a replica moves (add the new one, then remove the
// old). The other partitions it serves through a node that hosts one (node_proxy.go).

// ErrNotHosted is wrapped by the errors of calls that need a partition's replica on this
// node (Snapshot, for one) when the node hosts none. Replicate, ReplicateBatch,
// ReadBarrier, Leader and WaitForLeader never return it: they ask a node that hosts one.
var ErrNotHosted = errors.New("kommander: the partition has no replica on this node")

// hostedList is the list of hosted partitions, in partition order, as the goroutines
// other than the loop see it (Status, Metrics, the applier, a Stop): the loop replaces it
// whole when it starts hosting a partition.
type hostedList struct{ ps atomic.Pointer[[]*partition] }

func (h *hostedList) load() []*partition {
	if ps := h.ps.Load(); ps != nil {
		return *ps
	}
	return nil
}

// host adds p to the partitions the node hosts: n.parts for the loop, n.slots for lookups
// by number, n.hosted for everyone else. Before Start, or loop only.
func (n *Node) host(p *partition) {
	i, _ := slices.BinarySearchFunc(n.parts, p.id, func(q *partition, id uint32) int { return int(q.id) - int(id) })
	parts := slices.Insert(slices.Clip(n.parts), i, p) // a new array: readers keep theirs
	n.parts = parts
	n.hosted.ps.Store(&parts)
	n.slots[p.id].Store(p)
}

// hostsAtStart reports whether the node may host partition id when it starts: the
// placement gives it the partition, or it has state for it. It hosts it if, besides, the
// configuration in effect (the bootstrap one from the placement, or the latest in its log
// or snapshot) lists it: a replica that was moved away, or that was created and never
// added, is not hosted, and its calls go to the nodes that host the partition (the leader
// creates it again if it adds it).
func (n *Node) hostsAtStart(id uint32) (bool, error) {
	if n.place.Load().hosts(int(id), n.cfg.NodeID) {
		return true, nil
	}
	hs, err := n.storage.HardState(id)
	if err != nil {
		return false, fmt.Errorf("kommander: node %s: partition %d: read hard state: %w", n.cfg.NodeID, id, err)
	}
	return !hs.IsZero() || n.storage.LastIndex(id) > 0, nil
}

// hostOnDemand creates the replica of partition m.Partition, which this node does not
// host yet, for a message m of a leader that replicates to it, and returns it; it returns
// nil for any other message, which is dropped. Only a member's append or heartbeat
// creates a replica (a snapshot comes after an append was refused): anyone else's message, or a vote request, is no reason to
// keep a partition's state. The new replica has no voters: it never campaigns, and it
// takes the configuration the leader's log or snapshot brings. Loop only.
func (n *Node) hostOnDemand(m *Message) *partition {
	if m.Type != MsgAppend && m.Type != MsgHeartbeat {
		return nil
	}
	if _, member := n.addrs[m.From]; !member || m.From == n.cfg.NodeID || m.Term == 0 {
		return nil
	}
	p, err := n.newPartition(m.Partition, nil)
	if err != nil {
		n.log.Debug("cannot host a partition a leader replicates to", "partition", m.Partition, "from", m.From, "err", err)
		return nil
	}
	n.log.Info("hosting a partition a leader started replicating to this node", "partition", m.Partition, "leader", m.From, "term", m.Term)
	n.initMembers(p)
	n.host(p)
	n.publish(p)
	return p
}

// campaignFirst makes this node campaign every half election timeout in the fresh
// partitions whose first voter the placement makes it, until they have a leader: the
// other replicas' timers run out no earlier than one election timeout after they start,
// so it is usually first and wins, and the first leaders are spread as evenly as the
// placement spreads first voters. It is only a head start (a pre-vote changes no term):
// whoever wins, the partition leaves the list once it has a term. Loop only.
func (n *Node) campaignFirst() {
	every := uint64(max(1, n.elTicks/2))
	if len(n.firstCampaigns) == 0 || n.now%every != 0 || !n.inc.active {
		return
	}
	kept := n.firstCampaigns[:0]
	for _, id := range n.firstCampaigns {
		p := n.slots[id].Load()
		st := p.raft.status()
		if st.term != 0 || st.leader != "" {
			continue
		}
		if st.role == roleFollower || st.role == rolePreCandidate {
			n.activate(p)
			p.raft.campaign()
		}
		kept = append(kept, id)
	}
	n.firstCampaigns = kept
}

// planFirstCampaign records that this node should campaign first in partition p, when
// the placement makes it p's first voter and p never ran. Before Start.
func (n *Node) planFirstCampaign(p *partition) {
	if n.place.Load().partial() && n.place.Load().first(int(p.id)) == n.cfg.NodeID {
		if st := p.raft.status(); st.term == 0 && st.lastIndex == 0 {
			n.firstCampaigns = append(n.firstCampaigns, p.id)
		}
	}
}

// nodeMessage reports whether messages of type t are the node's own, not any partition's:
// they are taken whether or not the node hosts the partition they name.
func nodeMessage(t MessageType) bool {
	return t == MsgHello || t == MsgHelloResp || t == msgProxy || t == msgProxyResp || t == msgAddressBook ||
		t == msgLiveness || t == MsgBootstrap || t == MsgBootstrapResp
}
