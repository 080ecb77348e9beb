package kommander

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Membership changes at the node: the public calls, the requests they make of the loop,
// their forwarding to the partition's leader, and what the node does when a configuration
// commits (thesis §4.1: one server added or removed at a time; the Raft core enforces the
// rules, the node carries the requests and follows the outcome).
//
// A request is one change of one partition. The loop proposes it when this node leads the
// partition, or forwards it to the leader in a MsgForward whose one entry is of Kind
// entryConfig and carries encodeConfChange; the leader proposes it or refuses it with a
// reason (a MsgForwardRefused whose entry's Type is the reason's code). Forwarding follows
// the rules of proposals (node_forward.go): bound to the leader's term, taken once by
// entry ID. Refusals that mean "not now" (a change in flight, a transfer, a learner still
// behind, no leader yet) make the loop try again a little later, until the caller's ctx
// ends; the caller is answered once the change's entry is committed and handed to the
// applier on this node, or at once if the configuration already is what it asks for.

// Membership is a partition's configuration as a node sees it: the voters, who elect the
// leader and make the quorum, and the learners, who receive the log but do not vote.
type Membership struct {
	Voters   []string `json:"voters"`
	Learners []string `json:"learners"`
}

// MemberOption changes what a membership call applies to.
type MemberOption func(*memberOptions)

type memberOptions struct {
	partitions []int
}

// InPartitions limits a membership change to the given partitions; by default it applies
// to every partition this node hosts.
func InPartitions(partitions ...int) MemberOption {
	return func(o *memberOptions) { o.partitions = append(o.partitions, partitions...) }
}

// AddNode adds node id, reached at addr, as a voter of every partition (or of those
// InPartitions names): first as a learner, which receives the log without voting, then,
// once it is within Config.MaxLearnerLag entries of the leader, as a voter. It returns
// once the promotion is committed, or with ctx's error (the node may then be a learner;
// calling AddNode again carries on). It can be called on any member: a node that does not
// lead a partition forwards the change to the leader. A node already a voter is left as it
// is.
func (n *Node) AddNode(ctx context.Context, id, addr string, opts ...MemberOption) error {
	if err := n.AddLearner(ctx, id, addr, opts...); err != nil {
		return err
	}
	return n.change(ctx, confAddVoter, id, opts)
}

// AddLearner adds node id, reached at addr, as a learner of every partition (or of those
// InPartitions names): it receives the log and snapshots but neither votes nor counts for
// commits. It returns once the change is committed. A member already is one, and stays as
// it is. addr may be "" when the address book already has one for id.
func (n *Node) AddLearner(ctx context.Context, id, addr string, opts ...MemberOption) error {
	if addr != "" {
		n.SetPeerAddr(id, addr)
	}
	return n.change(ctx, confAddLearner, id, opts)
}

// RemoveNode removes node id, voter or learner, from every partition (or from those
// InPartitions names) and returns once the change is committed. Once a node is in no
// configuration of this node, its traffic is refused. A leader that removes itself leads
// until the change is committed, then steps down; a node removed from every partition
// stops (Err returns ErrRemoved). The last voter of a partition cannot be removed.
func (n *Node) RemoveNode(ctx context.Context, id string, opts ...MemberOption) error {
	return n.change(ctx, confRemove, id, opts)
}

