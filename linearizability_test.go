package kommander

import (
	"fmt"
	"math"
	"sort"
	"strings"
	"testing"
)

// This file is a linearizability checker for histories of a key-value register, in the
// style of Wing & Gong's search with Lowe's memoization (the idea behind Porcupine):
// walk the history's call and return events in time order; at each call, try to
// linearize the operation now (if the model allows its result), remember the set of
// linearized operations with the model state so that no configuration is explored twice,
// and backtrack when a return event is reached whose operation is not yet linearized.
//
// Keys are independent registers, so each key's sub-history is checked on its own (the
// locality of linearizability, Herlihy & Wing). An operation whose outcome is unknown (the
// client gave up, or its node crashed) is given a return time of infinity: it may take
// effect at any point after its call, or never (linearized after everything, where it
// changes nothing observable). Unknown reads observe nothing and are dropped.

// kvOp is one client operation on one key.
type kvOp struct {
	client int
	key    string
	write  bool
	value  string // the value written, or the value a read returned
	call   int64
	ret    int64 // math.MaxInt64 when the outcome is unknown
}

func (o kvOp) String() string {
	ret := fmt.Sprint(o.ret)
	if o.ret == math.MaxInt64 {
		ret = "?"
	}
	if o.write {
		return fmt.Sprintf("c%d put(%s)=%q [%d,%s]", o.client, o.key, o.value, o.call, ret)
	}
	return fmt.Sprintf("c%d get(%s)->%q [%d,%s]", o.client, o.key, o.value, o.call, ret)
}

// checkLinearizable checks a history of operations on many keys; it returns "" when the
// history is linearizable, or a description of the first key that is not.
func checkLinearizable(ops []kvOp) string {
	byKey := map[string][]kvOp{}
	for _, o := range ops {
		if !o.write && o.ret == math.MaxInt64 {
			continue
		}
		byKey[o.key] = append(byKey[o.key], o)
	}
	keys := make([]string, 0, len(byKey))
	for k := range byKey {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if !linearizableRegister(byKey[k]) {
			var b strings.Builder
			fmt.Fprintf(&b, "key %q is not linearizable; its history:\n", k)
			h := byKey[k]
			sort.Slice(h, func(i, j int) bool { return h[i].call < h[j].call })
			for _, o := range h {
				fmt.Fprintf(&b, "  %v\n", o)
			}
			return b.String()
		}
	}
	return ""
}

// lEvent is a call or return in the doubly linked event list.
type lEvent struct {
	op         int
	call       bool
	t          int64
	match      *lEvent // a call's return
	prev, next *lEvent
}

// linearizableRegister decides whether ops on one register (initially "") linearize.
func linearizableRegister(ops []kvOp) bool {
	evs := make([]*lEvent, 0, 2*len(ops))
	for i, o := range ops {
		c := &lEvent{op: i, call: true, t: o.call}
		r := &lEvent{op: i, t: o.ret}
		c.match = r
		evs = append(evs, c, r)
	}
	sort.SliceStable(evs, func(i, j int) bool {
		if evs[i].t != evs[j].t {
			return evs[i].t < evs[j].t
		}
		return evs[i].call && !evs[j].call // a call at the same instant comes first
	})
	head := &lEvent{}
	prev := head
	for _, e := range evs {
		prev.next, e.prev = e, prev
		prev = e
	}
	lift := func(c *lEvent) {
		c.prev.next = c.next
		if c.next != nil {
			c.next.prev = c.prev
		}
		r := c.match
		r.prev.next = r.next
		if r.next != nil {
			r.next.prev = r.prev
		}
	}
	unlift := func(c *lEvent) {
		r := c.match
		r.prev.next = r
		if r.next != nil {
			r.next.prev = r
		}
		c.prev.next = c
		if c.next != nil {
			c.next.prev = c
		}
	}
	type frame struct {
		ev    *lEvent
		state string
	}
	linearized := make([]uint64, (len(ops)+63)/64)
	seen := map[string]bool{}
	memoKey := func(state string) string {
		var b strings.Builder
		for _, w := range linearized {
			fmt.Fprintf(&b, "%x,", w)
		}
		b.WriteString(state)
		return b.String()
	}
	var stack []frame
	state := ""
	e := head.next
	for head.next != nil {
		if e.call {
			o := ops[e.op]
			next, ok := state, true
			if o.write {
				next = o.value
			} else {
				ok = o.value == state
			}
			if ok {
				linearized[e.op/64] |= 1 << (e.op % 64)
				k := memoKey(next)
				if !seen[k] {
					seen[k] = true
					stack = append(stack, frame{ev: e, state: state})
					state = next
					lift(e)
					e = head.next
					continue
				}
				linearized[e.op/64] &^= 1 << (e.op % 64)
			}
			e = e.next
			continue
		}
		// A return whose operation cannot be linearized before it: undo the last choice.
		if len(stack) == 0 {
			return false
		}
		top := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		state = top.state
		linearized[top.ev.op/64] &^= 1 << (top.ev.op % 64)
		unlift(top.ev)
		e = top.ev.next
	}
	return true
}

func TestLinearizabilityCheckerAcceptsAndRejects(t *testing.T) {
	inf := int64(math.MaxInt64)
	w := func(v string, call, ret int64) kvOp {
		return kvOp{key: "k", write: true, value: v, call: call, ret: ret}
	}
	r := func(v string, call, ret int64) kvOp { return kvOp{key: "k", value: v, call: call, ret: ret} }
	for _, tc := range []struct {
		name string
		ops  []kvOp
		want bool
	}{
		{"sequential", []kvOp{w("1", 1, 2), r("1", 3, 4), w("2", 5, 6), r("2", 7, 8)}, true},
		{"stale read after write returned", []kvOp{w("1", 1, 2), r("", 3, 4)}, false},
		{"read overlapping a write may see either", []kvOp{w("1", 1, 4), r("", 2, 3), r("1", 2, 5)}, true},
		{"reads may not go back in time", []kvOp{w("1", 1, 10), r("1", 2, 3), r("", 4, 5)}, false},
		{"lost acknowledged write", []kvOp{w("1", 1, 2), w("2", 3, 4), r("1", 5, 6)}, false},
		{"unknown write may apply late", []kvOp{w("1", 1, inf), r("", 2, 3), r("1", 4, 5)}, true},
		{"unknown write may never apply", []kvOp{w("1", 1, inf), r("", 2, 3)}, true},
		{"unknown write cannot apply before its call", []kvOp{r("1", 1, 2), w("1", 3, inf)}, false},
		{"value never written", []kvOp{w("1", 1, 2), r("7", 3, 4)}, false},
	} {
		if got := linearizableRegister(tc.ops); got != tc.want {
			t.Errorf("%s: linearizable = %v, want %v", tc.name, got, tc.want)
		}
	}
}
