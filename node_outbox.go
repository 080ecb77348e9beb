package kommander

import (
	"slices"
	"sort"
)

// outbox gathers what a loop pass sends, by peer, so that each peer gets one Send per pass
// carrying the messages of all partitions. Peers are keyed by node ID: a membership change
// adds or removes one key. Loop only.
type outbox struct {
	peers   []string             // every member but this node, sorted: the order of Sends
	msgs    map[string][]Message // peer -> what this pass sends it
	metrics *metrics
}

// newOutbox returns the outbox of node self in a cluster of members.
func newOutbox(self string, members []string, m *metrics) outbox {
	o := outbox{msgs: make(map[string][]Message, len(members)), metrics: m}
	for _, id := range members {
		if id != self {
			o.peers = append(o.peers, id)
			o.msgs[id] = nil
		}
	}
	return o
}

// addPeer makes id a peer (a member added, or an address learned).
func (o *outbox) addPeer(id string) {
	if _, ok := o.msgs[id]; ok {
		return
	}
	i := sort.SearchStrings(o.peers, id)
	o.peers = slices.Insert(o.peers, i, id)
	o.msgs[id] = nil
}

// removePeer drops id and what was queued for it (a member removed).
func (o *outbox) removePeer(id string) {
	if _, ok := o.msgs[id]; !ok {
		return
	}
	delete(o.msgs, id)
	if i, found := slices.BinarySearch(o.peers, id); found {
		o.peers = slices.Delete(o.peers, i, i+1)
	}
}

// add queues m for its peer; a message to no peer (or to this node) is dropped.
func (o *outbox) add(m Message) {
	q, ok := o.msgs[m.To]
	if !ok {
		o.metrics.dropped.Add(1)
		return
	}
	o.msgs[m.To] = append(q, m)
}

// addAll queues msgs by peer.
func (o *outbox) addAll(msgs []Message) {
	for i := range msgs {
		o.add(msgs[i])
	}
}

// flush sends what was queued: one Send per peer. The transport may keep the slices, so
// each Send gets a fresh one. It reports whether it sent anything.
func (o *outbox) flush(t Transport) (sent bool) {
	for _, id := range o.peers {
		msgs := o.msgs[id]
		if len(msgs) == 0 {
			continue
		}
		o.metrics.sent.Add(uint64(len(msgs)))
		t.Send(id, msgs)
		o.msgs[id] = nil
		sent = true
	}
	return sent
}