// Members returns the configuration of a partition in effect on this node: the latest in
// its log, which may not be committed yet.
func (n *Node) Members(partition int) (Membership, error) {
	p, err := n.partition(partition)
	if err != nil {
		return Membership{}, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	m := p.mem.published
	return Membership{Voters: append([]string{}, m.Voters...), Learners: append([]string{}, m.Learners...)}, nil
}

// SetPeerAddr records that node id is now reached at addr. The change is kept in the data
// directory and passed on to the other members.
func (n *Node) SetPeerAddr(id, addr string) {
	if id == "" || addr == "" || id == n.cfg.NodeID {
		return
	}
	n.mem.mu.Lock()
	n.mem.addrs = append(n.mem.addrs, Peer{ID: id, Addr: addr})
	n.mem.mu.Unlock()
	n.in.markProposed()
}

// change makes the change typ of node id in every partition opts name, one after the
// other, each committed before the next is asked.
func (n *Node) change(ctx context.Context, typ confChangeType, id string, opts []MemberOption) error {
	if id == "" {
		return fmt.Errorf("kommander: node %s: membership change: empty node ID: %w", n.cfg.NodeID, ErrInvalidConfig)
	}
	var o memberOptions
	for _, opt := range opts {
		opt(&o)
	}
	parts := o.partitions
	if parts == nil {
		for i := range n.parts {
			parts = append(parts, i)
		}
	}
	for _, i := range parts {
		p, err := n.partition(i)
		if err != nil {
			return err
		}
		if err := n.changeOne(ctx, p, confChange{Type: typ, Node: id}); err != nil {
			return err
		}
	}
	return nil
}

// changeOne asks the loop for one change of one partition and waits for its answer.
func (n *Node) changeOne(ctx context.Context, p *partition, cc confChange) error {
	if err := n.writable(); err != nil {
		return err
	}
	if p.mem.removed.Load() {
		return fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, ErrRemoved)
	}
	r := &confRequest{p: p, cc: cc, memberCall: newMemberCall()}
	n.mem.mu.Lock()
	n.mem.confs = append(n.mem.confs, r)
	n.mem.mu.Unlock()
	n.in.markProposed()
	answered, lastErr := n.waitCall(ctx, &r.memberCall)
	if answered {
		return r.err
	}
	err := fmt.Errorf("kommander: node %s: partition %d: %s %s: %w", n.cfg.NodeID, p.id, cc.Type, cc.Node, ctx.Err())
	if lastErr != nil {
		err = fmt.Errorf("%w (the leader's last answer: %w)", err, lastErr)
	}
	return err
}

// memberCall is what the caller of a membership change or a transfer waits on: the
// loop's answer. Its fields are under memberState.mu.
type memberCall struct {
	lastErr   error // the last refusal, for a caller whose ctx ends first
	err       error
	answered  bool
	abandoned bool
	done      chan struct{}
}

func newMemberCall() memberCall { return memberCall{done: make(chan struct{})} }

// waitCall waits for the loop's answer to c, or for ctx to end: then c is abandoned (the
// loop drops it) and answered is false, with the last refusal the loop noted.
func (n *Node) waitCall(ctx context.Context, c *memberCall) (answered bool, lastErr error) {
	select {
	case <-c.done:
		return true, nil
	case <-ctx.Done():
	}
	n.mem.mu.Lock()
	defer n.mem.mu.Unlock()
	if c.answered {
		return true, nil
	}
	c.abandoned = true
	return false, c.lastErr
}

// answer gives c its answer, once.
func (n *Node) answer(c *memberCall, err error) {
	n.mem.mu.Lock()
	defer n.mem.mu.Unlock()
	if !c.answered {
		c.answered, c.err = true, err
		close(c.done)
	}
}

// callGone reports whether c was answered or abandoned: the loop drops it.
func (n *Node) callGone(c *memberCall) bool {
	n.mem.mu.Lock()
	defer n.mem.mu.Unlock()
	return c.answered || c.abandoned
}

// memberState is the node's side of membership: requests from the public calls, what the
// loop does with them, and whether this node was removed.
type memberState struct {
	mu        sync.Mutex
	addrs     []Peer             // address changes for the loop
	confs     []*confRequest     // changes for the loop
	transfers []*transferRequest // leadership transfers for the loop

	// loop only.
	active        []*confRequest
	activeTr      []*transferRequest
	confSeq       uint64 // the last entry ID given to a change (confIDs)
	loggedRemove  bool
	loggedRefusal bool
	bal           balancer
	retiring      map[string]uint64 // removed members, and the tick at which they are dropped
	retired       map[string]bool   // removed members, dropped from the outbox and transport

	removed atomic.Bool // removed from every partition it hosted
}

// partitionMembership is what a partition keeps of its membership.
type partitionMembership struct {
	published membership  // under the partition's mu: the configuration in effect
	committed membership  // loop only: the latest committed configuration seen
	wasMember bool        // loop only: this node was a member in a committed configuration
	removed   atomic.Bool // this node is no longer a member: it takes no more part
}

