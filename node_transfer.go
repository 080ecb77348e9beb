package kommander

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Leadership transfers at the node (thesis §3.10): on request (TransferLeadership), before
// a planned stop (Stop hands every partition it leads to another voter first), and from
// the leader balancer. The Raft core runs the transfer; the node picks the target, waits
// for the outcome, and keeps the proposals that arrive meanwhile: its own stay queued
// (Raft refuses them while the transfer runs), and those forwarded to it are sent back
// with a request to try again (forwarder.receive), so that a transfer fails no caller.

// TransferLeadership hands the leadership of a partition this node leads to voter to, or,
// when to is "", to the voter whose log is the most up to date among the live ones. It
// returns once another node leads the partition. A node that does not lead the partition
// returns a *NotLeaderError naming the leader. While the transfer runs, the partition takes
// no new entries (they wait, and are appended by the new leader); if the target does not
// take over within about an election timeout, the transfer is abandoned, this node leads
// on, and the error wraps ErrTimeout.
func (n *Node) TransferLeadership(ctx context.Context, partition int, to string) error {
	p, err := n.partition(partition)
	if err != nil {
		return err
	}
	if err := n.writable(); err != nil {
		return err
	}
	r := n.requestTransfer(p, to)
	if answered, _ := n.waitCall(ctx, &r.memberCall); answered {
		return r.err
	}
	return fmt.Errorf("kommander: node %s: partition %d: leadership transfer: %w", n.cfg.NodeID, p.id, ctx.Err())
}

// requestTransfer asks the loop for a transfer of p's leadership to to.
func (n *Node) requestTransfer(p *partition, to string) *transferRequest {
	r := &transferRequest{p: p, to: to, memberCall: newMemberCall()}
	n.mem.mu.Lock()
	n.mem.transfers = append(n.mem.transfers, r)
	n.mem.mu.Unlock()
	n.in.markProposed()
	return r
}

// transferRequest is one leadership transfer asked of the loop.
type transferRequest struct {
	p  *partition
	to string // "" for the best voter

	// loop only.
	started  bool
	waited   bool // it waited for another transfer to end
	target   string
	deadline uint64 // tick at which the transfer counts as abandoned

	memberCall
}

// transferTimeouts is how many election timeouts a transfer may take before the node
// reports it abandoned (the core abandons it after one).
const transferTimeouts = 2

// stepTransfers moves the transfer requests on. Loop only.
func (n *Node) stepTransfers() {
	n.mem.activeTr = slices.DeleteFunc(n.mem.activeTr, func(r *transferRequest) bool { return !n.stepTransfer(r) })
}

// stepTransfer moves one transfer on; it reports whether it still waits.
func (n *Node) stepTransfer(r *transferRequest) bool {
	if n.callGone(&r.memberCall) {
		return false
	}
	p := r.p
	st := p.raft.status()
	if r.started {
		switch {
		case st.leader != "" && st.leader != n.cfg.NodeID:
			n.answer(&r.memberCall, nil)
			return false
		case n.now >= r.deadline:
			n.answer(&r.memberCall, fmt.Errorf("kommander: node %s: partition %d: %w: the transfer to %s did not complete; this node still leads", n.cfg.NodeID, p.id, ErrTimeout, r.target))
			return false
		}
		return true
	}
	if st.role != roleLeader {
		if r.waited && r.to == "" && st.leader != "" {
			n.answer(&r.memberCall, nil) // the transfer it waited for handed the partition over
		} else {
			n.answer(&r.memberCall, &NotLeaderError{Partition: int(p.id), Leader: st.leader, LeaderAddr: n.addrs[st.leader]})
		}
		return false
	}
	if t := p.raft.transferTarget(); t != "" && t != r.to {
		// Another transfer runs (the balancer's, or a caller's): wait for its outcome.
		r.waited = true
		return true
	}
	r.target = r.to
	if r.target == "" {
		r.target = n.bestVoter(p)
	}
	switch {
	case r.target == n.cfg.NodeID:
		n.answer(&r.memberCall, nil)
		return false
	case r.target == "":
		n.answer(&r.memberCall, fmt.Errorf("kommander: node %s: partition %d: no other live voter to transfer the leadership to: %w", n.cfg.NodeID, p.id, ErrNotLeader))
		return false
	}
	if err := p.raft.transferLeadership(r.target); err != nil {
		n.answer(&r.memberCall, fmt.Errorf("kommander: node %s: partition %d: transfer to %s: %w", n.cfg.NodeID, p.id, r.target, mapConfErr(err)))
		return false
	}
	n.metrics.transfers.Add(1)
	r.started, r.deadline = true, n.now+uint64(transferTimeouts*n.elTicks)
	return true
}

// mapConfErr maps the core's refusals to the errors callers act on.
func mapConfErr(err error) error {
	if errors.Is(err, errConfChangePending) || errors.Is(err, errTransferring) {
		return fmt.Errorf("%w: %w", ErrMembershipChange, err)
	}
	return err
}

// bestVoter returns the voter of p, other than this node, to hand its leadership to: a
// live one whose log matches the leader's furthest, or "" when there is none. Loop only.
func (n *Node) bestVoter(p *partition) string {
	best, bestMatch := "", uint64(0)
	for _, v := range p.raft.membership().Voters {
		if v == n.cfg.NodeID || !n.live(v) {
			continue
		}
		match, _ := p.raft.memberMatch(v)
		if best == "" || match > bestMatch {
			best, bestMatch = v, match
		}
	}
	return best
}

// handOffLeadership transfers the leadership of every partition this node leads to
// another voter and waits, bounded by ctx and by a few election timeouts, until they are
// led elsewhere: the first step of Stop, so that a planned restart costs the callers no
// failover. Partitions it cannot hand off (no other live voter) stay as they are.
func (n *Node) handOffLeadership(ctx context.Context) {
	if n.state.Load() != stateRunning || n.failed.Load() != nil || n.mem.removed.Load() {
		return
	}
	var reqs []*transferRequest
	for _, p := range n.parts {
		if p.leader() == n.cfg.NodeID {
			reqs = append(reqs, n.requestTransfer(p, ""))
		}
	}
	if len(reqs) == 0 {
		return
	}
	// Real time, not the node's clock: Stop is the caller's, and a test's fake clock may
	// stand still while it runs.
	limit := time.NewTimer(time.Duration(transferTimeouts+1) * n.cfg.ElectionTimeout)
	defer limit.Stop()
	for _, r := range reqs {
		select {
		case <-r.done:
			continue
		case <-ctx.Done():
		case <-limit.C:
		}
		break
	}
	n.mem.mu.Lock()
	defer n.mem.mu.Unlock()
	handed := 0
	for _, r := range reqs {
		if r.answered && r.err == nil {
			handed++
		}
		r.abandoned = true
	}
	n.log.Info("handed off the leadership before stopping", "partitions", handed, "of", len(reqs))
}
