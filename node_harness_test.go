package kommander

import "context"

// testNodeOptions change how a node runs, for deterministic tests; newNodeForTest applies
// them. The zero value is a node as NewNode makes it.
type testNodeOptions struct {
	// manual: Start runs no goroutines. The test drives the node: addTick, runPass,
	// completePersist to let the Save a pass started return (a crash before loses the
	// batch), and applyPending.
	manual bool
	// applyBacklog, if set, replaces maxApplyBacklog.
	applyBacklog int
	// admitted, if set, is called by Replicate once a proposal passed the checks and
	// before it is queued, so that a test can fail or stop the node in between.
	admitted func()
	// maxUnstableBytes, if set, replaces Raft's bound on a leader's unsaved entries.
	maxUnstableBytes uint64
	// addDiscovered, if set, is what AutoJoin calls to add a discovered node.
	addDiscovered func(ctx context.Context, id, addr string) error
}

// newNodeForTest is NewNode for tests that change how the node runs (o).
func newNodeForTest(cfg Config, o testNodeOptions) (*Node, error) {
	n, err := NewNode(cfg)
	if err != nil {
		return nil, err
	}
	if o.manual {
		n.startLoops = func() {
			// No goroutines run, so none has to end: a Stop does not wait for them.
			close(n.stop.loopDone)
			close(n.apply.done)
		}
	}
	if o.admitted != nil {
		n.admitted = o.admitted
	}
	if o.addDiscovered != nil {
		n.addDiscovered = o.addDiscovered
	}
	for _, p := range n.parts {
		if o.applyBacklog > 0 {
			p.maxBacklog = o.applyBacklog
		}
		if o.maxUnstableBytes > 0 {
			p.raft.maxUnstableBytes = o.maxUnstableBytes
		}
	}
	return n, nil
}

// completePersist is the persister goroutine of a node driven by hand: it performs the
// Save the last pass started; the next pass finishes the batch.
func (n *Node) completePersist() {
	<-n.persist.req
	n.persist.saveReturned(n.persist.storage.Save(n.persist.updates))
}

// applyPending is the apply goroutine of a node driven by hand.
func (n *Node) applyPending() { n.apply.applyPending() }