// confRequest is one membership change of one partition asked of this node.
type confRequest struct {
	p  *partition
	cc confChange

	// loop only.
	id       uint64 // entry ID, given when first proposed or forwarded
	stage    confStage
	leader   string // forwarded to
	term     uint64 // the leader's term when proposed or forwarded
	index    uint64 // the entry's index when proposed here
	nextTry  uint64 // tick before which a queued request waits
	deadline uint64 // tick at which a proposed or forwarded request is tried again

	memberCall
}

type confStage uint8

const (
	confQueued confStage = iota
	confProposed
	confForwarded
)

// confIDs: the entry IDs of membership changes are a stream of their own, with an
// incarnation apart from the proposals' (see nextIDs), so that the leader, which takes a
// node's forwards per incarnation in increasing order (partition.firstForward), never takes
// a change for a copy of a proposal sent before it, or the reverse.
func (n *Node) nextConfID() uint64 {
	if n.mem.confSeq == 0 {
		inc := idIncarnation(n.idSeq.Load()) ^ 1
		if inc == 0 {
			inc = 2
		}
		n.mem.confSeq = inc << idSeqBits
	}
	n.mem.confSeq++
	return n.mem.confSeq
}

// runMembership is the loop's turn for membership: address changes, change requests and
// transfers, and on ticks the address book's gossip and the leader balancer.
func (n *Node) runMembership(ticked bool) {
	n.mem.mu.Lock()
	addrs, confs, transfers := n.mem.addrs, n.mem.confs, n.mem.transfers
	n.mem.addrs, n.mem.confs, n.mem.transfers = nil, nil, nil
	n.mem.mu.Unlock()
	for _, a := range addrs {
		n.setAddr(a.ID, a.Addr)
	}
	n.mem.active = append(n.mem.active, confs...)
	n.mem.activeTr = append(n.mem.activeTr, transfers...)
	if len(n.mem.active) > 0 {
		n.mem.active = slices.DeleteFunc(n.mem.active, func(r *confRequest) bool { return !n.stepConf(r) })
	}
	if len(n.mem.activeTr) > 0 {
		n.stepTransfers()
	}
	if ticked {
		n.retire()
		n.gossipBook()
		if n.now%uint64(n.elTicks) == 0 {
			for _, p := range n.parts {
				n.publishMembers(p)
			}
		}
		n.balance()
	}
}

// stepConf moves a request on; it reports whether the request still waits.
func (n *Node) stepConf(r *confRequest) bool {
	p := r.p
	switch {
	case n.callGone(&r.memberCall):
		return false
	case p.mem.removed.Load():
		n.answer(&r.memberCall, fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, ErrRemoved))
		return false
	case r.stage != confQueued && n.now >= r.deadline:
		// No outcome in time: ask again, under a fresh ID (a copy of the old one would be
		// dropped by a leader that took it). Should both be taken, the second changes
		// nothing: the leader appends a change already in effect unchanged.
		r.stage, r.nextTry, r.id = confQueued, n.now, 0
	}
	if r.stage != confQueued || n.now < r.nextTry {
		return true
	}
	if satisfied(p.raft.membership(), r.cc) {
		n.publishMembers(p)
		n.answer(&r.memberCall, nil)
		return false
	}
	st := p.raft.status()
	if r.id == 0 {
		r.id = n.nextConfID()
	}
	switch {
	case st.role == roleLeader:
		n.activate(p) // its ready must be visited even if it was quiesced
		index, err := p.raft.proposeConfChange(r.cc, r.id)
		if err != nil {
			return n.confRefused(r, fmt.Errorf("%w (%v)", confRefusalErr(confRefusalCode(err)), err))
		}
		r.stage, r.term, r.index, r.deadline = confProposed, st.term, index, n.now+uint64(confRetryTimeouts*n.elTicks)
	case st.leader == "" || st.leader == n.cfg.NodeID:
		r.nextTry = n.now + 1 // no leader yet
	default:
		n.out.add(Message{Type: MsgForward, Partition: p.id, From: n.cfg.NodeID, To: st.leader, Term: st.term,
			Entries: []Entry{{Kind: entryConfig, ID: r.id, Data: encodeConfChange(r.cc)}}})
		r.stage, r.leader, r.term, r.deadline = confForwarded, st.leader, st.term, n.now+uint64(confRetryTimeouts*n.elTicks)
	}
	return true
}

