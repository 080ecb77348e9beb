package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/kommander-go/kommander"
)

// The admin endpoints of `kommander node`: membership changes and leadership transfers.
// Any member takes them; a change asked of a node that does not lead a partition is
// forwarded to the leader by the library.
//
//	GET    /admin/members            every partition's voters and learners, as this node sees them
//	POST   /admin/members            {"id": ..., "addr": ..., "learner": false}: add a node
//	DELETE /admin/members/{id}       remove a node
//	POST   /admin/transfer?partition=&to=   hand a partition's leadership over (both optional:
//	                                 every partition this node leads; the best voter)

// maxAdminBody bounds the body of an admin request.
const maxAdminBody = 4 << 10

// adminRoutes registers the admin endpoints.
func (s *kvServer) adminRoutes() {
	s.mux.HandleFunc("GET /admin/members", s.serve(s.listMembers))
	s.mux.HandleFunc("POST /admin/members", s.serve(s.addMember))
	s.mux.HandleFunc("DELETE /admin/members/{id}", s.serve(s.removeMember))
	s.mux.HandleFunc("POST /admin/transfer", s.serve(s.transfer))
	s.mux.HandleFunc("/admin/members", methodNotAllowed("GET, POST"))
	s.mux.HandleFunc("/admin/members/{id}", methodNotAllowed("DELETE"))
	s.mux.HandleFunc("/admin/transfer", methodNotAllowed("POST"))
}

// partitionMembers is one partition's configuration in GET /admin/members.
type partitionMembers struct {
	Partition int `json:"partition"`
	kommander.Membership
	Leader string `json:"leader"`
}

func (s *kvServer) listMembers(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	out := struct {
		Partitions []partitionMembers `json:"partitions"`
	}{}
	for p := 0; p < s.node.Partitions(); p++ {
		m, err := s.node.Members(p)
		if err != nil {
			return err
		}
		lead, _ := s.node.Leader(p)
		out.Partitions = append(out.Partitions, partitionMembers{Partition: p, Membership: m, Leader: lead})
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

// addRequest is the body of POST /admin/members.
type addRequest struct {
	ID      string `json:"id"`
	Addr    string `json:"addr"`
	Learner bool   `json:"learner"`
}

func (s *kvServer) addMember(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	var req addRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return &httpError{http.StatusBadRequest, "body: want {\"id\": ..., \"addr\": ..., \"learner\": false}: " + err.Error()}
	}
	if req.ID == "" || req.Addr == "" {
		return &httpError{http.StatusBadRequest, "id and addr are required"}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.adminTimeout)
	defer cancel()
	add := s.node.AddNode
	if req.Learner {
		add = s.node.AddLearner
	}
	if err := add(ctx, req.ID, req.Addr); err != nil {
		return err
	}
	return s.listMembers(w, r)
}

func (s *kvServer) removeMember(w http.ResponseWriter, r *http.Request) error {
	if _, err := query(r); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.adminTimeout)
	defer cancel()
	if err := s.node.RemoveNode(ctx, r.PathValue("id")); err != nil {
		return err
	}
	return s.listMembers(w, r)
}

// transferResult is one partition's outcome in POST /admin/transfer.
type transferResult struct {
	Partition int    `json:"partition"`
	Leader    string `json:"leader,omitempty"`
	Error     string `json:"error,omitempty"`
}

func (s *kvServer) transfer(w http.ResponseWriter, r *http.Request) error {
	q, err := query(r, "partition", "to")
	if err != nil {
		return err
	}
	var parts []int
	if v := q.Get("partition"); v != "" {
		p, err := strconv.Atoi(v)
		if err != nil || p < 0 || p >= s.node.Partitions() {
			return &httpError{http.StatusBadRequest, fmt.Sprintf("?partition=%s: want 0..%d", v, s.node.Partitions()-1)}
		}
		parts = []int{p}
	} else {
		for p := 0; p < s.node.Partitions(); p++ {
			if s.node.IsLeader(p) {
				parts = append(parts, p)
			}
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.adminTimeout)
	defer cancel()
	out := struct {
		Partitions []transferResult `json:"partitions"`
	}{Partitions: []transferResult{}}
	code := http.StatusOK
	for _, p := range parts {
		res := transferResult{Partition: p}
		if err := s.node.TransferLeadership(ctx, p, q.Get("to")); err != nil {
			res.Error = err.Error()
			var nl *kommander.NotLeaderError
			if errors.As(err, &nl) {
				// Ask the leader: it is the one that hands its leadership over.
				code = http.StatusMisdirectedRequest
			} else if code == http.StatusOK {
				code = statusOf(err)
			}
		}
		res.Leader, _ = s.node.Leader(p)
		out.Partitions = append(out.Partitions, res)
	}
	writeJSON(w, code, out)
	return nil
}
