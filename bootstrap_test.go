package kommander

import (
	"errors"
	"slices"
	"testing"
)

// newTestBootstrapper returns the bootstrapper of self, expecting expect nodes, that
// discovered view (IDs, reached at their IDs).
func newTestBootstrapper(self string, expect int, view ...string) (*bootstrapper, *memoryBootstrapStore) {
	store := &memoryBootstrapStore{}
	b := newBootstrapper(self, expect, store, bootstrapState{}, 10, 1)
	var peers []Peer
	for _, id := range view {
		peers = append(peers, Peer{ID: id, Addr: id})
	}
	b.setView(peers)
	return b, store
}

func promiseMsg(from, to string, epoch uint64, expect int, set ...string) *Message {
	return &Message{Type: MsgBootstrap, From: from, To: to, Term: uint64(expect), Context: epoch, Entries: []Entry{{Data: encodeIDSet(set)}}}
}

// TestBootstrapRefusesHostileMessages: bootstrap messages from nodes discovery does not
// show, for another BootstrapExpect, with more than one set, with a set that is not
// sorted, of the wrong size, not coordinated here or without its sender, change nothing.
func TestBootstrapRefusesHostileMessages(t *testing.T) {
	b, store := newTestBootstrapper("a", 3, "a", "b", "c")
	if err := b.tick(10); err != nil { // a promises {a,b,c} to itself
		t.Fatal(err)
	}
	before, _ := store.load()
	twoSets := promiseMsg("b", "a", 1, 3, "a", "b", "c")
	twoSets.Entries = append(twoSets.Entries, twoSets.Entries[0])
	long := make([]byte, maxNameBytes+1)
	for _, tc := range []struct {
		name string
		m    *Message
	}{
		{"undiscovered sender", promiseMsg("z", "a", 1, 3, "a", "b", "z")},
		{"other BootstrapExpect", promiseMsg("b", "a", 1, 2, "a", "b")},
		{"two sets", twoSets},
		{"too many IDs", promiseMsg("b", "a", 1, 3, "a", "b", "c", "d")},
		{"too few IDs", promiseMsg("b", "a", 1, 3, "a", "b")},
		{"not sorted", promiseMsg("b", "a", 1, 3, "b", "a", "c")},
		{"duplicate ID", promiseMsg("b", "a", 1, 3, "a", "b", "b")},
		{"not coordinated here", promiseMsg("b", "a", 1, 3, "b", "c", "d")},
		{"sender not in the set", promiseMsg("b", "a", 1, 3, "a", "c", "d")},
		{"ID too long", &Message{Type: MsgBootstrap, From: "b", To: "a", Term: 3, Context: 1, Entries: []Entry{{Data: append([]byte{byte(len(long)), byte(len(long) >> 8)}, long...)}}}},
		{"truncated set", &Message{Type: MsgBootstrap, From: "b", To: "a", Term: 3, Context: 1, Entries: []Entry{{Data: []byte{5, 0, 'a'}}}}},
	} {
		b.out = b.out[:0]
		err := b.receive(tc.m)
		after, _ := store.load()
		if !errors.Is(err, errBootstrapMessage) || len(b.got) != 1 || len(b.out) != 0 || !slices.Equal(after.Set, before.Set) || after.Epoch != before.Epoch {
			t.Errorf("%s: receive = %v, got %v, sent %v, state %+v: want errBootstrapMessage and nothing changed", tc.name, err, b.got, b.out, after)
		}
	}
}

// TestBootstrapCoordinatorFormsOnlyWithEveryPromise: the coordinator forms its set only
// once every member promised that very set; a member forms only on the answer to the
// promise it holds; a release from a node that does not hold the promise is ignored.
func TestBootstrapCoordinatorFormsOnlyWithEveryPromise(t *testing.T) {
	a, _ := newTestBootstrapper("a", 3, "a", "b", "c")
	bb, _ := newTestBootstrapper("b", 3, "a", "b", "c")
	if err := a.tick(10); err != nil {
		t.Fatal(err)
	}
	if err := bb.tick(10); err != nil {
		t.Fatal(err)
	}
	if len(bb.out) != 1 || bb.out[0].To != "a" || bb.out[0].Context != 1 {
		t.Fatalf("b sent %v, want its promise of epoch 1 to a", bb.out)
	}
	if err := a.receive(&bb.out[0]); err != nil || a.formed() {
		t.Fatalf("a formed (%v, err %v) with two of three promises", a.formed(), err)
	}
	// A promise of another set is released at once, and never counted later.
	a.setView([]Peer{{ID: "a"}, {ID: "b"}, {ID: "c"}, {ID: "d"}})
	a.out = a.out[:0]
	if err := a.receive(promiseMsg("d", "a", 4, 3, "a", "b", "d")); err != nil {
		t.Fatal(err)
	}
	if len(a.out) != 1 || !a.out[0].Reject || a.out[0].Context != 4 || a.st.Released["d"] != 4 {
		t.Fatalf("a promise of another set: sent %v, released %v; want a release of epoch 4, recorded", a.out, a.st.Released)
	}
	// c's promise completes the set.
	a.out = a.out[:0]
	if err := a.receive(promiseMsg("c", "a", 2, 3, "a", "b", "c")); err != nil || !a.formed() {
		t.Fatalf("a did not form with every promise: formed %v, err %v", a.formed(), err)
	}
	if len(a.out) != 2 {
		t.Fatalf("a told %d members of the set, want 2", len(a.out))
	}
	// b forms on the answer to its promise, and only on it.
	var toB Message
	for _, m := range a.out {
		if m.To == "b" {
			toB = m
		}
	}
	stale := toB
	stale.Context = 9
	if err := bb.receive(&stale); err != nil || bb.formed() {
		t.Fatalf("b formed on an answer to another epoch (formed %v, err %v)", bb.formed(), err)
	}
	fake := Message{Type: MsgBootstrapResp, From: "c", To: "b", Term: 3, Context: 1, Reject: true}
	if err := bb.receive(&fake); err != nil || bb.st.Coord != "a" {
		t.Fatalf("a release from c, which does not hold b's promise, released it: %+v (err %v)", bb.st, err)
	}
	if err := bb.receive(&toB); err != nil || !bb.formed() || !slices.Equal(bb.st.Set, []string{"a", "b", "c"}) {
		t.Fatalf("b did not form on a's answer: %+v, err %v", bb.st, err)
	}
	// A formed coordinator answers a member that asks again, and releases anything else.
	a.out = a.out[:0]
	if err := a.receive(promiseMsg("b", "a", 1, 3, "a", "b", "c")); err != nil || len(a.out) != 1 || a.out[0].Reject {
		t.Fatalf("a formed coordinator did not tell b again: %v, err %v", a.out, err)
	}
}

func TestIDSetEncoding(t *testing.T) {
	set := []string{"a", "bb", "node-3"}
	got, err := decodeIDSet(encodeIDSet(set), 3)
	if err != nil || !slices.Equal(got, set) {
		t.Fatalf("round trip: %v, %v", got, err)
	}
	if _, err := decodeIDSet(encodeIDSet(set), 2); err == nil {
		t.Fatal("a set longer than the bound was accepted")
	}
	b := encodeIDSet(set)
	for i := 1; i < len(b); i++ {
		if ids, err := decodeIDSet(b[:i], 3); err == nil && len(ids) == 3 {
			t.Fatalf("a truncated set of %d bytes decoded whole", i)
		}
	}
}
