package kommander

import (
	"fmt"
	"time"
)

// deliver is the transport's callback: it queues a received batch for the loop.
func (n *Node) deliver(batch []Message) {
	batch = n.takeSnapshotMessages(batch)
	if len(batch) == 0 {
		return
	}
	if !n.in.add(batch) {
		n.metrics.dropped.Add(uint64(len(batch)))
		return
	}
	n.metrics.received.Add(uint64(len(batch)))
}

// addTick records that one tick of time passed; the next pass ticks every partition.
func (n *Node) addTick() {
	if n.persist.inFlight() {
		n.persist.ticked = true
	}
	n.in.addTick()
}

// runLoop is the node's loop goroutine: it waits for messages, proposals and ticks, and
// runs passes while there is work, checking for ticks between passes so that a busy node
// still heartbeats.
func (n *Node) runLoop() {
	defer close(n.stop.loopDone)
	defer func() {
		// Never leave a Save running behind Stop: storage is closed next.
		if n.persist.inFlight() {
			<-n.persist.done
		}
		close(n.persist.stop)
	}()
	busy := false
	for {
		if busy {
			select {
			case <-n.stop.loop:
				return
			default:
			}
		} else {
			select {
			case <-n.stop.loop:
				return
			case <-n.in.wake:
			case err := <-n.persist.done:
				n.persist.saveReturned(err)
			}
			if !n.persist.inFlight() {
				n.yieldForBatch() // this pass may start a Save
			}
		}
		// While an fsync runs, one tick is taken and the next waits (the ticker goroutine
		// holds one, a time.Ticker one more): Raft time then moves with the disk, and a
		// FakeClock cannot run ahead of a slow Save. But never none: under steady load one
		// Save follows the next, and a loop that waited for a gap between them would never
		// tick, so an isolated leader would never notice it lost its quorum (S18).
		took := false
		if (!n.persist.inFlight() || !n.persist.ticked) && n.in.takeTick() {
			n.addTick()
			took = true
		}
		busy = n.runPass()
		if took {
			n.in.ackTick()
		}
	}
}

// runTicker is the goroutine that receives the ticker's ticks and hands them to the loop
// one at a time: the next is received only once the loop has taken and run the previous
// one. The loop thus never blocks on the timer channel itself, which costs the runtime a
// timer heap update and often a wake-up of the network poller each time.
func (n *Node) runTicker(ticker Ticker) {
	defer ticker.Stop()
	for {
		select {
		case <-n.stop.loop:
			return
		case <-ticker.C():
		}
		n.in.tickArrived()
		select {
		case <-n.stop.loop:
			return
		case <-n.in.tickAck:
		}
	}
}

// runPass is one turn of the loop; it reports whether there was work, so that the caller
// runs it again at once (the caller also wakes when a Save returns). If the previous
// batch's Save is still running, a pass only feeds Raft: Raft takes input while a
// raftReady is outstanding, and what comes in forms the next batch.
func (n *Node) runPass() bool {
	if n.failed.Load() != nil {
		return false
	}
	if n.boot != nil && !n.boot.settled() {
		return n.bootPass()
	}
	msgs, ticks, proposed := n.in.take()
	defer n.in.recycle(msgs) // after takeEarly, which reads their partitions
	n.proxy.sendAnswers()
	n.activateSignaled()
	n.stepSnapshots()
	n.stepAll(msgs)
	if n.persist.running {
		n.handOffCommittedDuringSave(msgs)
	}
	if n.failed.Load() != nil {
		return false
	}
	n.tickAll(ticks)
	if ticks > 0 {
		n.followView()
	}
	if proposed || ticks > 0 {
		for _, p := range n.active.list {
			n.proposeQueued(p)
		}
	}
	if ticks > 0 {
		n.expireWaiters()
		n.transfers.tick(n.now)
		n.proxy.tick(n.now)
		n.campaignFirst()
	}
	if proposed || ticks > 0 {
		for _, p := range n.active.list {
			n.askQueued(p)
		}
		n.runMembership(ticks > 0)
	}

	if n.persist.running {
		if !n.persist.poll() {
			// The fsync of the previous batch is still running: what arrived meanwhile
			// has been stepped into Raft and is saved with the next batch, but what may go
			// out before it is saved (a leader's appends of new proposals) goes now.
			n.takeEarly(msgs, proposed || ticks > 0)
			n.out.flush(n.transport) // and forwarded proposals
			return false
		}
		n.settlePersist() // its messages go out below, with this pass's
		if n.failed.Load() != nil {
			return false
		}
	}

	if !n.gatherReadies() {
		return false
	}
	if ticks > 0 {
		n.sweepActive()
	}
	if len(n.persist.readies) == 0 {
		if ticks > 0 {
			n.publishAll()
		}
		return n.out.flush(n.transport) // forwarded proposals
	}
	// The order of the three hand-offs is the order in which the goroutines they wake run
	// on this processor once the loop waits: the one woken last runs first, the others
	// queue in order. The Save goes last, since its fsync holds the processor until the
	// runtime takes it back (20µs or more); the transport's writer first, since the
	// followers' fsyncs wait for its appends; the applier in between.
	n.handOffCommitted()
	saving := n.persist.start()
	n.sendAppends() // with the previous batch's messages that waited for its fsync
	if !saving {
		n.finishPersist() // only commit indexes changed: nothing to wait for
	}
	return true
}

