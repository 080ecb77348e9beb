package kommander

import (
	"errors"
	"log/slog"
)

// forwarder carries proposals between the nodes of a partition that do not lead it and
// the one that does: it forwards this node's queued proposals to the leader, takes the
// ones forwarded to this node, passes them on when this node no longer leads, and tells
// the sender when it refused them. Loop only.
type forwarder struct {
	self    string
	out     *outbox
	metrics *metrics
	log     *slog.Logger
	recent  recentIDs // of the forwarded entries received
}

// maxForwardHops bounds how often a forwarded proposal is passed on by nodes that are no
// longer (or not yet) the leader; the hop count travels in Message.Hops.
const maxForwardHops = 2

// forward sends the first queued proposals of a partition, prs, to its leader in one
// MsgForward; they wait for their entries to be applied until deadline. The caller holds
// p.mu.
func (f *forwarder) forward(p *partition, prs []*proposal, leader string, term, deadline uint64) {
	var ents []Entry // the message keeps it
	for _, pr := range prs {
		ents = pr.appendEntries(ents)
	}
	p.forwarded(prs, leader, deadline)
	f.metrics.forwarded.Add(uint64(len(ents)))
	f.out.add(Message{Type: MsgForward, Partition: p.id, From: f.self, To: leader, Term: term, Entries: ents})
}

// receive takes a MsgForward from another node into the partition's Raft group, if this
// node leads it and can take the entries; otherwise it passes the proposal on to the
// leader (reforward) or tells the sender it was refused.
func (f *forwarder) receive(p *partition, m *Message) {
	if m.Entries = f.recent.unseen(m.Entries); len(m.Entries) == 0 {
		f.metrics.dropped.Add(1) // a duplicate
		return
	}
	if p.backlogged() {
		// The state machine is far behind: take no more entries for now.
		f.metrics.dropped.Add(1)
		f.refuse(p, m)
		return
	}
	err := p.raft.step(*m)
	switch {
	case err == nil:
	case errors.Is(err, errNotLeader):
		f.reforward(p, m)
	default:
		// Too much unsaved: Raft took none of it, and the follower's caller gets a
		// definite answer now instead of a timeout much later.
		f.refuse(p, m)
		f.log.Debug("raft rejected a message", "partition", m.Partition, "type", m.Type, "from", m.From, "err", err)
	}
}

// reforward passes a forwarded proposal that reached a node which does not lead the
// partition on to the leader it knows. Raft refused the entries, so no log holds them and
// passing them on cannot apply them twice; without it, proposals forwarded just before a
// leader change would wait for their deadline.
func (f *forwarder) reforward(p *partition, m *Message) {
	st := p.raft.status()
	if st.leader == "" || st.leader == f.self || st.leader == m.From || m.Hops >= maxForwardHops {
		f.metrics.dropped.Add(1)
		return
	}
	fwd := *m
	fwd.From, fwd.To, fwd.Term, fwd.Hops = f.self, st.leader, st.term, m.Hops+1
	f.metrics.forwarded.Add(uint64(len(fwd.Entries)))
	f.out.add(fwd)
}

// refuse tells the node that forwarded a proposal that this leader did not take it (its
// state machine is behind, or too much is unsaved): a MsgForwardRefused that carries only
// the entries' IDs.
func (f *forwarder) refuse(p *partition, m *Message) {
	ids := make([]Entry, len(m.Entries))
	for i := range m.Entries {
		ids[i] = Entry{Kind: EntryNormal, ID: m.Entries[i].ID}
	}
	f.out.add(Message{Type: MsgForwardRefused, Partition: p.id, From: f.self, To: m.From, Term: p.raft.status().term, Entries: ids})
}

// refused answers the proposals a leader refused (see refuse) with ErrOverloaded: the
// leader appended none of their entries, so they will never be applied.
func (f *forwarder) refused(p *partition, m *Message) {
	p.refusedBy(m.From, m.Entries)
}

// maxForwardedIDs bounds the forwarded entry IDs a node remembers (recentIDs).
const maxForwardedIDs = 1 << 14

// recentIDs remembers the IDs of the last maxForwardedIDs forwarded entries a node
// received, of all partitions (entry IDs come from one sequence per node), so that a
// MsgForward the network delivers twice is proposed once. Loop only.
type recentIDs struct {
	seen map[uint64]struct{}
	ring []uint64 // in arrival order
	next int      // the slot of ring to reuse next, once it is full
}

// unseen returns the entries of a received MsgForward whose IDs the node has not received
// before, and remembers them: a forwarded proposal is sent once and never resent, so a
// second copy is the network's duplicate, and proposing it again would apply the command
// twice (S12).
func (w *recentIDs) unseen(ents []Entry) []Entry {
	if w.seen == nil {
		w.seen = make(map[uint64]struct{})
	}
	kept := ents
	for i := range ents {
		if _, dup := w.seen[ents[i].ID]; dup {
			kept = nil
			for _, e := range ents {
				if _, dup := w.seen[e.ID]; !dup {
					kept = append(kept, e)
				}
			}
			break
		}
	}
	for i := range kept {
		id := kept[i].ID
		if len(w.ring) < maxForwardedIDs {
			w.ring = append(w.ring, id)
		} else {
			delete(w.seen, w.ring[w.next])
			w.ring[w.next] = id
			w.next = (w.next + 1) % maxForwardedIDs
		}
		w.seen[id] = struct{}{}
	}
	return kept
}
