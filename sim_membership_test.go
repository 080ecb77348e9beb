package kommander

import (
	"errors"
	"slices"
	"testing"
)

// Membership changes and leadership transfers in the randomized simulation (S27): among
// the other events, a group's leader adds a spare node as a learner, promotes a learner,
// removes a member (itself included) or transfers its leadership, while messages are lost,
// nodes crash and the network splits. Every safety check of sim_test.go stays on; the
// check that a committed entry cannot be lost counts votes the way a candidate would, in
// its own configuration and among voters whose configuration lists it.
//
// A replica whose removal committed is destroyed at once (wiped, restarted with no
// configuration) and its node is never added to that group again, as a node does when it
// learns it was removed: a removed replica left running with an old configuration could
// otherwise gather the votes of other removed replicas and lead a group of its own.

// startConf is the configuration replica (i, g) starts from: its log's, after a
// compaction or an install (the group's bootstrap one when no configuration entry was
// compacted); with nothing compacted, the bootstrap one for the first nodes, none for a
// spare or a destroyed replica.
func (s *sim) startConf(i, g int) membership {
	l := s.nodes[i].groups[g].log
	if l.offset > 0 {
		return l.startConf(s.boot())
	}
	if i >= s.p.nodes || s.removed[g][s.nodes[i].id] {
		return membership{}
	}
	return s.boot()
}

// confView is the configuration replica (x, g) is in: its memory's when up, what it would
// restart with when down.
func (s *sim) confView(x, g int) membership {
	sg := s.nodes[x].groups[g]
	if !s.nodes[x].down {
		return sg.r.membership()
	}
	m := s.startConf(x, g)
	for _, e := range sg.log.ents {
		if e.Kind == entryConfig {
			if c, err := decodeMembership(e.Data); err == nil {
				m = c
			}
		}
	}
	return m
}

// confCommitted records a committed configuration entry of group g.
func (s *sim) confCommitted(g int, e Entry) {
	m, err := decodeMembership(e.Data)
	if err != nil {
		s.failf("group %d: committed configuration entry %d does not decode: %v", g, e.Index, err)
		return
	}
	prev := s.conf[g]
	if n := len(m.Voters); n == 0 || n < len(prev.Voters)-1 || n > len(prev.Voters)+1 {
		s.failf("group %d: committed configuration %v at %d after %v: not a single-server change", g, m, e.Index, prev)
	}
	for _, id := range append(slices.Clone(prev.Voters), prev.Learners...) {
		if !m.isMember(id) {
			s.removed[g][id] = true
		}
	}
	s.conf[g] = m
}

// destroyRemoved wipes the replicas whose removal committed and restarts them empty.
func (s *sim) destroyRemoved() {
	for g := range s.p.groups {
		for i, n := range s.nodes {
			sg := n.groups[g]
			if !s.removed[g][n.id] || (sg.log.offset == 0 && len(sg.log.ents) == 0 && sg.log.hs.IsZero()) {
				continue
			}
			s.tracef("destroy %s g%d", n.id, g)
			*sg = simGroup{log: &memLog{}}
			if !n.down {
				s.startGroup(i, g)
			}
		}
	}
}