// confRetryTimeouts is how many election timeouts a proposed or forwarded change waits for
// its outcome before it is asked again.
const confRetryTimeouts = 2

// satisfied reports whether configuration m already is what cc asks for.
func satisfied(m membership, cc confChange) bool {
	switch cc.Type {
	case confAddLearner:
		return m.isMember(cc.Node)
	case confAddVoter:
		return m.isVoter(cc.Node)
	case confRemove:
		return !m.isMember(cc.Node)
	}
	return false
}

// confRefused handles the leader's refusal of a change (err): "not now" is tried again at
// the next heartbeat; anything else answers the caller. It reports whether r still waits.
func (n *Node) confRefused(r *confRequest, err error) bool {
	if retryableConf(err) {
		n.mem.mu.Lock()
		r.lastErr = err
		n.mem.mu.Unlock()
		// A fresh ID: the leader took the refused one's ID for its term (a copy of it is
		// never taken), and the refusal is definite, so nothing of it is in any log.
		r.stage, r.nextTry, r.id = confQueued, n.now+uint64(n.hbTicks), 0
		return true
	}
	n.answer(&r.memberCall, fmt.Errorf("kommander: node %s: partition %d: %s %s refused: %w", n.cfg.NodeID, r.p.id, r.cc.Type, r.cc.Node, err))
	return false
}

// retryableConf reports whether a refusal means "not now".
func retryableConf(err error) bool {
	return errors.Is(err, ErrMembershipChange) || errors.Is(err, errConfChangePending) ||
		errors.Is(err, errTransferring) || errors.Is(err, errLearnerBehind) ||
		errors.Is(err, errNotLeader) || errors.Is(err, ErrNotLeader) || errors.Is(err, errProposalDropped)
}

// Codes of a refused change, in the Type of the MsgForwardRefused entry: the refusal the
// leader's core gave (match) and the error the sender acts on.
var confRefusals = []struct {
	code       string
	match, err error
}{
	{"pending", errConfChangePending, fmt.Errorf("%w: %w", ErrMembershipChange, errConfChangePending)},
	{"transferring", errTransferring, fmt.Errorf("%w: %w", ErrMembershipChange, errTransferring)},
	{"learner-behind", errLearnerBehind, errLearnerBehind},
	{"last-voter", errRemoveLastVoter, fmt.Errorf("%w: %w", ErrInvalidConfig, errRemoveLastVoter)},
	{"not-leader", errNotLeader, errNotLeader},
	{"dropped", errProposalDropped, errProposalDropped},
	{"invalid", errInvalidConfChange, fmt.Errorf("%w: %w", ErrInvalidConfig, errInvalidConfChange)},
}

// confRefusalCode returns the code of a refusal.
func confRefusalCode(err error) string {
	for _, r := range confRefusals {
		if errors.Is(err, r.match) {
			return r.code
		}
	}
	return "refused"
}

// confRefusalErr returns the error of a code.
func confRefusalErr(code string) error {
	for _, r := range confRefusals {
		if r.code == code {
			return r.err
		}
	}
	return fmt.Errorf("%w: the leader refused the change (%.64q)", ErrInvalidConfig, code)
}

// isConfForward reports whether a MsgForward or MsgForwardRefused is about a membership
// change.
func isConfForward(m *Message) bool {
	return len(m.Entries) == 1 && m.Entries[0].Kind == entryConfig
}

// receiveConfForward takes a change forwarded to this node as the leader of m.Term, or
// tells the sender why not. Like a forwarded proposal (forwarder.receive), it is taken at
// most once, and only by the leader of its term; and only from a member of the partition.
func (n *Node) receiveConfForward(p *partition, m *Message) {
	if !p.leadsTerm(m.Term) || !p.raft.membership().isMember(m.From) || !p.firstForward(m.From, m.Term, m.Entries) {
		n.metrics.dropped.Add(1)
		return
	}
	e := m.Entries[0]
	cc, err := decodeConfChange(e.Data)
	if err == nil {
		_, err = p.raft.proposeConfChange(cc, e.ID)
	}
	if err != nil {
		n.log.Debug("refused a forwarded membership change", "partition", p.id, "from", m.From, "err", err)
		n.out.add(Message{Type: MsgForwardRefused, Partition: p.id, From: n.cfg.NodeID, To: m.From, Term: m.Term,
			Entries: []Entry{{Kind: entryConfig, ID: e.ID, Type: confRefusalCode(err)}}})
	}
}

