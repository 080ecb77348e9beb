package kommander

import (
	"fmt"
	"slices"
	"sync/atomic"
)

// This file is the hosting node's side of the proxy (node_proxy.go has the protocol and
// the asking node's side): it takes each request once, runs it on its replica as the
// public call would, and answers once the call has its outcome.

// proxyServer is the side of the proxy that serves other nodes' requests.
type proxyServer struct {
	serving atomic.Int32
	// seen holds, per incarnation of an asking node, the request IDs it may still send.
	seen map[forwardKey]*proxySeen
}

// proxySeen is what a hosting node keeps of one incarnation of an asking node to take each
// of its requests once: every request carries the lowest request ID its sender still has
// in flight (Message.Commit), so an ID below the highest of those is a copy of a request
// taken, or one its sender gave up on (an unknown outcome to its caller, never a second
// apply); the IDs at or above it that were taken are kept.
type proxySeen struct {
	floor uint64
	ids   map[uint64]struct{}
	order []uint64 // ids in the order taken
	last  uint64   // tick of the last request
}

// maxProxySeen bounds the request IDs kept per incarnation of an asking node; beyond it the
// oldest are forgotten early and the floor rises past them (a request below it that is
// still on its way is then dropped: an unknown outcome, never a second apply).
const maxProxySeen = 1 << 16

// first reports whether request id from node from, whose oldest call in flight is low, was
// never taken before, and remembers it. Loop only, under the proxy's mu.
func (s *proxyServer) first(from string, id, low, now uint64) bool {
	k := forwardKey{from, idIncarnation(id)}
	seen := s.seen[k]
	if seen == nil {
		seen = &proxySeen{ids: make(map[uint64]struct{})}
		s.seen[k] = seen
	}
	seen.last = now
	if low <= id && idIncarnation(low) == k.incarnation && low > seen.floor {
		seen.floor = low
		seen.prune()
	}
	if _, dup := seen.ids[id]; dup || id < seen.floor {
		return false
	}
	seen.ids[id] = struct{}{}
	seen.order = append(seen.order, id)
	if len(seen.order) > maxProxySeen {
		seen.floor = max(seen.floor, seen.order[0]+1)
		seen.prune()
	}
	return true
}

// prune forgets the IDs below the floor taken before every ID at or above it (the others
// go as the ones before them do: the floor makes them copies anyway).
func (seen *proxySeen) prune() {
	k := 0
	for k < len(seen.order) && seen.order[k] < seen.floor {
		delete(seen.ids, seen.order[k])
		k++
	}
	seen.order = seen.order[k:]
	if len(seen.order) == 0 {
		seen.order = nil
	}
}

// forget drops what it keeps of the asking incarnations not heard from for keep ticks (a
// node that restarted, or stopped asking); a copy of their requests that arrives later
// than that is not told apart. Under the proxy's mu.
func (s *proxyServer) forget(now, keep uint64) {
	for k, seen := range s.seen {
		if seen.last+keep <= now {
			delete(s.seen, k)
		}
	}
}

// serve takes a msgProxy: it acknowledges the request and submits it to the partition's
// replica at once, in this pass, as a local call would be; the answer goes out once the
// call is answered (from the hook servedCall.onDone). A copy of a request already taken is
// dropped. Loop only.
func (x *proxy) serve(m *Message) {
	n := x.n
	x.mu.Lock()
	first := x.server.first(m.From, m.Context, m.Commit, x.now)
	x.mu.Unlock()
	if !first {
		n.metrics.dropped.Add(1)
		return
	}
	resp := Message{Type: msgProxyResp, Partition: m.Partition, From: n.cfg.NodeID, To: m.From, Context: m.Context}
	p := n.slots[m.Partition].Load()
	switch {
	case p == nil:
		n.out.add(proxyFailure(resp, proxyErrNotHosted, ErrNotHosted))
		return
	case m.Index == proxyOpLeader:
		if l := p.leader(); l != "" {
			resp.Entries = []Entry{{ID: proxyValueString, Data: []byte(l)}}
		}
		n.out.add(resp)
		return
	case x.server.serving.Load() >= maxProxyServing:
		n.out.add(proxyFailure(resp, proxyErrOverloaded, fmt.Errorf("%d requests of other nodes in flight: %w", maxProxyServing, ErrOverloaded)))
		return
	}
	call, err := x.submit(p, m, resp)
	if err != nil {
		n.out.add(proxyFailure(resp, proxyErrorClass(err), err))
		return
	}
	ack := resp
	ack.Index = 1
	n.out.add(ack)
	x.server.serving.Add(1)
	p.mu.Lock()
	defer p.mu.Unlock()
	if call.answered() {
		call.send()
	} else {
		call.hook()
	}
}

