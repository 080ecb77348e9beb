package kommander

// This file is membership through the log (thesis §4.1): single-server changes, one in
// flight, carried by entryConfig entries.
//
// Single-server changes, not joint consensus: adding or removing one voter at a time is
// all an operator needs (add then remove to replace or move a replica), every majority of
// the old set overlaps every majority of the new one, and so the configuration in effect is
// simply the latest one in the log, with no intermediate joint state to persist or recover.
//
// The rules:
//   - A configuration takes effect on a node as soon as it is appended to its log, whether
//     committed or not (thesis §4.1); truncating the entry reverts to the one before. The
//     configuration in effect is the latest entryConfig in the log, else the snapshot's,
//     else the bootstrap one (confHistory).
//   - One change in flight: the leader refuses a change while its log holds a configuration
//     entry beyond its commit index, and until it has committed an entry of its own term
//     (the single-server bug, Ongaro 2015: without that, a change of a new leader and an
//     uncommitted one of its predecessor could both take effect on disjoint majorities).
//   - Learners receive the log and snapshots but never vote, never count for a quorum or a
//     commit and never campaign. A voter is added only by promoting a learner, once it is
//     caught up (thesis §4.2.1: a new server that votes before it has the log can stall
//     commits), so that a change never waits on a server far behind.
//   - A node whose configuration does not list it as a voter never campaigns, and nobody
//     takes a (pre-)vote request from a node that is not a voter in its own configuration
//     (thesis §4.2.3: a removed server must not disrupt the cluster with its terms).
//   - A removed leader goes on leading, without counting itself, until the change that
//     removed it commits, then steps down (thesis §4.2.2).

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
)

// errConfChangePending refuses a membership change while another one is in flight, or
// before the leader has committed an entry of its own term. The caller may retry.
var errConfChangePending = errors.New("kommander: a membership change is already in flight")

// errRemoveLastVoter refuses the removal of the only voter of a group.
var errRemoveLastVoter = errors.New("kommander: cannot remove the last voter")

// errLearnerBehind refuses the promotion of a learner that has not caught up with the
// leader's log yet. The caller may retry.
var errLearnerBehind = errors.New("kommander: learner too far behind to be promoted")

// errInvalidConfChange refuses a membership change that makes no sense in the
// configuration in effect (adding a voter that is not a learner, demoting a voter).
var errInvalidConfChange = errors.New("kommander: invalid membership change")

// Bounds of a decoded membership or change: they keep a hostile entry or message from
// making the decoder allocate beyond its own size or loop for long.
const (
	confEncodingVersion = 1
	maxMembers          = 1 << 10 // voters and learners of one configuration
	maxMemberID         = 1 << 10 // bytes of one node ID
)

// defaultMaxLearnerLag is how far behind the leader's last index a learner may be and still
// be promoted, when raftConfig.maxLearnerLag is zero.
const defaultMaxLearnerLag = 1000

// membership is a group's configuration: who votes, and who only receives the log.
type membership struct {
	Voters   []string // in configured order
	Learners []string
}

// isVoter reports whether id is a voter.
func (m membership) isVoter(id string) bool { return slices.Contains(m.Voters, id) }

// isMember reports whether id is a voter or a learner.
func (m membership) isMember(id string) bool {
	return m.isVoter(id) || slices.Contains(m.Learners, id)
}

// check refuses a configuration with an empty or over-long ID, an ID listed twice (as
// voter, learner or both), or too many members.
func (m membership) check() error {
	if n := len(m.Voters) + len(m.Learners); n > maxMembers {
		return fmt.Errorf("%d members, at most %d", n, maxMembers)
	}
	seen := make(map[string]bool, len(m.Voters)+len(m.Learners))
	for _, ids := range [2][]string{m.Voters, m.Learners} {
		for _, id := range ids {
			switch {
			case id == "":
				return errors.New("empty member ID")
			case len(id) > maxMemberID:
				return fmt.Errorf("member ID of %d bytes, at most %d", len(id), maxMemberID)
			case seen[id]:
				return fmt.Errorf("member %q listed twice", id)
			}
			seen[id] = true
		}
	}
	return nil
}

// clone returns a copy that shares no slice with m.
func (m membership) clone() membership {
	return membership{Voters: slices.Clone(m.Voters), Learners: slices.Clone(m.Learners)}
}

func (m membership) String() string {
	return fmt.Sprintf("voters %v learners %v", m.Voters, m.Learners)
}

