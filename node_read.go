package kommander

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"
)

// This file is the node's side of linearizable reads (raft_read.go is the core's): the
// ReadBarrier calls waiting in each partition, their hand-off to Raft, their retries when
// a request or its answer is lost, and their release once the state machine has applied
// up to their read index.

// ReadBarrier returns nil once reading this node's state machine observes every write
// acknowledged before the call began: the leader confirms with a round of heartbeats that
// it still leads (or, on a follower, is asked for its read index), and the call waits
// until this node has applied up to that index. It writes nothing to the log and costs no
// fsync; calls that arrive together share one round.
//
// A read never partially happens: on an error nothing was promised and the caller may
// retry. errors.Is(err, ErrNotLeader) means no leader confirmed the read in time (none was
// known, or leadership changed under it); a caller whose ctx ends gets an error wrapping
// ctx's error; a stopped node returns ErrStopped.
//
// On a node that hosts no replica of the partition (see Config.ReplicationFactor) the
// barrier runs on a node that hosts one, and returns once that node's state machine
// observes every acknowledged write: this node has no state of the partition to read, so
// a linearizable read there is a read command sent with Replicate (whose Result.Value
// comes back), or a read served by the hosting node.
func (n *Node) ReadBarrier(ctx context.Context, partition int) error {
	return n.readBarrier(ctx, partition, false)
}

// ReadBarrierLease is ReadBarrier, except that on the leader, while its lease holds, it is
// served without a round of heartbeats. The lease rests on bounded clock drift (see
// Config.LeaseReads, which must be set); on a follower it is ReadBarrier.
func (n *Node) ReadBarrierLease(ctx context.Context, partition int) error {
	if !n.cfg.LeaseReads {
		return fmt.Errorf("kommander: partition %d: lease reads are off (Config.LeaseReads)", partition)
	}
	return n.readBarrier(ctx, partition, true)
}

func (n *Node) readBarrier(ctx context.Context, partition int, lease bool) error {
	rd, err := n.submitRead(partition, lease)
	if errors.Is(err, ErrNotHosted) {
		return n.proxy.read(ctx, partition, lease)
	}
	if err != nil {
		return err
	}
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
	}
	p, _ := n.partition(partition)
	p.mu.Lock()
	p.reads.finish(rd, fmt.Errorf("kommander: partition %d: read abandoned: %w", p.id, ctx.Err()))
	p.mu.Unlock()
	return rd.err
}

// submitRead queues a read for the loop; its done closes once it is answered.
func (n *Node) submitRead(partition int, lease bool) (*readWait, error) {
	p, err := n.partition(partition)
	if err != nil {
		return nil, err
	}
	if err := n.writable(); err != nil {
		return nil, err
	}
	rd := &readWait{lease: lease, done: make(chan struct{})}
	p.mu.Lock()
	err = n.writable() // again under mu: failAll answers what is queued after the node stops
	if err == nil {
		p.reads.queue = append(p.reads.queue, rd)
		p.reads.open.Add(1)
	}
	p.mu.Unlock()
	if err != nil {
		return nil, err
	}
	n.metrics.reads.Add(1)
	n.in.markProposed()
	return rd, nil
}

// readWait is one ReadBarrier call in flight. Guarded by its partition's mu.
type readWait struct {
	lease bool
	stage readStage
	req   uint64 // the ID of the request it rides on, once readAsked
	// giveUp is the node tick after which the read fails with ErrNotLeader (0: not set yet).
	giveUp uint64
	err    error
	done   chan struct{}
	// onDone, when set, is called once the read is answered, under the partition's mu: a
	// read run for another node answers it from there (node_proxy.go).
	onDone func()
}

// readBatch is one request to Raft (Message.Context of MsgReadIndex) and the reads that
// ride on it: those a pass found queued share it, so that a follower sends one request per
// pass, not one per read.
type readBatch struct {
	reads []*readWait
	// retry is the node tick at which an unanswered request is asked again.
	retry   uint64
	index   uint64 // the read index, once indexed
	indexed bool
}

