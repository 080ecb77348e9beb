package kommander

import (
	"errors"
	"testing"
)

func ents(term uint64, from, to uint64) []Entry {
	var es []Entry
	for i := from; i <= to; i++ {
		es = append(es, Entry{Term: term, Index: i, Data: []byte{byte(i)}})
	}
	return es
}

func TestMemoryStorageSaveTruncatesConflictingSuffix(t *testing.T) {
	s := NewMemoryStorage()
	if err := s.Save([]Update{{Partition: 3, Entries: ents(1, 1, 5)}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Save([]Update{{Partition: 3, Entries: ents(2, 4, 4), HardState: HardState{Term: 2, Vote: "a"}, SaveHardState: true}}); err != nil {
		t.Fatal(err)
	}
	if got := s.LastIndex(3); got != 4 {
		t.Fatalf("LastIndex = %d, want 4", got)
	}
	if tm, _ := s.Term(3, 4); tm != 2 {
		t.Fatalf("Term(4) = %d, want 2", tm)
	}
	if hs, _ := s.HardState(3); hs.Vote != "a" || hs.Term != 2 {
		t.Fatalf("HardState = %+v", hs)
	}
	if err := s.Save([]Update{{Partition: 3, Entries: ents(2, 7, 7)}}); err == nil {
		t.Fatal("a save that leaves a gap was accepted")
	}
}

func TestMemoryStorageEntriesHonoursBudgetAndBounds(t *testing.T) {
	s := NewMemoryStorage()
	_ = s.Save([]Update{{Partition: 0, Entries: ents(1, 1, 10)}})
	es, err := s.Entries(0, 1, 11, 1)
	if err != nil || len(es) != 1 {
		t.Fatalf("Entries with a tiny budget = %d entries, %v; want 1", len(es), err)
	}
	if _, err := s.Entries(0, 1, 12, 1<<20); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Entries beyond last = %v, want ErrUnavailable", err)
	}
	_ = s.Compact(0, 4, 1)
	if _, err := s.Entries(0, 3, 6, 1<<20); !errors.Is(err, ErrCompacted) {
		t.Fatalf("Entries below first = %v, want ErrCompacted", err)
	}
	if tm, err := s.Term(0, 4); err != nil || tm != 1 {
		t.Fatalf("Term(compaction point) = %d, %v", tm, err)
	}
	if s.FirstIndex(0) != 5 || s.LastIndex(0) != 10 {
		t.Fatalf("first/last = %d/%d, want 5/10", s.FirstIndex(0), s.LastIndex(0))
	}
}

func TestMemoryStorageCrashLosesOnlyUnsyncedSaves(t *testing.T) {
	s := NewMemoryStorage()
	_ = s.Save([]Update{{Partition: 1, Entries: ents(1, 1, 3)}})
	s.SetNoSync(true)
	_ = s.Save([]Update{{Partition: 1, Entries: ents(1, 4, 5)}})
	s.Sync()
	_ = s.Save([]Update{{Partition: 1, Entries: ents(1, 6, 8), HardState: HardState{Term: 9}, SaveHardState: true}})
	if s.LastIndex(1) != 8 {
		t.Fatalf("unsynced save not readable before the crash")
	}
	s.Crash()
	if s.LastIndex(1) != 5 {
		t.Fatalf("after crash LastIndex = %d, want 5 (synced through 5)", s.LastIndex(1))
	}
	if hs, _ := s.HardState(1); hs.Term != 0 {
		t.Fatalf("unsynced hard state survived the crash: %+v", hs)
	}
}

func TestMemoryStorageFailedSaveIsSticky(t *testing.T) {
	s := NewMemoryStorage()
	boom := errors.New("disk on fire")
	s.FailSaves(boom)
	for i := 0; i < 2; i++ {
		if err := s.Save([]Update{{Partition: 0, Entries: ents(1, 1, 1)}}); !errors.Is(err, boom) {
			t.Fatalf("save %d = %v, want the injected error", i, err)
		}
	}
	if s.LastIndex(0) != 0 {
		t.Fatal("a failed save changed the log")
	}
}