// encodeMembership returns the Data of an entryConfig entry for m: a version byte, then
// the voters and the learners, each a u16 count of (u16 length, bytes) IDs, little-endian.
func encodeMembership(m membership) []byte {
	n := 1 + 4
	for _, ids := range [2][]string{m.Voters, m.Learners} {
		for _, id := range ids {
			n += 2 + len(id)
		}
	}
	b := make([]byte, 0, n)
	b = append(b, confEncodingVersion)
	for _, ids := range [2][]string{m.Voters, m.Learners} {
		b = binary.LittleEndian.AppendUint16(b, uint16(len(ids)))
		for _, id := range ids {
			b = binary.LittleEndian.AppendUint16(b, uint16(len(id)))
			b = append(b, id...)
		}
	}
	return b
}

// decodeMembership decodes what encodeMembership wrote. b may be hostile: it is read with
// the wire decoder, which checks every count and length against the bytes left before
// anything is allocated; the whole input must be consumed, and the result must pass check.
func decodeMembership(b []byte) (membership, error) {
	d := newConfDecoder(b)
	v := d.u8("version")
	var m membership
	m.Voters = d.members("voter", maxMembers)
	m.Learners = d.members("learner", maxMembers-len(m.Voters))
	if err := d.end(); err != nil {
		return membership{}, fmt.Errorf("%w: membership: %w", errInvalidConfChange, err)
	}
	if v != confEncodingVersion {
		return membership{}, fmt.Errorf("%w: membership encoding version %d", errInvalidConfChange, v)
	}
	if err := m.check(); err != nil {
		return membership{}, fmt.Errorf("%w: membership: %w", errInvalidConfChange, err)
	}
	return m, nil
}

// confChangeType says what a membership change does.
type confChangeType uint8

const (
	confAddLearner confChangeType = iota + 1
	confAddVoter                  // promotes a learner
	confRemove                    // removes a voter or a learner
)

func (t confChangeType) String() string {
	switch t {
	case confAddLearner:
		return "add learner"
	case confAddVoter:
		return "add voter"
	case confRemove:
		return "remove"
	}
	return fmt.Sprintf("confChangeType(%d)", uint8(t))
}

// confChange is one single-server membership change.
type confChange struct {
	Type confChangeType
	Node string
}

// encodeConfChange returns cc as bytes, for forwarding a change to the leader: a version
// byte, the type, and the node's ID as (u16 length, bytes).
func encodeConfChange(cc confChange) []byte {
	b := make([]byte, 0, 4+len(cc.Node))
	b = append(b, confEncodingVersion, byte(cc.Type))
	b = binary.LittleEndian.AppendUint16(b, uint16(len(cc.Node)))
	return append(b, cc.Node...)
}

// decodeConfChange decodes what encodeConfChange wrote; b may be hostile.
func decodeConfChange(b []byte) (confChange, error) {
	d := newConfDecoder(b)
	v := d.u8("version")
	cc := confChange{Type: confChangeType(d.u8("change type"))}
	cc.Node = d.string16("node ID length")
	switch err := d.end(); {
	case err != nil:
		return confChange{}, fmt.Errorf("%w: change: %w", errInvalidConfChange, err)
	case v != confEncodingVersion:
		return confChange{}, fmt.Errorf("%w: change encoding version %d", errInvalidConfChange, v)
	case cc.Type < confAddLearner || cc.Type > confRemove:
		return confChange{}, fmt.Errorf("%w: change type %d", errInvalidConfChange, cc.Type)
	case cc.Node == "":
		return confChange{}, fmt.Errorf("%w: change of an empty node ID", errInvalidConfChange)
	}
	return cc, nil
}

// confLimits bounds the node IDs the decoders of this file accept.
var confLimits = codecLimits{maxString: maxMemberID, maxVoters: maxMembers}.withDefaults()

// newConfDecoder returns the wire decoder (codec.go) over b, with this file's limits.
func newConfDecoder(b []byte) *decoder { return &decoder{b: b, lim: &confLimits} }

// end reports the first failure, or bytes left over.
func (d *decoder) end() error {
	if d.err == nil && d.off != len(d.b) {
		d.fail("%d trailing bytes", len(d.b)-d.off)
	}
	return d.err
}

// confAt is the configuration that an entry at index put in effect.
type confAt struct {
	index uint64
	m     membership
}

// confHistory is the configurations of the log, oldest first: the first is the one in
// effect at the start of the log (a snapshot's or the bootstrap one) or the latest that is
// committed, each later one that of a configuration entry beyond it. The last is in effect.
// Only the uncommitted ones and the newest committed one are kept: a truncation never goes
// below the commit index.
type confHistory []confAt

func (h confHistory) current() confAt { return h[len(h)-1] }

// membership returns the configuration in effect.
func (r *raft) membership() membership { return r.confs.current().m }

// membershipAt returns the configuration as of index: that of the latest configuration
// entry at or below it. Exact for an index at or above the commit index, or, right after
// newRaft, at or above the applied index.
func (r *raft) membershipAt(index uint64) membership {
	for i := len(r.confs) - 1; i > 0; i-- {
		if r.confs[i].index <= index {
			return r.confs[i].m
		}
	}
	return r.confs[0].m
}

