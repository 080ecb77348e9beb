package kommander

import (
	"sync"
	"testing"
)

// TestALeaderThatSteppedDownAsksForItsForwardsAgain (S35): a forward that reaches the
// process that led its term after that process handed its leadership over was certainly
// not taken, so the sender is asked to forward it again (to the next leader) instead of
// being left to time out; a copy of it, and a forward of a term the process never led,
// get no answer (it cannot know what an earlier life of it took).
func TestALeaderThatSteppedDownAsksForItsForwardsAgain(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.cfg = func(i int, cfg *Config) { cfg.DisableLeaderBalancing = true }
	c.startAll()
	lead := c.leaders()[0]
	defer c.pump()()
	old := c.nodes[lead]
	term := old.Status().Partitions[0].Term
	to := c.ids[(lead+1)%3]
	if err := old.TransferLeadership(ctxT(t), 0, to); err != nil {
		t.Fatalf("transfer to %s: %v", to, err)
	}

	var mu sync.Mutex
	var answers []Message
	stranger := c.net.Transport("x9")
	if err := stranger.Start(func(batch []Message) {
		mu.Lock()
		answers = append(answers, batch...)
		mu.Unlock()
	}); err != nil {
		t.Fatal(err)
	}
	stranger.SetPeer(old.ID(), old.ID())
	old.SetPeerAddr("x9", "x9")
	forward := func(term, id uint64) {
		stranger.Send(old.ID(), []Message{{Type: MsgForward, From: "x9", To: old.ID(), Term: term,
			Entries: []Entry{{Kind: EntryNormal, ID: id, Type: "put", Data: put("k", "v")}}}})
	}
	refusals := func() (again int) {
		mu.Lock()
		defer mu.Unlock()
		for _, m := range answers {
			if m.Type == MsgForwardRefused && m.Context == forwardAgain {
				again++
			}
		}
		return again
	}
	id := uint64(1 << 50)
	c.await("an answer to x9", func() bool { // until x9's address reached the loop
		id++
		forward(term, id)
		return refusals() > 0
	})
	settle := func() { // the loop handled every forward sent before
		if _, err := old.Replicate(ctxT(t), 0, "put", put("settle", "x")); err != nil {
			t.Fatalf("write through the old leader: %v", err)
		}
	}
	settle()
	before := refusals()
	forward(term, id)     // a copy
	forward(term+7, id+1) // a term it never led
	settle()
	if got := refusals(); got != before {
		t.Fatalf("%d more requests to forward again, for a copy or a term never led; want none", got-before)
	}
	if l, _ := old.Leader(0); l == old.ID() {
		t.Fatalf("%s still leads", l)
	}
}

// TestForwardLostWithItsLeaderGoesToTheNextOne (S35): a forward lost on its way to a
// leader that then hands its leadership over (or stops, or is cut off) was never taken;
// once the follower applies an entry of the next leader's term, that is certain (an entry
// of the old term not committed before it never will be), and the proposal goes to the
// next leader at once, instead of waiting for its deadline to fail with an unknown outcome.
// The clock stands still: the deadline never comes.
func TestForwardLostWithItsLeaderGoesToTheNextOne(t *testing.T) {
	c := newNodeCluster(t, 3, 1, false)
	c.cfg = func(i int, cfg *Config) { cfg.DisableLeaderBalancing = true }
	c.startAll()
	lead := c.leaders()[0]
	f, g := (lead+1)%3, (lead+2)%3
	term := c.nodes[lead].Status().Partitions[0].Term
	c.net.CutOneWay(c.ids[f], c.ids[lead]) // the forward is lost
	fn := c.nodes[f]                       // not c.nodes[f] in the goroutine: a failed test's cleanup clears it
	type answer struct {
		res Result
		err error
	}
	done := make(chan answer, 1)
	go func() {
		res, err := fn.Replicate(ctxT(t), 0, "put", put("k", "v"))
		done <- answer{res, err}
	}()
	c.await("the proposal is forwarded to the leader", func() bool {
		p := fn.parts[0]
		p.mu.Lock()
		defer p.mu.Unlock()
		return len(p.waitingForwarded(func(pr *proposal) bool { return pr.term == term })) == 1
	})
	if err := c.nodes[lead].TransferLeadership(ctxT(t), 0, c.ids[g]); err != nil {
		t.Fatalf("transfer to %s: %v", c.ids[g], err)
	}
	a := <-done
	if a.err != nil {
		t.Fatalf("Replicate on %s, whose forward to %s was lost: %v", c.ids[f], c.ids[lead], a.err)
	}
	if a.res.Term <= term {
		t.Fatalf("the entry was applied in term %d, want a term after %d, the lost forward's", a.res.Term, term)
	}
	c.waitApplied(0, a.res.Index)
	c.checkSameLogs() // applied once
}