// stepAll steps received messages into their partitions' Raft groups.
func (n *Node) stepAll(msgs []Message) {
	for i := range msgs {
		m := &msgs[i]
		if int(m.Partition) >= len(n.slots) || m.To != n.cfg.NodeID {
			n.metrics.dropped.Add(1)
			continue
		}
		n.live.heardFrom(m.From, n.now)
		p := n.slots[m.Partition].Load()
		if p == nil && !nodeMessage(m.Type) {
			if p = n.hostOnDemand(m); p == nil {
				n.metrics.dropped.Add(1)
				continue
			}
		}
		if p != nil {
			n.activate(p)
		}
		switch m.Type {
		case msgLiveness:
			n.peerBooted(m.From, m.Context)
			continue
		case MsgHello:
			if err := n.inc.hello(m, &n.out); err != nil {
				n.failStop(fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, err), err)
				return
			}
			continue
		case MsgHelloResp:
			if err := n.inc.helloResp(m); err != nil {
				if n.joinRefused(err) {
					continue
				}
				n.failStop(fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, err), err)
				return
			}
			continue
		case MsgVote, MsgPreVote:
			if !n.inc.active {
				// A new data directory whose ID a majority has not accepted yet: an
				// earlier life may have voted in this term (S36).
				n.metrics.dropped.Add(1)
				continue
			}
		case msgProxy:
			n.proxy.serve(m)
			continue
		case msgProxyResp:
			n.proxy.answer(m)
			continue
		case MsgForward:
			if isConfForward(m) {
				n.receiveConfForward(p, m)
			} else {
				n.fwd.receive(p, m)
			}
			continue
		case MsgForwardRefused:
			if isConfForward(m) {
				n.confForwardRefused(p, m)
			} else {
				n.fwd.refused(p, m)
			}
			continue
		case msgAddressBook:
			n.receiveBook(m)
			continue
		case msgRemoved:
			n.removedNotice(p, m)
			continue
		case MsgBootstrap, MsgBootstrapResp:
			n.bootMessage(m)
			continue
		case msgSnapshot:
			// Chunks from the network never reach Raft: the node receives, checks and
			// stores a snapshot first, then steps in its description.
			n.metrics.dropped.Add(1)
			continue
		}
		if len(m.Entries) > 0 && m.Type == MsgAppend && p.backlogged() {
			// The state machine is far behind: take no more entries for now. The leader
			// resends unacknowledged appends.
			n.metrics.dropped.Add(1)
			continue
		}
		if err := p.raft.step(*m); err != nil {
			n.log.Debug("raft rejected a message", "partition", m.Partition, "type", m.Type, "from", m.From, "err", err)
		}
	}
}

// tickAll moves every partition's Raft time on by ticks.
func (n *Node) tickAll(ticks int) {
	var at time.Time
	if ticks > 0 && n.leaseTicks.at != nil {
		at = n.cfg.Clock.Now()
	}
	for t := 0; t < ticks; t++ {
		n.now++
		// Every tick of n.now has its time, passive or not: the lease measures ticks
		// against the clock, and a passive node leads nothing anyway.
		n.leaseTicks.tickedAt(n.now, at)
		n.inc.greet(n.now, &n.out)
		n.watchPeers()
		if !n.inc.active {
			continue // no election timer runs out: it must not campaign yet (S36)
		}
		// A partition outside the active set is quiesced: its tick would do nothing.
		for _, p := range n.active.list {
			if !p.mem.removed.Load() { // a removed member takes no more part
				p.raft.tick()
			}
		}
	}
}