// confForwardRefused takes the leader's refusal of a change this node forwarded.
func (n *Node) confForwardRefused(p *partition, m *Message) {
	e := m.Entries[0]
	for _, r := range n.mem.active {
		if r.p == p && r.id == e.ID && r.stage == confForwarded && r.leader == m.From && r.term == m.Term {
			if !n.confRefused(r, confRefusalErr(e.Type)) {
				n.mem.active = slices.DeleteFunc(n.mem.active, func(x *confRequest) bool { return x == r })
			}
			return
		}
	}
}

// configsCommitted looks at the committed entries a pass hands to the applier: a
// configuration answers the change that asked for it and may add or remove members. Loop
// only.
func (n *Node) configsCommitted(p *partition, ents []Entry) {
	for i := range ents {
		if ents[i].Kind == entryConfig {
			n.configCommitted(p, &ents[i])
		}
	}
}

// configCommitted acts on one committed configuration entry of partition p.
func (n *Node) configCommitted(p *partition, e *Entry) {
	m, err := decodeMembership(e.Data)
	if err != nil {
		n.log.Error("a committed configuration entry does not decode", "partition", p.id, "index", e.Index, "err", err)
		return
	}
	if err := n.inc.reconfigured(); err != nil {
		n.log.Warn("could not record that the membership changed", "err", err)
	}
	prev := p.mem.committed
	p.mem.committed = m
	for _, id := range append(slices.Clone(m.Voters), m.Learners...) {
		n.inc.addPeer(id)
		delete(n.mem.retiring, id)
		if n.mem.retired[id] {
			delete(n.mem.retired, id) // added again
			n.admitPeer(id)
		}
	}
	st := p.raft.status()
	for _, id := range append(slices.Clone(prev.Voters), prev.Learners...) {
		if m.isMember(id) || id == n.cfg.NodeID {
			continue
		}
		if st.role == roleLeader {
			// The removed node gets no more appends: tell it, or it never learns.
			n.out.add(Message{Type: msgRemoved, Partition: p.id, From: n.cfg.NodeID, To: id, Term: st.term, Index: e.Index})
		}
		if n.mem.retiring == nil {
			n.mem.retiring = make(map[string]uint64)
		}
		n.mem.retiring[id] = n.now + uint64(n.elTicks)
		if !n.memberAnywhere(id) {
			// At once, not when it is retired: a new data directory of its ID may be on
			// its way to replace it (S36).
			if err := n.inc.forget(id); err != nil {
				n.log.Warn("could not forget a removed member's incarnation", "member", id, "err", err)
			}
		}
	}
	switch {
	case m.isMember(n.cfg.NodeID):
		p.mem.wasMember = true
		p.mem.removed.Store(false)
	case p.mem.wasMember:
		p.mem.removed.Store(true)
		p.failAll(fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, ErrRemoved))
		n.checkRemoved()
	}
	// Published before the caller is answered: Members, called once the change returns,
	// shows it.
	n.publishMembers(p)
	for _, r := range n.mem.active {
		switch {
		case r.p != p || r.id == 0:
		case r.id == e.ID:
			n.answer(&r.memberCall, nil)
		case r.stage == confProposed && r.index == e.Index:
			r.stage, r.nextTry = confQueued, n.now // another leader's entry took its place
		}
	}
}

// retire drops from the address book and the transport the members removed from a
// partition an election timeout ago that are no member of any other, so that their
// traffic is refused from then on; the delay lets the notice of their removal reach them.
// It runs on every tick.
func (n *Node) retire() {
	for id, at := range n.mem.retiring {
		if n.now < at {
			continue
		}
		delete(n.mem.retiring, id)
		if n.memberAnywhere(id) {
			continue
		}
		n.log.Info("member removed from the cluster; its traffic is refused from now on", "member", id)
		n.retirePeer(id)
	}
}