// servedCall is a call this node runs for another, a proposal or a read, and the answer
// to fill. Its methods are called under the partition's mu.
type servedCall struct {
	x    *proxy
	pr   *proposal
	rd   *readWait
	resp Message
}

// answered reports whether the call has its outcome.
func (c *servedCall) answered() bool {
	if c.pr != nil {
		return c.pr.stage == stageDone
	}
	return c.rd.stage == readDone
}

// hook makes the call send its answer once it has its outcome.
func (c *servedCall) hook() {
	if c.pr != nil {
		c.pr.onDone = c.send
	} else {
		c.rd.onDone = c.send
	}
}

// send queues the answer for the loop to send.
func (c *servedCall) send() {
	resp, err := c.resp, error(nil)
	if c.pr != nil {
		if err = c.pr.err; err == nil {
			resp.Entries = make([]Entry, len(c.pr.results))
			for i, r := range c.pr.results {
				resp.Entries[i] = proxyResult(r)
			}
		}
	} else {
		err = c.rd.err
	}
	if err != nil {
		resp = proxyFailure(resp, proxyErrorClass(err), err)
	}
	c.x.queueAnswer(resp)
}

// submit submits a request to this node's replica p as the public call would; resp is
// the answer to fill. No ctx bounds the call: its own deadlines end it, and so does a
// Stop. Loop only.
func (x *proxy) submit(p *partition, m *Message, resp Message) (*servedCall, error) {
	n := x.n
	partition := int(p.id)
	call := &servedCall{x: x, resp: resp}
	switch m.Index {
	case proxyOpReplicate:
		pr := &proposal{cmds: make([]Command, len(m.Entries)), results: make([]Result, len(m.Entries))}
		for i, e := range m.Entries {
			pr.cmds[i] = Command{Type: e.Type, Data: slices.Clone(e.Data)}
		}
		if err := n.checkCommands(partition, pr.cmds); err != nil {
			return nil, err
		}
		if err := n.enqueue(partition, pr); err != nil {
			return nil, err
		}
		call.pr = pr
		return call, nil
	case proxyOpRead, proxyOpReadLease:
		if m.Index == proxyOpReadLease && !n.cfg.LeaseReads {
			return nil, fmt.Errorf("kommander: partition %d: lease reads are off (Config.LeaseReads)", partition)
		}
		rd, err := n.submitRead(partition, m.Index == proxyOpReadLease)
		if err != nil {
			return nil, err
		}
		call.rd = rd
		return call, nil
	}
	return nil, fmt.Errorf("kommander: partition %d: unknown proxy operation %d", partition, m.Index)
}

// queueAnswer queues the answer to a request this node served, for the loop to send in
// its next pass (sendAnswers), and wakes it. It is called where the call is answered,
// under the partition's mu (the applier, the loop, a Stop), so it only queues.
func (x *proxy) queueAnswer(m Message) {
	x.server.serving.Add(-1)
	x.ansMu.Lock()
	x.answers = append(x.answers, m)
	x.ansMu.Unlock()
	x.pending.Store(true)
	x.n.in.signal()
}

// sendAnswers hands the queued answers to the outbox. Loop only.
func (x *proxy) sendAnswers() {
	if !x.pending.Load() {
		return
	}
	x.pending.Store(false)
	x.ansMu.Lock()
	answers := x.answers
	x.answers = nil
	x.ansMu.Unlock()
	x.n.out.addAll(answers)
}