// gatherReadies collects, into the next batch, the raftReady of every partition with
// work. It reports false when a partition's log cannot be read back: the node failed.
func (n *Node) gatherReadies() bool {
	ps := &n.persist
	ps.readies = ps.readies[:0]
	for _, p := range n.active.list {
		// A slow state machine holds back what Raft hands out, not the loop: committed
		// entries wait in the log (on disk, and in memory only up to Raft's bound), not in
		// the apply queue, also while a restarted node replays its log.
		p.raft.limitApply(p.applyRoom())
		if p.raft.hasReady() {
			rd := p.raft.ready()
			if (rd.InstallSnapshot != nil || len(rd.SendSnapshots) > 0) && !n.installReady(p, &rd) {
				return false
			}
			ps.readies = append(ps.readies, partitionReady{p: p, rd: rd})
			if p.releaseReads(rd.ReadStates) {
				n.in.markProposed() // the reads that waited for this answer go next
			}
		}
		if err := p.raft.readError(); err != nil {
			// S26: the log cannot be read back; nothing computed from it may go out.
			n.failStop(fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, err), err)
			return false
		}
	}
	return true
}

// sendAppends sends the batch's messages that need not wait for its Save, and whatever
// else the outbox holds. A leader's
// appends go out before its own fsync: the followers' writes then overlap with ours
// (thesis §10.2.1). The leader counts itself toward a quorum only after advance, once its
// Save returned.
func (n *Node) sendAppends() {
	for i := range n.persist.readies {
		n.out.addAll(n.persist.readies[i].rd.Messages)
	}
	n.out.flush(n.transport)
}

// takeEarly queues, while a Save runs, what partitions may send before their next
// raftReady is saved (raft.takeEarly): the partitions msgs were for and, when all is set
// (proposals came or time passed), every active one.
func (n *Node) takeEarly(msgs []Message, all bool) {
	for i := range msgs {
		if p := n.msgPartition(msgs, i); p != nil {
			n.early = p.raft.takeEarly(n.early)
		}
	}
	if all {
		for _, p := range n.active.list {
			n.early = p.raft.takeEarly(n.early)
		}
	}
	n.out.addAll(n.early)
	clear(n.early)
	n.early = n.early[:0]
}

// msgPartition returns the hosted partition msgs[i] is for, or nil when msgs[i-1] was for
// the same one (a pass's messages come in runs per partition) or it is not hosted.
func (n *Node) msgPartition(msgs []Message, i int) *partition {
	id := int(msgs[i].Partition)
	if (i > 0 && int(msgs[i-1].Partition) == id) || id >= len(n.slots) {
		return nil
	}
	return n.slots[id].Load()
}

// handOffCommittedDuringSave hands to the applier the entries that msgs, stepped while a
// Save runs, committed: an acknowledgement for the previous batch, which arrives while the
// leader saves the next one, need not wait for that Save (raft.takeCommitted).
func (n *Node) handOffCommittedDuringSave(msgs []Message) {
	handed := false
	for i := range msgs {
		p := n.msgPartition(msgs, i)
		if p == nil {
			continue
		}
		p.raft.limitApply(p.applyRoom())
		if ents := p.raft.takeCommitted(); len(ents) > 0 {
			n.handOff(p, ents)
			handed = true
		}
	}
	if handed {
		n.apply.signal()
	}
}

// handOffCommitted hands the batch's committed entries to the applier. They are durable on
// this node already (Raft hands out only those), so they go now, not after this batch's
// fsync.
func (n *Node) handOffCommitted() {
	handed := false
	for i := range n.persist.readies {
		r := &n.persist.readies[i]
		if len(r.rd.CommittedEntries) > 0 {
			n.handOff(r.p, r.rd.CommittedEntries)
			handed = true
		}
	}
	if handed {
		n.apply.signal()
	}
}

// handOff queues committed entries of p for the applier and acts on the committed
// configurations among them, whether a raftReady or a Save in flight
// (handOffCommittedDuringSave) gave them: the one place they leave the loop.
func (n *Node) handOff(p *partition, ents []Entry) {
	p.pushApply(ents)
	n.apply.enqueue(p)
	n.configsCommitted(p, ents)
}
