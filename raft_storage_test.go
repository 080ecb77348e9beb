package kommander

import (
	"errors"
	"testing"
)

// raftStorageFake is a Storage over memLogs, one per partition, so that the core can be
// driven through the partitionLog adapter the node uses.
type raftStorageFake struct {
	parts map[uint32]*memLog
}

func (s *raftStorageFake) part(p uint32) *memLog {
	if s.parts[p] == nil {
		s.parts[p] = &memLog{}
	}
	return s.parts[p]
}

func (s *raftStorageFake) Save(batch []Update) error {
	for _, u := range batch {
		s.part(u.Partition).save(raftReady{HardState: u.HardState, SaveHardState: u.SaveHardState, Entries: u.Entries})
	}
	return nil
}

func (s *raftStorageFake) HardState(p uint32) (HardState, error) { return s.part(p).hs, nil }
func (s *raftStorageFake) FirstIndex(p uint32) uint64            { return s.part(p).firstIndex() }
func (s *raftStorageFake) LastIndex(p uint32) uint64             { return s.part(p).lastIndex() }
func (s *raftStorageFake) Term(p uint32, i uint64) (uint64, error) {
	return s.part(p).term(i)
}
func (s *raftStorageFake) Entries(p uint32, lo, hi, maxBytes uint64) ([]Entry, error) {
	return s.part(p).entries(lo, hi, maxBytes)
}
func (s *raftStorageFake) Compact(p uint32, i, _ uint64) error { s.part(p).compact(i); return nil }
func (s *raftStorageFake) Close() error                        { return nil }

// A group driven through Storage and partitionLog, as the node drives it, restarts from
// what Storage kept: term, vote, commit and log (S1, S22 for the log part).
func TestRaftRestartsFromStorageThroughPartitionLog(t *testing.T) {
	st := &raftStorageFake{parts: map[uint32]*memLog{}}
	start := func() *raft {
		hs, err := st.HardState(7)
		if err != nil {
			t.Fatal(err)
		}
		cfg := testConfig("n1", []string{"n1"})
		cfg.partition, cfg.storage, cfg.hardState = 7, partitionLog{s: st, partition: 7}, hs
		r, err := newRaft(cfg)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	drive := func(r *raft) {
		for r.hasReady() {
			rd := r.ready()
			if err := st.Save([]Update{{Partition: 7, HardState: rd.HardState, SaveHardState: rd.SaveHardState, Entries: rd.Entries}}); err != nil {
				t.Fatal(err)
			}
			r.advance(rd)
		}
	}
	r := start()
	for r.role != roleLeader {
		r.tick()
		drive(r)
	}
	idx, term, err := r.propose([]Entry{{ID: 1, Type: "set", Data: []byte("v")}})
	if err != nil {
		t.Fatal(err)
	}
	drive(r)
	if r.log.committed != idx {
		t.Fatalf("commit %d, want %d", r.log.committed, idx)
	}
	r2 := start()
	if r2.term != term || r2.vote != "n1" || r2.log.committed != idx || r2.log.lastIndex() != idx {
		t.Fatalf("restarted as term %d vote %q commit %d last %d", r2.term, r2.vote, r2.log.committed, r2.log.lastIndex())
	}
	ents, err := r2.log.entries(idx, idx+1, 1<<20)
	if err != nil || len(ents) != 1 || string(ents[0].Data) != "v" {
		t.Fatalf("entry after restart: %+v, %v", ents, err)
	}
	if _, err := r2.log.entries(0, 1, 1); !errors.Is(err, ErrCompacted) {
		t.Fatalf("reading below the first index: want ErrCompacted, got %v", err)
	}
}
