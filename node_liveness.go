package kommander

// liveness is the node's watch of its peers, which lets idle partitions quiesce
// (raft_quiesce.go) without losing failover: a quiesced partition has no election timer,
// so the node keeps one per peer instead of one per partition.
//
// Every heartbeat interval the node sends each peer one msgLiveness, whatever else it
// sends, and any message from a peer counts as hearing from it. A peer not heard from for
// an election timeout is suspected: every partition it leads here ends its lease, and a
// quiesced one wakes with its election timer run out and campaigns within one more
// election timeout, so that all the
// partitions of a dead node fail over within about two. A node that hears from fewer peers
// than a quorum needs wakes the quiesced partitions it leads, whose CheckQuorum then
// deposes them as it would have without quiescence (thesis §6.2). A msgLiveness carries
// the incarnation of its node, so that a peer that restarted within an election timeout
// is treated like one that fell silent: it leads nothing any more.
//
// Safety does not depend on any of it: a wrong suspicion costs an election at worst, and a
// missed one leaves a partition waiting until a message of it arrives. Loop only.
type liveness struct {
	heard      map[string]uint64 // peer -> node tick at which it was last heard from
	suspected  map[string]bool   // peers silent for an election timeout, whose partitions were woken
	boots      map[string]uint64 // peer -> the incarnation its last msgLiveness carried
	quorumLost bool              // too few peers heard from: the quiesced leaders were woken
	nextBeat   uint64            // node tick of the next msgLiveness round
	// lastFrom and lastAt spare stepAll a map write per message of a batch.
	lastFrom string
	lastAt   uint64
}

// heardFrom records that a message from peer arrived at node tick now.
func (lv *liveness) heardFrom(peer string, now uint64) {
	if peer == lv.lastFrom && now == lv.lastAt {
		return
	}
	if lv.heard == nil {
		lv.heard = make(map[string]uint64)
		lv.suspected = make(map[string]bool)
	}
	lv.heard[peer], lv.lastFrom, lv.lastAt = now, peer, now
}

// peerLive reports whether a message of node id arrived within the last election timeout
// (this node always is), as the node's liveness watch saw it (node_liveness.go).
func (n *Node) peerLive(id string) bool {
	if id == n.cfg.NodeID {
		return true
	}
	at, ok := n.live.heard[id]
	return ok && n.now-at <= uint64(n.elTicks)
}

// watchPeers runs on every node tick: it sends this interval's msgLiveness round, and
// wakes the quiesced partitions whose leader is suspected, or that this node leads while
// it hears from too few peers.
func (n *Node) watchPeers() {
	lv := &n.live
	peers := n.out.peers
	if len(peers) == 0 || n.cfg.DisableQuiescence {
		return
	}
	if n.now >= lv.nextBeat {
		lv.nextBeat = n.now + uint64(n.hbTicks)
		boot := idIncarnation(n.idSeq.Load())
		for _, id := range peers {
			n.out.add(Message{Type: msgLiveness, From: n.cfg.NodeID, To: id, Context: boot})
		}
	}
	alive := 1
	for _, id := range peers {
		at, ok := lv.heard[id]
		if !ok {
			// Not heard from since this node started: the timeout counts from now.
			lv.heardFrom(id, n.now)
			at = n.now
		}
		if n.now-at < uint64(n.elTicks) {
			alive++
			lv.suspected[id] = false
			continue
		}
		if !lv.suspected[id] {
			lv.suspected[id] = true
			n.log.Debug("peer silent for an election timeout: waking the partitions it leads", "peer", id)
			n.leaderGone(id)
		}
	}
	lost := alive < (len(peers)+1)/2+1
	if lost && !lv.quorumLost {
		for _, p := range n.parts {
			if p.raft.quiesced() && p.raft.role == roleLeader {
				p.raft.wake()
				n.activate(p)
			}
		}
	}
	lv.quorumLost = lost
}

// peerBooted takes the incarnation a peer's msgLiveness carries (random at each start of
// its node). A new one means the peer restarted: it leads nothing now, whatever the
// partitions here that it led believe, and waiting for it to fall silent would never end.
func (n *Node) peerBooted(peer string, boot uint64) {
	lv := &n.live
	if lv.boots == nil {
		lv.boots = make(map[string]uint64)
	}
	prev, known := lv.boots[peer]
	lv.boots[peer] = boot
	if known && prev != boot {
		n.log.Debug("peer restarted: waking the partitions it led", "peer", peer)
		n.leaderGone(peer)
	}
}

// leaderGone tells every partition here that follows peer that its leader is gone (silent
// for an election timeout, or restarted): their leases end, and one follower per
// partition campaigns first (raft.leaderSuspected).
func (n *Node) leaderGone(peer string) {
	for _, p := range n.parts {
		if p.raft.lead == peer && p.raft.role == roleFollower {
			p.raft.leaderSuspected(n.firstToCampaign(p, peer))
			n.activate(p)
		}
	}
}

// firstToCampaign reports whether this node is the one of partition p's voters, other than
// gone and the suspected ones, to campaign first: the same choice on every node (by the
// order of the voters' IDs), spread over the survivors by partition, so that the
// partitions of a dead node get new leaders evenly and without split votes.
func (n *Node) firstToCampaign(p *partition, gone string) bool {
	if !p.raft.tracker.self.voter {
		return false // it never campaigns
	}
	live, rank := 0, 0 // live voters, and those of them whose ID sorts before ours
	for _, pr := range p.raft.tracker.voterPrs() {
		if pr.id == gone || n.live.suspected[pr.id] {
			continue
		}
		live++
		if pr.id < n.cfg.NodeID {
			rank++
		}
	}
	return live == 0 || rank == int(p.id)%live
}