// confEvent makes the leader of a random group change its membership or transfer its
// leadership.
func (s *sim) confEvent() int {
	g := s.rng.IntN(s.p.groups)
	lead := -1
	for _, i := range s.live() {
		r := s.nodes[i].groups[g].r
		if r.role == roleLeader && (lead < 0 || r.term > s.nodes[lead].groups[g].r.term) {
			lead = i
		}
	}
	if lead < 0 {
		return -1
	}
	r := s.nodes[lead].groups[g].r
	m := r.membership()
	var cc confChange
	switch x := s.rng.IntN(10); {
	case x < 3:
		var cands []string
		for _, n := range s.nodes {
			if !m.isMember(n.id) && !s.removed[g][n.id] {
				cands = append(cands, n.id)
			}
		}
		if len(cands) == 0 {
			return -1
		}
		cc = confChange{confAddLearner, cands[s.rng.IntN(len(cands))]}
	case x < 6:
		if len(m.Learners) == 0 || s.p.keepLearners {
			return -1
		}
		cc = confChange{confAddVoter, m.Learners[s.rng.IntN(len(m.Learners))]}
	case x < 8:
		all := append(slices.Clone(m.Voters), m.Learners...)
		cc = confChange{confRemove, all[s.rng.IntN(len(all))]}
	default:
		to := m.Voters[s.rng.IntN(len(m.Voters))]
		s.tracef("transfer %s g%d -> %s", s.nodes[lead].id, g, to)
		switch err := r.transferLeadership(to); {
		case err == nil:
			s.changes++
		case !errors.Is(err, errTransferring) && !errors.Is(err, errInvalidProposal):
			s.failf("%s group %d: transfer to %s: %v", s.nodes[lead].id, g, to, err)
		}
		s.process(lead, g)
		return lead
	}
	s.nextID++
	s.tracef("%v %s on %s g%d", cc.Type, cc.Node, s.nodes[lead].id, g)
	_, err := r.proposeConfChange(cc, s.nextID)
	if err != nil {
		s.tracef("  refused: %v", err)
	}
	switch {
	case err == nil:
		s.changes++
	case errors.Is(err, errConfChangePending), errors.Is(err, errLearnerBehind), errors.Is(err, errTransferring),
		errors.Is(err, errRemoveLastVoter), errors.Is(err, errProposalDropped):
	default:
		s.failf("%s group %d: %v %s: %v", s.nodes[lead].id, g, cc.Type, cc.Node, err)
	}
	s.process(lead, g)
	return lead
}

// withMembership turns membership changes and transfers on, with spare nodes to add.
func withMembership(p *simParams) { p.spares, p.confP = 3, 0.1 }

// TestSimMembershipThreeNodes runs the simulation from 3 voters with 3 spare nodes,
// membership changes (the leader's own removal included) and leadership transfers
// (S27, S5).
func TestSimMembershipThreeNodes(t *testing.T) {
	runSims(t, "TestSimMembershipThreeNodes", 3, 500, withMembership)
}

// TestSimMembershipFiveNodes runs it from 5 voters.
func TestSimMembershipFiveNodes(t *testing.T) {
	runSims(t, "TestSimMembershipFiveNodes", 5, 300, withMembership)
}

// bugTwoConfChanges plants (g): the leader proposes a change while another is in flight,
// or before its no-op commits; two removals then leave a leader that commits alone while
// the old majority elects another.
var bugTwoConfChanges = &plantedBug{"(g) propose a membership change while another is in flight",
	func(rs *safetyRules) { rs.confChangeAllowed = func(*raft) bool { return true } }}

// bugLearnerVotes plants (h): a candidate counts the grants of learners (and of nodes
// outside its configuration) toward its election; it can then win without a quorum of
// voters, lacking entries they committed.
var bugLearnerVotes = &plantedBug{"(h) count a learner's vote",
	func(rs *safetyRules) { rs.voteCounts = func(*raft, string) bool { return true } }}

// TestSimFindsLearnerVotesCounted plants bug (h) (S5, S27), with learners never promoted,
// so that several are there at once.
func TestSimFindsLearnerVotesCounted(t *testing.T) {
	findPlantedBug(t, 3, 1000, bugLearnerVotes, withMembership, func(p *simParams) { p.safetyOnly, p.keepLearners = true, true })
}

// TestSimFindsTwoConfChangesInFlight plants bug (g) (S27). Only a safety violation counts:
// the bug also makes configurations that the liveness phase cannot finish with.
func TestSimFindsTwoConfChangesInFlight(t *testing.T) {
	findPlantedBug(t, 3, 1000, bugTwoConfChanges, withMembership, func(p *simParams) { p.safetyOnly = true })
}
