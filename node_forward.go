package kommander

import "log/slog"

// forwarder carries proposals between the nodes of a partition that do not lead it and
// the one that does: it forwards this node's queued proposals to the leader, takes the
// ones forwarded to this node, passes them on when this node no longer leads, and tells
// the sender when it refused them. Loop only.
type forwarder struct {
	self    string
	out     *outbox
	metrics *metrics
	log     *slog.Logger
	newIDs  func(k int) uint64 // Node.nextIDs: fresh IDs for proposals sent again
	wake    func()             // wakes the loop to send them
}

// forward sends the first queued proposals of a partition, prs, to its leader in one
// MsgForward; they wait for their entries to be applied until deadline. The caller holds
// p.mu.
func (f *forwarder) forward(p *partition, prs []*proposal, leader string, term, deadline uint64) {
	var ents []Entry // the message keeps it
	for _, pr := range prs {
		ents = pr.appendEntries(ents)
	}
	p.forwarded(prs, leader, term, deadline)
	f.metrics.forwarded.Add(uint64(len(ents)))
	f.out.add(Message{Type: MsgForward, Partition: p.id, From: f.self, To: leader, Term: term, Entries: ents})
}

// receive takes a MsgForward from another node into the partition's Raft group, or tells
// the sender it was refused, or drops it.
//
// A forwarded proposal is appended at most once (S35), even when the network delivers a
// copy late, after the leader it was meant for lost its leadership or restarted:
//   - It is bound to a term: the sender addresses it to the leader of the term it knows
//     (m.Term), and only the leader of exactly that term takes it. Raft elects at most one
//     leader per term, and a node never leads a term again once it stopped leading it (a
//     restarted one campaigns in a higher term), so one process decides on every copy.
//   - That process takes each proposal once: the entry IDs of one incarnation of a node
//     only grow, and its forwards of one partition arrive in order, so a copy at or below
//     the highest ID taken from that incarnation in this term is a duplicate. The mark is
//     set before the proposal is taken or refused, so that a copy of a refused proposal is
//     never taken either.
//   - A node that does not lead the term drops the proposal without a word: it cannot know
//     whether an earlier life of it took a copy, so a refusal, which tells the sender the
//     entries will never be applied, might not be the truth. The sender's caller learns the
//     outcome from the log, or gets ErrTimeout. Only the process that led the term itself,
//     and stepped down since, knows (the dedupe mark above): it asks the sender to forward
//     them again to the next leader, under fresh IDs.
func (f *forwarder) receive(p *partition, m *Message) {
	if !p.leadsTerm(m.Term) {
		if p.ledTerm(m.Term) && p.firstForward(m.From, m.Term, m.Entries) {
			// This process led the term and no longer does (it handed its leadership
			// over, or lost it): it knows it never took these entries, so the sender may
			// forward them again, to the next leader, rather than fail its callers.
			f.out.add(Message{Type: MsgForwardRefused, Partition: p.id, From: f.self, To: m.From, Term: m.Term, Context: forwardAgain, Entries: forwardIDs(m)})
			return
		}
		f.metrics.dropped.Add(1)
		return
	}
	if !p.firstForward(m.From, m.Term, m.Entries) {
		f.metrics.dropped.Add(1) // a duplicate
		return
	}
	if p.raft.transferTarget() != "" {
		// Leadership is being handed over and Raft takes no entries meanwhile: the sender
		// forwards them again to the next leader, instead of failing its callers.
		f.out.add(Message{Type: MsgForwardRefused, Partition: p.id, From: f.self, To: m.From, Term: m.Term, Context: forwardAgain, Entries: forwardIDs(m)})
		return
	}
	if p.backlogged() {
		// The state machine is far behind: take no more entries for now.
		f.metrics.dropped.Add(1)
		f.refuse(p, m)
		return
	}
	if err := p.raft.step(*m); err != nil {
		// Too much unsaved: Raft took none of it, and the follower's caller gets a
		// definite answer now instead of a timeout much later.
		f.refuse(p, m)
		f.log.Debug("raft rejected a message", "partition", m.Partition, "type", m.Type, "from", m.From, "err", err)
	}
}

// refuse tells the node that forwarded a proposal that this leader did not take it (its
// state machine is behind, or too much is unsaved): a MsgForwardRefused that carries only
// the entries' IDs.
func (f *forwarder) refuse(p *partition, m *Message) {
	f.out.add(Message{Type: MsgForwardRefused, Partition: p.id, From: f.self, To: m.From, Term: m.Term, Entries: forwardIDs(m)})
}

// forwardIDs returns the IDs of a MsgForward's entries, as a MsgForwardRefused carries them.
func forwardIDs(m *Message) []Entry {
	ids := make([]Entry, len(m.Entries))
	for i := range m.Entries {
		ids[i] = Entry{Kind: EntryNormal, ID: m.Entries[i].ID}
	}
	return ids
}

// forwardAgain, in the Context of a MsgForwardRefused, asks the sender to forward the
// entries again (to the next leader) rather than to fail them: the leader is handing over
// its leadership.
const forwardAgain = 1

// refused answers the proposals a leader refused (see refuse) with ErrOverloaded: the
// leader of the term they were forwarded in appended none of their entries, so they will
// never be applied.
func (f *forwarder) refused(p *partition, m *Message) {
	if m.Context == forwardAgain {
		if p.requeueRefused(m.From, m.Term, m.Entries, f.newIDs) {
			f.wake()
		}
		return
	}
	p.refusedBy(m.From, m.Term, m.Entries)
}