// readStage says where a read is.
type readStage uint8

const (
	readQueued  readStage = iota // waiting for the loop to hand it to Raft
	readAsked                    // handed to Raft (on a follower: asked of the leader)
	readIndexed                  // has its read index; waits for the apply
	readDone                     // answered
)

// partitionReads are a partition's reads in flight, guarded by its mu. queue holds the
// queued ones; all the others, by the request they ride on. open counts the unanswered
// ones, so that a loop pass skips the lock of a partition without reads.
type partitionReads struct {
	queue []*readWait
	all   map[uint64]*readBatch
	open  atomic.Int64
}

// answer closes rd with err. The caller holds mu and has taken rd off queue and all.
func (rs *partitionReads) answer(rd *readWait, err error) {
	rd.stage, rd.err = readDone, err
	rs.open.Add(-1)
	close(rd.done)
	if rd.onDone != nil {
		rd.onDone()
	}
}

// finish answers rd with err and forgets it. The caller holds mu.
func (rs *partitionReads) finish(rd *readWait, err error) {
	switch rd.stage {
	case readDone:
		return
	case readQueued:
		if i := slices.Index(rs.queue, rd); i >= 0 {
			rs.queue = slices.Delete(rs.queue, i, i+1)
		}
	default:
		if b := rs.all[rd.req]; b != nil {
			if i := slices.Index(b.reads, rd); i >= 0 {
				b.reads = slices.Delete(b.reads, i, i+1)
			}
			if len(b.reads) == 0 {
				delete(rs.all, rd.req)
			}
		}
	}
	rs.answer(rd, err)
}

// awaitingAnswer reports whether a request to Raft has no answer yet. The caller holds mu.
func (rs *partitionReads) awaitingAnswer() bool {
	for _, b := range rs.all {
		if !b.indexed {
			return true
		}
	}
	return false
}

// requeue puts the reads of request id back in the queue, to be asked again. The caller
// holds mu.
func (rs *partitionReads) requeue(id uint64) {
	for _, rd := range rs.all[id].reads {
		rd.stage = readQueued
		rs.queue = append(rs.queue, rd)
	}
	delete(rs.all, id)
}

// readAskTimeouts is how many election timeouts a read waits for the leader's answer before
// it asks again; readGiveUpTimeouts how many in all before it fails with ErrNotLeader.
const (
	readAskTimeouts    = 1
	readGiveUpTimeouts = noLeaderTimeouts
)

// errReadNotConfirmed is the cause of a read that no leader confirmed in time; the error
// returned wraps ErrNotLeader.
var errReadNotConfirmed = errors.New("no leader confirmed the read in time; it did not happen")

// askQueued hands a partition's queued reads to Raft. A read that finds no leader stays
// queued until one is known or it gives up (expireReads). Loop only.
func (n *Node) askQueued(p *partition) {
	if p.reads.open.Load() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	if len(rs.queue) == 0 {
		return
	}
	if p.raft.role != roleLeader && rs.awaitingAnswer() {
		// One request in flight to the leader at a time: the reads queued meanwhile
		// share the next, sent once the answer comes (releaseReads) or is given up on.
		return
	}
	for _, rd := range rs.queue {
		if rd.giveUp == 0 {
			rd.giveUp = n.now + uint64(readGiveUpTimeouts*n.elTicks)
		}
	}
	// One request for the lease reads (when the lease may be used), one for the others.
	leaseOK := n.leaseUsable()
	for _, lease := range [...]bool{false, true} {
		var batch []*readWait
		for _, rd := range rs.queue {
			if (rd.lease && leaseOK) == lease {
				batch = append(batch, rd)
			}
		}
		if len(batch) == 0 {
			continue
		}
		id := n.readSeq.Add(1)
		if err := p.raft.readIndex(id, lease); err != nil {
			return // no leader known: they wait for one
		}
		if rs.all == nil {
			rs.all = make(map[uint64]*readBatch)
		}
		rs.all[id] = &readBatch{reads: batch, retry: n.now + uint64(readAskTimeouts*n.elTicks)}
		for _, rd := range batch {
			rd.stage, rd.req = readAsked, id
		}
		rs.queue = slices.DeleteFunc(rs.queue, func(rd *readWait) bool { return rd.stage == readAsked })
	}
}

