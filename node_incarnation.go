package kommander

import (
	"errors"
	"fmt"
	"maps"
	"slices"
)

// ErrDataLost is wrapped by Node.Err when the cluster knows this node's ID by another data
// directory: this node lost its data (a wiped or replaced disk, a fresh directory) and must
// not take part under its old ID, since it may have voted in terms whose votes it forgot.
var ErrDataLost = errors.New("kommander: the cluster knows this node ID by another data directory")

// incarnations keeps one node ID on one data directory for the cluster's life (S36).
//
// Every data directory draws a random incarnation when it is created (clusterIdentity).
// A node announces its incarnation to every peer (MsgHello) until each has answered; a peer
// that hears of a member for the first time records the incarnation durably (trust on first
// use) before it answers, and from then on answers any other incarnation of that ID with a
// refusal. A node refused so has lost its data: it fails with ErrDataLost.
//
// A node whose data directory is new may have been a voter before, in a life it forgot:
// it neither votes nor campaigns until a majority of the members (itself included) has
// accepted its incarnation. Safety: if an earlier life of the node ever voted, a majority
// had accepted that life's incarnation, hence recorded it, first; that majority and the
// one the new life needs share a member, whose answer is a refusal. A node whose data
// directory it created before takes part at once: its votes are on its own disk.
//
// Without a DataDir nothing is recorded and nobody waits. Loop only.
type incarnations struct {
	self     string
	dir      string          // DataDir; "" turns the check off
	id       clusterIdentity // as stored, with this node's incarnation and its records
	peers    []string        // the other members
	accepted map[string]bool // peers that accepted this node's incarnation
	quorum   int             // members needed to accept a new data directory
	active   bool            // this node may vote and campaign
	nextSend uint64          // tick at which unanswered peers are greeted again
	interval uint64          // ticks between greetings
}

// init prepares the check for a node whose identity is id (created: the data directory is
// new) and whose voters are voters.
func (c *incarnations) init(self, dir string, id clusterIdentity, created bool, voters []string, interval int) {
	c.self, c.dir, c.id, c.interval = self, dir, id, uint64(max(interval, 1))
	for _, v := range voters {
		if v != self {
			c.peers = append(c.peers, v)
		}
	}
	c.accepted = make(map[string]bool, len(c.peers))
	c.quorum = len(voters)/2 + 1
	c.active = dir == "" || !created || len(c.peers) == 0
}

// greet sends this node's incarnation to every peer that has not answered yet, at most
// once per interval. It runs on every tick.
func (c *incarnations) greet(now uint64, out *outbox) {
	if c.dir == "" || now < c.nextSend {
		return
	}
	c.nextSend = now + c.interval
	for _, p := range c.peers {
		if !c.accepted[p] {
			out.add(Message{Type: MsgHello, From: c.self, To: p, Context: c.id.Incarnation})
		}
	}
}

// hello answers a peer's announcement: it records a member's first incarnation durably
// before accepting it, and refuses any other.
func (c *incarnations) hello(m *Message, out *outbox) error {
	known, recorded := c.id.Peers[m.From]
	if c.dir != "" && !recorded && m.Context != 0 {
		ids := c.id
		ids.Peers = make(map[string]uint64, len(c.id.Peers)+1)
		for k, v := range c.id.Peers {
			ids.Peers[k] = v
		}
		ids.Peers[m.From] = m.Context
		if err := writeIdentity(c.dir, ids); err != nil {
			return fmt.Errorf("record the incarnation of %s: %w", m.From, err)
		}
		c.id, known, recorded = ids, m.Context, true
	}
	refuse := recorded && known != m.Context
	out.add(Message{Type: MsgHelloResp, From: c.self, To: m.From, Context: known, Reject: refuse})
	return nil
}

// helloResp takes a peer's answer to this node's announcement. It returns ErrDataLost
// (wrapped) when the peer knows this node by another incarnation.
func (c *incarnations) helloResp(m *Message) error {
	if c.dir == "" || c.accepted[m.From] {
		return nil
	}
	if m.Reject {
		return fmt.Errorf("%w: %s knows %s by the data directory of incarnation %x, and %s is of incarnation %x; "+
			"the node lost its data and may not rejoin under its ID: restore its data directory, or give the node a new ID",
			ErrDataLost, m.From, c.self, m.Context, c.dir, c.id.Incarnation)
	}
	if m.Context != c.id.Incarnation {
		return nil // an answer to a greeting of no incarnation of ours
	}
	c.accepted[m.From] = true
	if !c.active && len(c.accepted)+1 >= c.quorum {
		c.active = true
	}
	return nil
}

// save writes the identity with change applied to a copy of it, and keeps the copy once
// it is durable. Without a data directory it does nothing.
func (c *incarnations) save(change func(id *clusterIdentity)) error {
	if c.dir == "" {
		return nil
	}
	ids := c.id
	change(&ids)
	if err := writeIdentity(c.dir, ids); err != nil {
		return err
	}
	c.id = ids
	return nil
}

// saveBook records the address book's records.
func (c *incarnations) saveBook(records map[string]bookRecord) error {
	return c.save(func(id *clusterIdentity) { id.Book = maps.Clone(records) })
}

// reconfigured records that this node saw a membership change committed.
func (c *incarnations) reconfigured() error {
	if c.id.Reconfigured {
		return nil
	}
	return c.save(func(id *clusterIdentity) { id.Reconfigured = true })
}

// addPeer greets a member added to the cluster, so that it records this node's
// incarnation too.
func (c *incarnations) addPeer(id string) {
	if id != c.self && !slices.Contains(c.peers, id) {
		c.peers = append(c.peers, id)
	}
}

// forget drops a member removed from the cluster, and the incarnation recorded for it,
// so that its ID can join again later on a new data directory (S36).
func (c *incarnations) forget(id string) error {
	c.peers = slices.DeleteFunc(c.peers, func(p string) bool { return p == id })
	delete(c.accepted, id)
	if _, ok := c.id.Peers[id]; !ok {
		return nil
	}
	return c.save(func(ids *clusterIdentity) {
		ids.Peers = maps.Clone(ids.Peers)
		delete(ids.Peers, id)
	})
}