// pendingConfIndex returns the index of the latest configuration entry, or 0 when it is
// committed (no change in flight).
func (r *raft) pendingConfIndex() uint64 {
	if c := r.confs.current(); c.index > r.log.committed {
		return c.index
	}
	return 0
}

// memberMatch returns the leader's match index for member id; ok is false when this node
// does not lead or id is not a member.
func (r *raft) memberMatch(id string) (match uint64, ok bool) {
	if r.role != roleLeader {
		return 0, false
	}
	pr := r.tracker.progress(id)
	if pr == nil {
		return 0, false
	}
	return pr.match, true // its own: what is durable here
}

// isVoter reports whether this node votes in the configuration in effect.
func (r *raft) isVoter() bool { return r.tracker.self.voter }

// promotable reports whether this node may campaign: it votes in the configuration in
// effect, or in one that an uncommitted configuration entry may yet replace (the newest
// committed one it knows, and those after it).
//
// A leader that crashed holding its own removal uncommitted must still campaign: a voter
// that lacks the removal may be unable to win (the removed node's longer log denies it the
// vote it needs), and then only the removed node can finish the change (S27). It counts the
// votes in the configuration in effect, as every candidate does, and if it wins, leads as
// a removed leader until the removal commits (stepDownIfRemoved); once it knows the removal
// committed, it never campaigns again.
func (r *raft) promotable() bool {
	for i := len(r.confs) - 1; i >= 0; i-- {
		if r.confs[i].m.isVoter(r.id) {
			return true
		}
		if r.confs[i].index <= r.log.committed {
			break
		}
	}
	return false
}

// proposeConfChange appends a configuration entry for cc (Data encodeMembership of the new
// configuration, ID id) on the leader and returns its index. A change already in effect is
// appended unchanged, so that a retried request has an index to wait for.
func (r *raft) proposeConfChange(cc confChange, id uint64) (uint64, error) {
	if r.role != roleLeader {
		return 0, &notLeaderError{Leader: r.lead, Term: r.term}
	}
	if r.transfer.target != "" {
		return 0, fmt.Errorf("%w: to %s", errTransferring, r.transfer.target)
	}
	if !r.rules.confChangeAllowed(r) {
		return 0, fmt.Errorf("%w (latest configuration entry %d, commit %d)", errConfChangePending, r.confs.current().index, r.log.committed)
	}
	next, err := r.changedMembership(cc)
	if err != nil {
		return 0, err
	}
	ents := []Entry{{Kind: entryConfig, ID: id, Data: encodeMembership(next)}}
	if r.log.unstableBytes > 0 && r.log.unstableBytes+ents[0].size() > r.maxUnstableBytes {
		return 0, errProposalDropped
	}
	r.appendLocal(ents)
	return ents[0].Index, nil
}

// changedMembership returns the configuration in effect changed by cc.
func (r *raft) changedMembership(cc confChange) (membership, error) {
	if cc.Node == "" || len(cc.Node) > maxMemberID {
		return membership{}, fmt.Errorf("%w: node ID %q", errInvalidConfChange, cc.Node)
	}
	cur := r.membership()
	next := cur.clone()
	isVoter, isLearner := cur.isVoter(cc.Node), slices.Contains(cur.Learners, cc.Node)
	switch cc.Type {
	case confAddLearner:
		if isVoter {
			return membership{}, fmt.Errorf("%w: %s is a voter already", errInvalidConfChange, cc.Node)
		}
		if !isLearner {
			if len(cur.Voters)+len(cur.Learners) >= maxMembers {
				return membership{}, fmt.Errorf("%w: %d members already", errInvalidConfChange, maxMembers)
			}
			next.Learners = append(next.Learners, cc.Node)
		}
	case confAddVoter:
		switch {
		case isVoter:
		case !isLearner:
			// A voter that does not have the log would count toward commits at once and
			// could stall them until it catches up (thesis §4.2.1, S27).
			return membership{}, fmt.Errorf("%w: %s is not a learner: add it as a learner first", errInvalidConfChange, cc.Node)
		default:
			// Caught up, and holding the configuration in effect, so that it knows the
			// voters whose vote requests it may have to grant before it learns of its
			// promotion (see admits).
			pr := r.tracker.progress(cc.Node)
			if last, conf := r.log.lastIndex(), r.confs.current().index; pr.match+r.maxLearnerLag < last || pr.match < conf {
				return membership{}, fmt.Errorf("%w: %s matches %d, the log ends at %d (at most %d behind) and the configuration is at %d",
					errLearnerBehind, cc.Node, pr.match, last, r.maxLearnerLag, conf)
			}
			next.Learners = slices.DeleteFunc(next.Learners, func(id string) bool { return id == cc.Node })
			next.Voters = append(next.Voters, cc.Node)
		}
	case confRemove:
		if isVoter && len(cur.Voters) == 1 {
			return membership{}, fmt.Errorf("%w: %s", errRemoveLastVoter, cc.Node)
		}
		next.Voters = slices.DeleteFunc(next.Voters, func(id string) bool { return id == cc.Node })
		next.Learners = slices.DeleteFunc(next.Learners, func(id string) bool { return id == cc.Node })
	default:
		return membership{}, fmt.Errorf("%w: change type %d", errInvalidConfChange, cc.Type)
	}
	return next, nil
}

