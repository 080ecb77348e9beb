package kommander

import (
	"context"
	"errors"
	"fmt"
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
	if err != nil {
		return err
	}
	select {
	case <-rd.done:
		return rd.err
	case <-ctx.Done():
	}
	p := n.parts[partition]
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
	rd := &readWait{id: n.readSeq.Add(1), lease: lease, done: make(chan struct{})}
	p.mu.Lock()
	err = n.writable() // again under mu: failAll answers what is queued after the node stops
	if err == nil {
		p.reads.queue = append(p.reads.queue, rd)
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
	id    uint64
	lease bool
	stage readStage
	index uint64 // the read index, once stageIndexed
	// retry is the node tick at which an unanswered request is asked again; giveUp the one
	// after which the read fails with ErrNotLeader (0: not set yet).
	retry, giveUp uint64
	err           error
	done          chan struct{}
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
// queued ones; all holds every unanswered one by ID.
type partitionReads struct {
	queue []*readWait
	all   map[uint64]*readWait
}

// finish answers rd with err and forgets it. The caller holds mu.
func (rs *partitionReads) finish(rd *readWait, err error) {
	if rd.stage == readDone {
		return
	}
	if rd.stage == readQueued {
		for i, q := range rs.queue {
			if q == rd {
				rs.queue = append(rs.queue[:i], rs.queue[i+1:]...)
				break
			}
		}
	}
	delete(rs.all, rd.id)
	rd.stage, rd.err = readDone, err
	close(rd.done)
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
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	if len(rs.queue) == 0 {
		return
	}
	lease := n.leaseUsable()
	kept := rs.queue[:0]
	for _, rd := range rs.queue {
		if rd.giveUp == 0 {
			rd.giveUp = n.now + uint64(readGiveUpTimeouts*n.elTicks)
		}
		if err := p.raft.readIndex(rd.id, rd.lease && lease); err != nil {
			kept = append(kept, rd) // no leader known: wait for one
			continue
		}
		if rs.all == nil {
			rs.all = make(map[uint64]*readWait)
		}
		rs.all[rd.id] = rd
		rd.stage, rd.retry = readAsked, n.now+uint64(readAskTimeouts*n.elTicks)
	}
	clear(rs.queue[len(kept):])
	rs.queue = kept
}

// releaseReads takes the reads Raft released: a failed one is asked again at the next tick;
// the others wait until the state machine has applied up to their index. Loop only.
func (p *partition) releaseReads(states []readState) {
	if len(states) == 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	for _, s := range states {
		rd, ok := rs.all[s.id]
		if !ok || rd.stage != readAsked {
			continue // abandoned, or a late duplicate of an answer
		}
		if s.failed {
			rd.stage = readQueued
			delete(rs.all, rd.id)
			rs.queue = append(rs.queue, rd)
			continue
		}
		rd.stage, rd.index = readIndexed, s.index
	}
	p.readsApplied()
}

// readsApplied answers the reads whose index is applied. The caller holds mu.
func (p *partition) readsApplied() {
	for _, rd := range p.reads.all {
		if rd.stage == readIndexed && rd.index <= p.applied {
			p.reads.finish(rd, nil)
		}
	}
}

// expireReads asks again the reads whose answer is overdue (the request or the answer may
// have been lost), and fails those that waited too long. Loop only.
func (p *partition) expireReads(now uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	rs := &p.reads
	for _, rd := range rs.all {
		if rd.stage == readAsked && rd.retry <= now {
			rd.stage = readQueued
			delete(rs.all, rd.id)
			rs.queue = append(rs.queue, rd)
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
	for _, rd := range rs.all {
		rs.finish(rd, fmt.Errorf("kommander: partition %d: read: %w", p.id, cause))
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