// releaseReads takes the reads Raft released: a failed one is asked again at the next tick;
// the others wait until the state machine has applied up to their index. It reports
// whether reads wait in the queue, to be asked in the next pass. Loop only.
func (p *partition) releaseReads(states []readState) (queued bool) {
	if len(states) == 0 {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	for _, s := range states {
		b, ok := rs.all[s.id]
		if !ok || b.indexed {
			continue // abandoned, or a late duplicate of an answer
		}
		if s.failed {
			rs.requeue(s.id)
			continue
		}
		b.index, b.indexed = s.index, true
		for _, rd := range b.reads {
			rd.stage = readIndexed
		}
	}
	p.readsApplied()
	return len(rs.queue) > 0
}

// readsApplied answers the reads whose index is applied. The caller holds mu.
func (p *partition) readsApplied() {
	for id, b := range p.reads.all {
		if b.indexed && b.index <= p.applied {
			delete(p.reads.all, id)
			for _, rd := range b.reads {
				p.reads.answer(rd, nil)
			}
		}
	}
}

// expireReads asks again the reads whose answer is overdue (the request or the answer may
// have been lost), and fails those that waited too long. Loop only.
func (p *partition) expireReads(now uint64) {
	if p.reads.open.Load() == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	for id, b := range rs.all {
		if !b.indexed && b.retry <= now {
			rs.requeue(id)
		}
	}
	for i := 0; i < len(rs.queue); i++ {
		if rd := rs.queue[i]; rd.giveUp != 0 && rd.giveUp <= now {
			rs.finish(rd, fmt.Errorf("kommander: partition %d: %w: %w", p.id, ErrNotLeader, errReadNotConfirmed))
			i--
		}
	}
}

// failReads answers every read still waiting with cause. The caller holds mu.
func (p *partition) failReads(cause error) {
	rs := &p.reads
	for len(rs.queue) > 0 {
		rs.finish(rs.queue[0], fmt.Errorf("kommander: partition %d: read: %w", p.id, cause))
	}
	for _, b := range rs.all {
		for len(b.reads) > 0 {
			rs.finish(b.reads[0], fmt.Errorf("kommander: partition %d: read: %w", p.id, cause))
		}
	}
}

// tickLog is the ring of the real times of the node's recent ticks, kept when lease
// reads are on: the lease is counted in ticks, and a node whose ticks fall behind its
// clock (a slow disk holds them back, a busy loop loses some) would stretch it.
type tickLog struct {
	at []time.Time // by tick number modulo len
}

// tickedAt records the time of tick now. Loop only.
func (l *tickLog) tickedAt(now uint64, t time.Time) {
	if l.at != nil {
		l.at[now%uint64(len(l.at))] = t
	}
}

// leaseUsable reports whether the node's ticks kept pace with its clock over the last
// election timeout and the last tick is recent: only then does a lease counted in ticks
// mean what it says in time. Loop only.
func (n *Node) leaseUsable() bool {
	l := &n.leaseTicks
	k := uint64(len(l.at)) - 1
	if l.at == nil || n.now <= k {
		return false
	}
	last, first := l.at[n.now%uint64(len(l.at))], l.at[(n.now-k)%uint64(len(l.at))]
	slack := n.tick / 2
	return n.cfg.Clock.Now().Sub(last) <= n.tick+slack && last.Sub(first) <= time.Duration(k)*n.tick+slack
}
