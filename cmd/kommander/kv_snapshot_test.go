package main

import (
	"bytes"
	"fmt"
	"reflect"
	"testing"

	"github.com/kommander-go/kommander"
)

// The store's snapshot holds its whole state, values and lists, and a restore brings it
// back exactly; a snapshot taken before later applies does not see them.
func TestKVStoreSnapshotRoundTrip(t *testing.T) {
	s := newKVStore(2)
	var ents []kommander.Entry
	for i := range 50 {
		ents = append(ents,
			kommander.Entry{Type: cmdPut, Data: encodeFields([]byte(fmt.Sprint("k", i)), []byte(fmt.Sprint("v", i)))},
			kommander.Entry{Type: cmdAppend, Data: encodeFields([]byte(fmt.Sprint("l", i%7)), []byte(fmt.Sprint(i)))})
	}
	if err := s.Apply(1, ents, make([]any, len(ents))); err != nil {
		t.Fatal(err)
	}
	want := s.parts[1]
	wt, err := s.Snapshot(1)
	if err != nil {
		t.Fatal(err)
	}
	later := []kommander.Entry{{Type: cmdPut, Data: encodeFields([]byte("late"), []byte("x"))},
		{Type: cmdAppend, Data: encodeFields([]byte("l0"), []byte("late"))}}
	wantLists := map[string][][]byte{}
	for k, l := range want.lists {
		wantLists[k] = append([][]byte(nil), l...)
	}
	if err := s.Apply(1, later, make([]any, len(later))); err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		t.Fatal(err)
	}
	r := newKVStore(2)
	if err := r.Restore(1, 100, &b); err != nil {
		t.Fatal(err)
	}
	if _, ok := r.parts[1].values["late"]; ok {
		t.Fatal("the snapshot holds a value applied after it was taken")
	}
	if len(r.parts[1].values) != 50 || !reflect.DeepEqual(r.parts[1].lists, wantLists) {
		t.Fatalf("restored %d values and lists %v", len(r.parts[1].values), r.parts[1].lists)
	}
	for k, v := range r.parts[1].values {
		if string(want.values[k]) != string(v) {
			t.Fatalf("%s = %q, want %q", k, v, want.values[k])
		}
	}
	if err := r.Restore(1, 100, bytes.NewReader([]byte{5, 1})); err == nil {
		t.Fatal("a truncated snapshot restored without an error")
	}
}
