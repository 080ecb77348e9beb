package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"testing"

	"github.com/kommander-go/kommander"
)

// applyOne applies one command to partition 0 of s and returns its result.
func applyOne(t *testing.T, s *kvStore, index uint64, typ string, fields ...string) any {
	t.Helper()
	var f [][]byte
	for _, x := range fields {
		f = append(f, []byte(x))
	}
	res := make([]any, 1)
	if err := s.Apply(0, []kommander.Entry{{Index: index, Type: typ, Data: encodeFields(f...)}}, res); err != nil {
		t.Fatal(err)
	}
	return res[0]
}

func TestKVCompareAndSetIsDecidedAtApply(t *testing.T) {
	s := newKVStore(1)
	if got := applyOne(t, s, 1, cmdCAS, "k", "", "v"); got != false {
		t.Fatalf("CAS on an absent key: %v, want false (absent equals nothing, not even empty)", got)
	}
	applyOne(t, s, 2, cmdPut, "k", "a")
	if got := applyOne(t, s, 3, cmdCAS, "k", "b", "c"); got != false {
		t.Fatalf("CAS with the wrong old value: %v", got)
	}
	if got := applyOne(t, s, 4, cmdCAS, "k", "a", "c"); got != true {
		t.Fatalf("CAS with the right old value: %v", got)
	}
	if got := applyOne(t, s, 5, cmdGet, "k").(kvValue); !got.found || string(got.value) != "c" {
		t.Fatalf("get after CAS: %+v", got)
	}
	if got := applyOne(t, s, 6, cmdPutAbsent, "k", "d"); got != false {
		t.Fatalf("if-absent on a present key: %v", got)
	}
	applyOne(t, s, 7, cmdDelete, "k")
	if got := applyOne(t, s, 8, cmdPutAbsent, "k", "d"); got != true {
		t.Fatalf("if-absent after delete: %v", got)
	}
	if v, ok := s.get(0, "k"); !ok || string(v) != "d" {
		t.Fatalf("stale get: %q %v", v, ok)
	}
}

func TestKVAppendReturnsIndexAndReadsAreSnapshots(t *testing.T) {
	s := newKVStore(1)
	for i, e := range []string{"x", "y"} {
		if got := applyOne(t, s, uint64(i+1), cmdAppend, "l", e); got != uint64(i+1) {
			t.Fatalf("append %q: index %v, want %d", e, got, i+1)
		}
	}
	seen := applyOne(t, s, 3, cmdList, "l").([][]byte)
	applyOne(t, s, 4, cmdAppend, "l", "z")
	if len(seen) != 2 || string(seen[1]) != "y" {
		t.Fatalf("a list read changed after a later append: %q", seen)
	}
	if l := s.list(0, "l"); len(l) != 3 {
		t.Fatalf("stale list: %q", l)
	}
	if l := applyOne(t, s, 5, cmdList, "none").([][]byte); len(l) != 0 {
		t.Fatalf("absent list: %q", l)
	}
}

func TestKVMalformedEntryIsAnsweredNotFatal(t *testing.T) {
	s := newKVStore(1)
	res := make([]any, 3)
	err := s.Apply(0, []kommander.Entry{
		{Index: 1, Type: "frobnicate", Data: encodeFields([]byte("k"))},
		{Index: 2, Type: cmdPut, Data: []byte{0xff, 0xff, 0xff}},
		{Index: 3, Type: cmdPut, Data: encodeFields([]byte("k"))},
	}, res)
	if err != nil {
		t.Fatalf("a malformed entry stopped the state machine: %v", err)
	}
	for i, r := range res {
		if e, ok := r.(error); !ok || !errors.Is(e, errMalformedCommand) {
			t.Errorf("entry %d: result %v, want errMalformedCommand", i+1, r)
		}
	}
}

func TestFieldsRoundTrip(t *testing.T) {
	in := [][]byte{[]byte("key"), {}, make([]byte, 300)}
	out, err := decodeFields(encodeFields(in...), 3)
	if err != nil || len(out) != 3 || !slices.Equal(out[0], in[0]) || len(out[1]) != 0 || len(out[2]) != 300 {
		t.Fatalf("round trip: %q %v", out, err)
	}
	if _, err := decodeFields(encodeFields(in...), 2); err == nil {
		t.Fatal("three fields decoded as two")
	}
}

// TestStatusOfMapsOutcomesTo503Or504 pins the rule of the HTTP API: 503 only when the
// operation certainly was not applied, 504 when it was proposed and may yet apply.
func TestStatusOfMapsOutcomesTo503Or504(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{fmt.Errorf("p 1: %w: %w", kommander.ErrTimeout, kommander.ErrStopped), http.StatusGatewayTimeout},
		{fmt.Errorf("p 1: %w: %w", kommander.ErrTimeout, context.DeadlineExceeded), http.StatusGatewayTimeout},
		{fmt.Errorf("p 1: not proposed: %w", context.DeadlineExceeded), http.StatusServiceUnavailable},
		{fmt.Errorf("p 1: not proposed: %w", kommander.ErrStopped), http.StatusServiceUnavailable},
		{&kommander.NotLeaderError{Partition: 1}, http.StatusServiceUnavailable},
		{fmt.Errorf("x: %w", kommander.ErrOverloaded), http.StatusServiceUnavailable},
		{fmt.Errorf("x: %w", kommander.ErrTooLarge), http.StatusRequestEntityTooLarge},
		{&httpError{http.StatusBadRequest, "bad"}, http.StatusBadRequest},
		{errors.New("something else"), http.StatusInternalServerError},
	} {
		if got := statusOf(tc.err); got != tc.code {
			t.Errorf("statusOf(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}
