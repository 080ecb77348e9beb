package kommander

import "sort"

// The leader balancer. A node that restarted, or joined, leads nothing: elections only
// move leadership away from nodes that fail. So every node looks, every balanceTimeouts
// election timeouts, at who leads the partitions it hosts, and when it leads at least two
// more than some live node that could take one of them over, it hands one partition to
// the live node that leads the fewest (a leadership transfer, thesis §3.10). One transfer
// per node per round keeps the cost low (a transfer pauses the partition's writes for a
// round trip or two) and lets the nodes' views settle between moves; it ends when every
// live node leads within one of every other, that is within one of its fair share.
//
// Only voters heard from within an election timeout (live) and whose log matches the
// leader's commit index (caught up) are targets, so that the balancer never hands a
// partition to a node that cannot take it at once.

// balanceTimeouts is how many election timeouts pass between two rounds of a node's
// balancer (one transfer at most per round).
const balanceTimeouts = 3

// partitionLeadView is one partition as the balancer sees it: its leader and, for the
// partitions this node leads, the voters that could take it over now.
type partitionLeadView struct {
	leader  string
	targets []string // live, caught-up voters other than the leader
}

// balanceMove is the balancer's policy: given who leads which partition and the live
// nodes, it returns a partition self leads and the node to hand it to, or ok false when
// self leads no more than one above any node that could take one of its partitions. The
// target is the one that leads the fewest (ties: the smallest ID); the partition the first
// that target can take.
func balanceMove(self string, live []string, parts []partitionLeadView) (partition int, to string, ok bool) {
	counts := make(map[string]int, len(live))
	for _, id := range live {
		counts[id] = 0
	}
	for _, pv := range parts {
		if _, isLive := counts[pv.leader]; isLive {
			counts[pv.leader]++
		}
	}
	mine, selfLive := counts[self]
	if !selfLive {
		return 0, "", false
	}
	best, bestCount := "", 0
	for i, pv := range parts {
		if pv.leader != self {
			continue
		}
		for _, t := range pv.targets {
			c, isLive := counts[t]
			if !isLive || t == self || mine-c < 2 {
				continue
			}
			if best == "" || c < bestCount || (c == bestCount && t < best) {
				best, bestCount, partition = t, c, i
			}
		}
	}
	return partition, best, best != ""
}

// balancer is the balancer's state. Loop only.
type balancer struct {
	next uint64 // tick of the next round
}

// balance runs a round of the balancer when one is due. It runs on every tick.
func (n *Node) balance() {
	if n.cfg.DisableLeaderBalancing || n.now < n.mem.bal.next {
		return
	}
	n.mem.bal.next = n.now + uint64(balanceTimeouts*n.elTicks) + uint64(n.rand.IntN(n.elTicks))
	if n.now < uint64(balanceTimeouts*n.elTicks) || len(n.mem.activeTr) > 0 {
		return // let the first elections settle; one transfer at a time
	}
	live := []string{n.cfg.NodeID}
	for id := range n.live.heard {
		if n.peerLive(id) {
			live = append(live, id)
		}
	}
	sort.Strings(live)
	views := make([]partitionLeadView, len(n.parts))
	for i, p := range n.parts {
		st := p.raft.status()
		views[i].leader = st.leader
		if st.role != roleLeader || p.raft.transferTarget() != "" {
			continue
		}
		for _, v := range p.raft.membership().Voters {
			if match, ok := p.raft.memberMatch(v); ok && v != n.cfg.NodeID && n.peerLive(v) && match >= st.commit {
				views[i].targets = append(views[i].targets, v)
			}
		}
	}
	i, to, ok := balanceMove(n.cfg.NodeID, live, views)
	if !ok {
		return
	}
	n.log.Debug("balancing leaders: handing over a partition", "partition", i, "to", to)
	r := &transferRequest{p: n.parts[i], to: to, memberCall: newMemberCall()}
	n.mem.activeTr = append(n.mem.activeTr, r)
	n.stepTransfers()
}