// logAppended follows the log's configuration after ents were appended to it, replacing
// any suffix from ents[0].Index on: the configurations of truncated entries are forgotten
// (the one before takes effect again), and those of appended configuration entries take
// effect at once (thesis §4.1). Every entryConfig entry that reaches the log was encoded by
// a leader or vetted by checkAppend.
func (r *raft) logAppended(ents []Entry) {
	if len(ents) == 0 {
		return
	}
	changed := false
	for k := ents[0].Index; len(r.confs) > 1 && r.confs.current().index >= k; {
		r.confs = r.confs[:len(r.confs)-1]
		changed = true
	}
	for i := range ents {
		if ents[i].Kind != entryConfig {
			continue
		}
		m, err := decodeMembership(ents[i].Data)
		if err != nil {
			panic(fmt.Sprintf("raft: configuration entry %d in the log does not decode: %v", ents[i].Index, err))
		}
		r.confs = append(r.confs, confAt{index: ents[i].Index, m: m})
		changed = true
	}
	if changed {
		r.pruneConfs(r.log.committed)
		r.applyMembership()
	}
}

// pruneConfs forgets the configurations older than the newest one at or below upTo, a
// committed index.
func (r *raft) pruneConfs(upTo uint64) {
	n := 0
	for n+1 < len(r.confs) && r.confs[n+1].index <= upTo {
		n++
	}
	if n > 0 {
		r.confs = append(r.confs[:0], r.confs[n:]...)
	}
}

// restoreMembership makes m, as of a snapshot at index, the configuration in effect.
func (r *raft) restoreMembership(index uint64, m membership) {
	r.confs = append(r.confs[:0], confAt{index: index, m: m})
	r.applyMembership()
}

// applyMembership puts the configuration in effect into the tracker: members keep their
// progress, new ones start to be probed from the end of the log.
func (r *raft) applyMembership() {
	m := r.membership()
	next := r.log.lastIndex() + 1
	r.tracker.reconfigure(m, r.id, func(id string) *progress {
		return &progress{id: id, next: next, recentActive: true,
			inflight: newInflights(r.maxInflightMsgs, r.maxInflightBytes)}
	})
	if r.role == roleLeader {
		r.appendPending = true // probe the new members at the next flush
	}
	if t := r.transfer.target; t != "" && !m.isVoter(t) {
		r.abortTransfer()
	}
}

// stepDownIfRemoved ends the leadership of a leader that is no longer a voter once the
// configuration that removed it is committed (thesis §4.2.2): until then it had to go on
// replicating that entry, without counting itself.
//
// It hands over at once to a voter that holds its whole log, if one does, as a transfer
// would (raft_transfer.go), so that the group does not wait an election timeout for a
// leader.
func (r *raft) stepDownIfRemoved() {
	if r.role != roleLeader || r.isVoter() || r.pendingConfIndex() != 0 {
		return
	}
	for _, pr := range r.tracker.voterPrs() {
		if pr.match >= r.log.lastIndex() {
			r.send(Message{Type: msgTimeoutNow, To: pr.id, Term: r.term})
			break
		}
	}
	r.becomeFollower(r.term, "")
}

// loadMembership rebuilds the configuration history at start: base is the configuration
// as of the start of the stored log (a snapshot's, or the bootstrap one), then every
// configuration entry in the stored log, read in bounded chunks.
func loadMembership(s logStorage, base membership) (confHistory, error) {
	first, last := s.firstIndex(), s.lastIndex()
	h := confHistory{{index: first - 1, m: base}}
	for lo := first; lo <= last; {
		ents, err := s.entries(lo, last+1, defaultMaxMsgBytes)
		if err != nil {
			return nil, fmt.Errorf("raft: read entries from %d for the configuration: %w", lo, err)
		}
		if len(ents) == 0 {
			return nil, fmt.Errorf("raft: no entries from %d for the configuration", lo)
		}
		for i := range ents {
			if ents[i].Kind != entryConfig {
				continue
			}
			m, err := decodeMembership(ents[i].Data)
			if err != nil {
				return nil, fmt.Errorf("raft: configuration entry %d: %w", ents[i].Index, err)
			}
			h = append(h, confAt{index: ents[i].Index, m: m})
		}
		lo = ents[len(ents)-1].Index + 1
	}
	return h, nil
}