// retirePeer drops a member removed from the cluster from the outbox and the transport:
// its traffic is refused from now on. Its address stays in the book, should it be added
// again.
func (n *Node) retirePeer(id string) {
	if n.mem.retired == nil {
		n.mem.retired = make(map[string]bool)
	}
	n.mem.retired[id] = true
	n.out.removePeer(id)
	if n.transport != nil {
		n.transport.RemovePeer(id)
	}
}

// joinRefused reports whether a member's refusal of this node's incarnation (err) is one
// a joining node waits out: a node that replaces a removed one under its ID is refused by
// the members that have not seen the removal committed yet, and accepted once they have
// (they forget a removed member's incarnation). It stays passive meanwhile (S36).
func (n *Node) joinRefused(err error) bool {
	if !n.cfg.Join || !errors.Is(err, ErrDataLost) {
		return false
	}
	if !n.mem.loggedRefusal {
		n.mem.loggedRefusal = true
		n.log.Warn("a member knows this node ID by another data directory; waiting for the old one to be removed (RemoveNode) before taking part", "err", err)
	}
	return true
}

// removedNotice takes a leader's notice that this node was removed from partition p
// (msgRemoved): from the leader this node follows, in its term or a later one.
func (n *Node) removedNotice(p *partition, m *Message) {
	st := p.raft.status()
	if m.From != st.leader || m.Term < st.term || !p.mem.wasMember || p.mem.removed.Load() {
		return
	}
	n.log.Info("removed from a partition", "partition", p.id, "by", m.From, "index", m.Index)
	p.mem.removed.Store(true)
	p.failAll(fmt.Errorf("kommander: node %s: partition %d: %w", n.cfg.NodeID, p.id, ErrRemoved))
	n.checkRemoved()
}

// memberAnywhere reports whether id is a member of any partition's configuration in
// effect on this node.
func (n *Node) memberAnywhere(id string) bool {
	for _, p := range n.parts {
		if p.raft.membership().isMember(id) {
			return true
		}
	}
	return false
}

// checkRemoved makes the node stop once it was removed from every partition.
func (n *Node) checkRemoved() {
	for _, p := range n.parts {
		if !p.mem.removed.Load() {
			return
		}
	}
	if n.mem.removed.Swap(true) {
		return
	}
	if !n.mem.loggedRemove {
		n.mem.loggedRemove = true
		n.log.Warn("this node was removed from the cluster; it takes no more part in it")
	}
	n.failAll(fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrRemoved))
	n.markDone()
}

// partitionVoters returns the voters a partition starts with when its log and snapshot
// hold no configuration: the bootstrap members, or none for a node that joins a running
// cluster (it waits to be added).
func partitionVoters(cfg Config, voters []string) []string {
	if cfg.Join {
		return nil
	}
	return voters
}

// initMembers sets what a partition knows of its membership at start.
func (n *Node) initMembers(p *partition) {
	m := p.raft.membership()
	p.mem.committed = m
	p.mem.wasMember = m.isMember(n.cfg.NodeID)
	p.mem.published = m
}

// followMembers sets, at start, who this node talks to from the configurations restored
// from its log: a node of the address book that no configuration names was removed (its
// traffic is refused), and every member is greeted (node_incarnation.go). A node that
// waits to join, with no configuration at all yet, keeps its whole address book.
func (n *Node) followMembers() {
	if n.place.Load().partial() {
		// A node hosts only some partitions: the members its configurations name are not
		// all there are; the address book alone says who was removed.
		return
	}
	members := make(map[string]bool)
	for _, p := range n.parts {
		m := p.mem.committed
		for _, id := range append(slices.Clone(m.Voters), m.Learners...) {
			members[id] = true
		}
	}
	if len(members) == 0 {
		return
	}
	for id := range members {
		n.inc.addPeer(id)
	}
	for _, id := range slices.Clone(n.out.peers) {
		if !members[id] {
			n.retirePeer(id)
		}
	}
}

// publishMembers copies the configuration in effect for Members.
func (n *Node) publishMembers(p *partition) {
	m := p.raft.membership()
	p.mu.Lock()
	p.mem.published = m
	p.mu.Unlock()
}

// removedErr returns ErrRemoved (wrapped) once the node was removed from the cluster.
func (n *Node) removedErr() error {
	if n.mem.removed.Load() {
		return fmt.Errorf("kommander: node %s: %w", n.cfg.NodeID, ErrRemoved)
	}
	return nil
}
