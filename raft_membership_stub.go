package kommander

// TEMPORARY: the core membership API of the round's contract (§1), stubbed so that the
// node side builds before the core lands; removed when main's raft_config.go and
// raft_transfer.go are merged.

import (
	"encoding/json"
	"errors"
	"slices"
)

type membership struct {
	Voters   []string
	Learners []string
}

func (m membership) isVoter(id string) bool  { return slices.Contains(m.Voters, id) }
func (m membership) isMember(id string) bool { return m.isVoter(id) || slices.Contains(m.Learners, id) }

func encodeMembership(m membership) []byte { b, _ := json.Marshal(m); return b }
func decodeMembership(b []byte) (membership, error) {
	var m membership
	err := json.Unmarshal(b, &m)
	return m, err
}

type confChangeType uint8

const (
	confAddLearner confChangeType = iota + 1
	confAddVoter
	confRemove
)

type confChange struct {
	Type confChangeType
	Node string
}

func encodeConfChange(cc confChange) []byte { return append([]byte{byte(cc.Type)}, cc.Node...) }
func decodeConfChange(b []byte) (confChange, error) {
	if len(b) < 2 {
		return confChange{}, errors.New("short")
	}
	return confChange{Type: confChangeType(b[0]), Node: string(b[1:])}, nil
}

var (
	errConfChangePending = errors.New("kommander: a configuration change is pending")
	errRemoveLastVoter   = errors.New("kommander: cannot remove the last voter")
	errLearnerBehind     = errors.New("kommander: the learner is behind")
	errTransferring      = errors.New("kommander: leadership transfer in progress")
	errInvalidConfChange = errors.New("kommander: invalid membership change")
	errStub              = errors.New("kommander: core membership not merged yet")
)

func (r *raft) proposeConfChange(cc confChange, id uint64) (uint64, error) { return 0, errStub }

func (r *raft) membership() membership {
	var m membership
	for _, pr := range r.tracker.prs {
		m.Voters = append(m.Voters, pr.id)
	}
	return m
}

func (r *raft) memberMatch(id string) (uint64, bool) {
	if r.role != roleLeader {
		return 0, false
	}
	pr := r.tracker.progress(id)
	if pr == nil {
		return 0, false
	}
	return pr.match, true
}

func (r *raft) transferLeadership(to string) error { return errStub }
func (r *raft) transferTarget() string             { return "" }

func (t confChangeType) String() string {
	switch t {
	case confAddLearner:
		return "add learner"
	case confAddVoter:
		return "add voter"
	case confRemove:
		return "remove"
	}
	return "unknown change"
}
