package kommander

import "fmt"

// persister saves the loop's batches: one Storage.Save, one fsync, for the entries and
// hard states of every partition with work in a pass. The Save runs in a goroutine of its
// own, beside the loop: messages and proposals that arrive meanwhile are stepped into
// Raft and form the next batch. The loop starts a batch, polls for the end of its Save
// between passes, and finishes it (finishPersist) once the Save returned.
type persister struct {
	storage Storage
	// The batch: the Readies it holds and their updates for Save.
	readies        []partitionReady
	updates        []Update
	entries, bytes uint64 // in updates, for the metrics
	needed         bool   // the batch needs a Save (not only commit indexes)

	running  bool // a batch was started and is not finished
	returned bool // its Save returned, with err
	err      error
	ticked   bool // a tick was taken while its Save runs

	req  chan struct{} // loop -> goroutine: save updates; holds the one Save at a time
	done chan error    // goroutine -> loop: the Save returned
	stop chan struct{}
}

// partitionReady is one partition's part of a batch.
type partitionReady struct {
	p  *partition
	rd raftReady
}

func (ps *persister) init(s Storage) {
	ps.storage = s
	ps.req, ps.done, ps.stop = make(chan struct{}, 1), make(chan error, 1), make(chan struct{})
}

// run is the goroutine that performs the loop's Saves, one at a time.
func (ps *persister) run() {
	for {
		select {
		case <-ps.req:
			ps.done <- ps.storage.Save(ps.updates)
		case <-ps.stop:
			return
		}
	}
}

// inFlight reports whether a Save was started and the loop has not seen it return.
func (ps *persister) inFlight() bool { return ps.running && !ps.returned }

// saveReturned records the result of the running Save.
func (ps *persister) saveReturned(err error) { ps.err, ps.returned = err, true }

// poll reports, without waiting, whether the running Save has returned.
func (ps *persister) poll() bool {
	if !ps.returned {
		select {
		case err := <-ps.done:
			ps.saveReturned(err)
		default:
		}
	}
	return ps.returned
}

// start starts the batch of ps.readies: it reports false when none of them needs an fsync
// (the batch is then done at once), and otherwise hands the Save to the goroutine.
func (ps *persister) start() (saving bool) {
	ps.updates = ps.updates[:0]
	ps.entries, ps.bytes, ps.needed = 0, 0, false
	for i := range ps.readies {
		r := &ps.readies[i]
		if len(r.rd.Entries) == 0 && !r.rd.SaveHardState {
			continue
		}
		if r.p.needsSave(&r.rd) {
			ps.needed = true
		}
		ps.updates = append(ps.updates, Update{
			Partition:     r.p.id,
			HardState:     r.rd.HardState,
			SaveHardState: r.rd.SaveHardState,
			Entries:       r.rd.Entries,
		})
		ps.entries += uint64(len(r.rd.Entries))
		for j := range r.rd.Entries {
			ps.bytes += r.rd.Entries[j].size()
		}
	}
	ps.running, ps.returned, ps.err, ps.ticked = true, false, nil, false
	if !ps.needed {
		ps.returned = true
		return false
	}
	ps.req <- struct{}{}
	return true
}

// finishPersist completes a batch once its Save returned: it sends what had to wait for
// the fsync and acknowledges the Readies to Raft.
func (n *Node) finishPersist() {
	n.settlePersist()
	n.out.flush(n.transport)
}

// settlePersist is finishPersist leaving what had to wait for the fsync in the outbox, for
// the pass to send with its own messages: after the next Save started, so that the
// transport's writer runs before that Save's fsync holds the processor (see runPass). A
// follower's acknowledgements otherwise waited for its next fsync.
func (n *Node) settlePersist() {
	ps := &n.persist
	ps.running, ps.returned = false, false
	if err := ps.err; err != nil {
		// S26: a failed fsync cannot be retried; nothing of this batch may be
		// acknowledged, and the node stops driving Raft.
		n.failStop(fmt.Errorf("kommander: node %s: save %d entries: %w", n.cfg.NodeID, ps.entries, err), err)
		return
	}
	if ps.needed {
		n.metrics.fsyncs.Add(1)
		n.metrics.entriesSaved.Add(ps.entries)
		n.metrics.bytesSaved.Add(ps.bytes)
		for i := range ps.readies {
			ps.readies[i].p.saved(&ps.readies[i].rd)
		}
	}
	clear(ps.updates)
	ps.updates = ps.updates[:0]
	for i := range ps.readies {
		n.out.addAll(ps.readies[i].rd.MessagesAfterPersist) // copies: advance may reuse them
	}
	for i := range ps.readies {
		r := &ps.readies[i]
		r.p.raft.advance(r.rd)
		n.publish(r.p)
	}
	clear(ps.readies)
	ps.readies = ps.readies[:0]
}
