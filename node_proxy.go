package kommander

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"
)

// This file serves, on a node that hosts no replica of a partition, the calls that need
// one (Replicate, ReplicateBatch, ReadBarrier, ReadBarrierLease, Leader, WaitForLeader):
// the node asks a node that hosts one with a msgProxy, and that node runs the call on its
// own replica (which forwards to the leader as any call does) and answers with a
// msgProxyResp. The protocol, field by field:
//
//   - msgProxy: Partition; Context, the request ID (one of the asking node's entry IDs,
//     so one incarnation's IDs only grow); Commit, the lowest request ID the asking node
//     still has in flight; Index, the operation (proxyOp...); Entries, the commands of a
//     Replicate (Type and Data).
//   - msgProxyResp: Partition and Context as asked; Index 1 for the acknowledgement the
//     hosting node sends as soon as it took the request, 0 for the answer. The answer
//     carries one entry per command with its Index and Term, and the value Apply gave it
//     in Data when it is a []byte or a string (ID says which: proxyValue...), or for
//     Leader the leader's ID; a failed call has Reject set, the error's class in
//     RejectHint (proxyErr...) and its text in the first entry's Data.
//
// This file has the protocol and the asking node's side; node_proxy_serve.go the hosting
// node's.
//
// A write is sent to one hosting node, once: a request that is not answered has an
// unknown outcome (ErrTimeout), because that node may have proposed it. The hosting node
// takes each request ID once (proxyServer.first), so a copy the network delivers twice is
// never proposed twice. Reads and leader queries change nothing, so an unanswered one is
// asked again of another hosting node.

// Operations (Message.Index of msgProxy).
const (
	proxyOpReplicate uint64 = iota + 1
	proxyOpRead
	proxyOpReadLease
	proxyOpLeader
)

// Classes of the error of a failed call (Message.RejectHint of msgProxyResp).
const (
	proxyErrFailed      uint64 = iota + 1 // not applied, for another reason (the text says)
	proxyErrNotHosted                     // that node hosts no replica: nothing was done
	proxyErrStopped                       // that node stopped before it proposed anything
	proxyErrUnknown                       // ErrTimeout: the outcome is unknown
	proxyErrNotLeader                     // ErrNotLeader
	proxyErrOverloaded                    // ErrOverloaded
	proxyErrTooLarge                      // ErrTooLarge
	proxyErrNoPartition                   // ErrNoPartition
)

// Kinds of a result's value (Entry.ID of an answer's entry).
const (
	proxyValueNil uint64 = iota
	proxyValueBytes
	proxyValueString
)

// Bounds of the proxy.
const (
	// maxProxyCalls bounds the calls a node has in flight to hosting nodes; beyond it a
	// call fails at once with ErrOverloaded.
	maxProxyCalls = 4096
	// maxProxyServing bounds the requests a node serves for others at once; beyond it it
	// answers ErrOverloaded.
	maxProxyServing = 4096
	// maxProxyErrText bounds the error text an answer carries.
	maxProxyErrText = 1024
	// proxyTimeouts is how many election timeouts an asking node waits for an answer: a
	// proposal on the hosting node may wait noLeaderTimeouts for a leader and as long
	// again for its forward, plus the grace of a leader change.
	proxyTimeouts = 2*noLeaderTimeouts + graceTimeouts
	// proxySuspectTimeouts is how long new calls avoid a hosting node that did not
	// acknowledge a request within an election timeout.
	proxySuspectTimeouts = 3
	// proxySeenTimeouts is how long a hosting node remembers the requests of a node that
	// stopped asking, to drop their copies (see proxyServer.forget).
	proxySeenTimeouts = proxyTimeouts + noLeaderTimeouts
)

// proxy is the node's side of calls to and from other nodes for partitions: the calls it
// has in flight (client) and the requests it serves (server).
type proxy struct {
	n *Node

	mu      sync.Mutex
	now     uint64                // the loop's tick, as of the last tick
	calls   map[uint64]*proxyCall // by request ID
	hint    map[int]string        // partition -> the node that last answered for it
	leaders map[int]proxyLeader   // partition -> its leader as last learned (knownLeader)
	suspect map[string]uint64     // node -> tick until which new calls avoid it
	ticked  chan struct{}         // closed at the next tick, made when someone waits for it
	stopped error                 // set by failAll: no more calls
	issued  []uint64              // request IDs in the order taken; those done are dropped from the front lazily
	server  proxyServer

	// The answers to requests served, for the loop to send (queueAnswer).
	ansMu   sync.Mutex
	answers []Message
	pending atomic.Bool
}

// proxyCall is one request in flight to a hosting node.
type proxyCall struct {
	id         uint64
	host       string
	idempotent bool   // a read or a query: may be asked again elsewhere
	sent       bool   // the request is out
	ackBy      uint64 // tick by which an acknowledgement is due
	deadline   uint64 // tick after which the outcome is unknown; 0 until the first tick once sent
	acked      bool
	outcome    proxyOutcome
	answer     Message
	err        error // with outcome proxyStopped
	done       chan struct{}
}

// proxyOutcome says how a call ended.
type proxyOutcome uint8

const (
	proxyPending  proxyOutcome = iota
	proxyAnswered              // answer holds the hosting node's answer
	proxyNoAck                 // an idempotent call was not acknowledged in time
	proxyExpired               // no answer by the deadline
	proxyStopped               // this node stopped (err)
)

func (x *proxy) init(n *Node) {
	x.n = n
	x.calls = make(map[uint64]*proxyCall)
	x.hint = make(map[int]string)
	x.leaders = make(map[int]proxyLeader)
	x.suspect = make(map[string]uint64)
	x.server.seen = make(map[forwardKey]*proxySeen)
}

// replicate runs a Replicate or ReplicateBatch of a partition this node does not host
// (pr holds the commands and receives the results) through a node that hosts it.
func (x *proxy) replicate(ctx context.Context, partition int, pr *proposal) ([]Result, error) {
	n := x.n
	if err := n.checkCommands(partition, pr.cmds); err != nil {
		return nil, err
	}
	if n.cfg.DisableForwarding {
		// The caller routes writes itself: tell it where to.
		l, err := x.leader(ctx, partition)
		if err != nil {
			return nil, err
		}
		return nil, &NotLeaderError{Partition: partition, Leader: l, LeaderAddr: n.addrs[l]}
	}
	ents := pr.appendEntries(nil)
	ans, host, err := x.call(ctx, partition, proxyOpReplicate, ents, false)
	if err != nil {
		return nil, err
	}
	if len(ans.Entries) != len(pr.cmds) {
		return nil, fmt.Errorf("kommander: partition %d: %w: %s answered with %d results for %d commands", partition, ErrTimeout, host, len(ans.Entries), len(pr.cmds))
	}
	for i, e := range ans.Entries {
		pr.results[i] = Result{Index: e.Index, Term: e.Term, Value: proxyValue(e)}
	}
	return pr.results, nil
}

// read runs a ReadBarrier (ReadBarrierLease when lease) on a node that hosts the
// partition.
func (x *proxy) read(ctx context.Context, partition int, lease bool) error {
	if err := x.n.writable(); err != nil {
		return err
	}
	op := proxyOpRead
	if lease {
		op = proxyOpReadLease
	}
	_, _, err := x.call(ctx, partition, op, nil, true)
	return err
}

// leader asks a node that hosts the partition who leads it, and remembers the answer for
// knownLeader.
func (x *proxy) leader(ctx context.Context, partition int) (string, error) {
	if err := x.n.writable(); err != nil {
		return "", err
	}
	ans, _, err := x.call(ctx, partition, proxyOpLeader, nil, true)
	if err != nil {
		return "", err
	}
	l := ""
	if len(ans.Entries) > 0 {
		l = string(ans.Entries[0].Data)
	}
	x.mu.Lock()
	x.leaders[partition] = proxyLeader{id: l, at: x.now, asked: x.leaders[partition].asked}
	x.mu.Unlock()
	return l, nil
}

// proxyLeader is what a node that hosts no replica of a partition knows of its leader:
// the last answer (id, "" for none) and the tick it came at, and whether a question is
// on its way.
type proxyLeader struct {
	id    string
	at    uint64
	asked bool
}

// knownLeader returns, without waiting, the leader of a partition this node does not host
// as it last learned it ("" when it knows none). When that is older than an election
// timeout, or there is none, it asks a hosting node in the background (one question per
// partition at a time), so that a later call knows: Node.Leader never blocks, and
// WaitForLeader is the call that waits.
func (x *proxy) knownLeader(partition int) string {
	n := x.n
	x.mu.Lock()
	defer x.mu.Unlock()
	l := x.leaders[partition]
	if (l.id != "" && x.now < l.at+uint64(n.elTicks)) || l.asked || x.stopped != nil || n.writable() != nil {
		return l.id
	}
	l.asked = true
	x.leaders[partition] = l
	go func() {
		// Real time, not the node's clock: a fake clock may stand still.
		ctx, cancel := context.WithTimeout(context.Background(), time.Duration(proxyTimeouts+1)*n.cfg.ElectionTimeout)
		defer cancel()
		_, _ = x.leader(ctx, partition)
		x.mu.Lock()
		l := x.leaders[partition]
		l.asked = false
		x.leaders[partition] = l
		x.mu.Unlock()
	}()
	return l.id
}

// waitForLeader asks, once per tick, until a hosting node knows the partition's leader.
func (x *proxy) waitForLeader(ctx context.Context, partition int) (string, error) {
	for {
		x.mu.Lock()
		if x.ticked == nil {
			x.ticked = make(chan struct{})
		}
		ticked := x.ticked
		x.mu.Unlock()
		l, err := x.leader(ctx, partition)
		if l != "" || err != nil && !errors.Is(err, ErrNotLeader) {
			return l, err
		}
		select {
		case <-ticked:
		case <-ctx.Done():
			return "", fmt.Errorf("kommander: partition %d: no leader: %w", partition, ctx.Err())
		}
	}
}

// call sends a request to a node that hosts the partition and waits for its answer. A
// node that hosts none, or that stopped, is passed over for the next; so is, for an
// idempotent request, one that does not acknowledge it in time. It returns the answer and
// the node that gave it; a failed call's error is rebuilt from the answer.
func (x *proxy) call(ctx context.Context, partition int, op uint64, ents []Entry, idempotent bool) (Message, string, error) {
	n := x.n
	var triedBuf [8]string
	tried := triedBuf[:0]
	for {
		host := x.pick(partition, tried)
		if host == "" {
			return Message{}, "", fmt.Errorf("kommander: partition %d: no node that hosts it answered; nothing was done: %w", partition, ErrNotLeader)
		}
		tried = append(tried, host)
		c, err := x.start(partition, host, op, ents, idempotent)
		if err != nil {
			return Message{}, host, err
		}
		select {
		case <-c.done:
		case <-ctx.Done():
			x.mu.Lock()
			delete(x.calls, c.id)
			x.mu.Unlock()
			if idempotent {
				return Message{}, host, fmt.Errorf("kommander: partition %d: abandoned: %w", partition, ctx.Err())
			}
			return Message{}, host, fmt.Errorf("kommander: partition %d: %w: the write sent to %s was abandoned: %w", partition, ErrTimeout, host, ctx.Err())
		}
		switch c.outcome {
		case proxyNoAck:
			continue
		case proxyExpired:
			if idempotent {
				continue
			}
			return Message{}, host, fmt.Errorf("kommander: partition %d: %w: no answer in time from %s, which hosts it", partition, ErrTimeout, host)
		case proxyStopped:
			if idempotent {
				return Message{}, host, c.err
			}
			return Message{}, host, fmt.Errorf("kommander: partition %d: %w: %w", partition, ErrTimeout, c.err)
		}
		ans := c.answer
		if !ans.Reject {
			x.mu.Lock()
			x.hint[partition] = host
			if op == proxyOpLeader && len(ans.Entries) > 0 && len(ans.Entries[0].Data) > 0 && string(ans.Entries[0].Data) != n.cfg.NodeID {
				x.hint[partition] = string(ans.Entries[0].Data) // the leader hosts it: one hop less
			}
			x.mu.Unlock()
			return ans, host, nil
		}
		if ans.RejectHint == proxyErrNotHosted || ans.RejectHint == proxyErrStopped {
			x.mu.Lock()
			if x.hint[partition] == host {
				delete(x.hint, partition)
			}
			x.mu.Unlock()
			continue // nothing was done there
		}
		return Message{}, host, proxyError(partition, host, &ans)
	}
}

// pick returns the node to ask next for partition, of those not tried: the one that
// answered last, then the replicas the placement gives it, then every other member (a
// replica may have moved); those suspected of being down come after the others.
func (x *proxy) pick(partition int, tried []string) string {
	n := x.n
	x.mu.Lock()
	defer x.mu.Unlock()
	var fallback string
	consider := func(id string) bool {
		if id == "" || id == n.cfg.NodeID || slices.Contains(tried, id) {
			return false
		}
		if x.suspect[id] > x.now {
			if fallback == "" {
				fallback = id
			}
			return false
		}
		return true
	}
	if h := x.hint[partition]; consider(h) {
		return h
	}
	for _, id := range n.place.Load().voters(partition) {
		if consider(id) {
			return id
		}
	}
	for _, id := range n.place.Load().members {
		if consider(id) {
			return id
		}
	}
	return fallback
}

// start registers a call and sends its request.
func (x *proxy) start(partition int, host string, op uint64, ents []Entry, idempotent bool) (*proxyCall, error) {
	n := x.n
	c := &proxyCall{host: host, idempotent: idempotent, done: make(chan struct{})}
	x.mu.Lock()
	if x.stopped != nil {
		x.mu.Unlock()
		return nil, fmt.Errorf("kommander: partition %d: %w", partition, x.stopped)
	}
	if len(x.calls) >= maxProxyCalls {
		x.mu.Unlock()
		return nil, fmt.Errorf("kommander: partition %d: %d calls in flight to the nodes that host partitions: %w", partition, len(x.calls), ErrOverloaded)
	}
	// The ID is taken under mu, so that the calls in flight are in ID order in issued.
	c.id = n.nextIDs(1)
	x.calls[c.id] = c
	x.issued = append(x.issued, c.id)
	low := x.oldest()
	x.mu.Unlock()
	n.metrics.forwarded.Add(uint64(len(ents)))
	n.transport.Send(host, []Message{{Type: msgProxy, Partition: uint32(partition), From: n.cfg.NodeID, To: host, Context: c.id, Commit: low, Index: op, Entries: ents}})
	x.mu.Lock()
	c.sent = true // its time runs from the next tick (see tick)
	x.mu.Unlock()
	return c, nil
}

// oldest returns the lowest request ID of the calls in flight (there is one at least).
// The caller holds mu.
func (x *proxy) oldest() uint64 {
	for len(x.issued) > 0 && x.calls[x.issued[0]] == nil {
		x.issued = x.issued[1:]
	}
	if len(x.issued) == 0 {
		x.issued = nil
		return 0
	}
	return x.issued[0]
}

// answer takes a msgProxyResp: an acknowledgement or the answer of a call in flight.
// Loop only.
func (x *proxy) answer(m *Message) {
	x.mu.Lock()
	defer x.mu.Unlock()
	c := x.calls[m.Context]
	if c == nil || c.host != m.From || c.outcome != proxyPending {
		x.n.metrics.dropped.Add(1) // abandoned, or a late copy
		return
	}
	if m.Index == 1 {
		c.acked = true
		return
	}
	c.answer = *m
	c.answer.Entries = slices.Clone(m.Entries)
	x.finish(c, proxyAnswered)
}

// finish ends a call. The caller holds mu.
func (x *proxy) finish(c *proxyCall, o proxyOutcome) {
	c.outcome = o
	delete(x.calls, c.id)
	close(c.done)
}

// tick ends the calls that waited too long, suspects the nodes that did not acknowledge a
// request in time, and forgets old request IDs. Loop only.
func (x *proxy) tick(now uint64) {
	n := x.n
	x.mu.Lock()
	defer x.mu.Unlock()
	x.now = now
	for _, c := range x.calls {
		switch {
		case !c.sent:
		case c.deadline == 0:
			// Time counts from the first tick after the request went out, not from when
			// the caller took its ID: a caller held up in between loses none of it.
			c.ackBy, c.deadline = now+uint64(n.elTicks), now+uint64(proxyTimeouts*n.elTicks)
		case now >= c.deadline:
			x.finish(c, proxyExpired)
		case !c.acked && now >= c.ackBy:
			if x.suspect[c.host] <= now {
				x.suspect[c.host] = now + uint64(proxySuspectTimeouts*n.elTicks)
			}
			if c.idempotent {
				x.finish(c, proxyNoAck)
			}
		}
	}
	for id, until := range x.suspect {
		if until <= now {
			delete(x.suspect, id)
		}
	}
	if x.ticked != nil {
		close(x.ticked)
		x.ticked = nil
	}
	x.server.forget(now, uint64(proxySeenTimeouts*n.elTicks))
}

// failAll answers every call in flight: this node stops (cause).
func (x *proxy) failAll(cause error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.stopped == nil {
		x.stopped = cause
	}
	for _, c := range x.calls {
		c.err = fmt.Errorf("kommander: node %s: %w", x.n.cfg.NodeID, cause)
		x.finish(c, proxyStopped)
	}
}

// proxyResult encodes one result for an answer.
func proxyResult(r Result) Entry {
	e := Entry{Index: r.Index, Term: r.Term}
	switch v := r.Value.(type) {
	case []byte:
		e.ID, e.Data = proxyValueBytes, v
	case string:
		e.ID, e.Data = proxyValueString, []byte(v)
	}
	return e
}

// proxyValue decodes the value of one result of an answer.
func proxyValue(e Entry) any {
	switch e.ID {
	case proxyValueBytes:
		return e.Data
	case proxyValueString:
		return string(e.Data)
	}
	return nil
}

// proxyFailure makes resp the answer of a failed call.
func proxyFailure(resp Message, class uint64, err error) Message {
	text := err.Error()
	if len(text) > maxProxyErrText {
		text = text[:maxProxyErrText]
	}
	resp.Reject, resp.RejectHint, resp.Entries = true, class, []Entry{{Data: []byte(text)}}
	return resp
}

// proxyErrorClasses maps the classes of errors an answer names to the sentinels they wrap
// on the asking node, in the order a hosting node tests them: an unknown outcome first, so
// that an error that wraps both ErrTimeout and ErrStopped is never taken as a definite
// failure. proxyErrNotHosted and proxyErrStopped make the asking node ask another.
var proxyErrorClasses = [...]struct {
	class    uint64
	sentinel error
}{
	{proxyErrUnknown, ErrTimeout},
	{proxyErrNotHosted, ErrNotHosted},
	{proxyErrStopped, ErrStopped},
	{proxyErrNotLeader, ErrNotLeader},
	{proxyErrOverloaded, ErrOverloaded},
	{proxyErrTooLarge, ErrTooLarge},
	{proxyErrNoPartition, ErrNoPartition},
}

// proxyErrorClass is the class of a call's error.
func proxyErrorClass(err error) uint64 {
	for _, c := range proxyErrorClasses {
		if errors.Is(err, c.sentinel) {
			return c.class
		}
	}
	return proxyErrFailed
}

// proxyError rebuilds the error of a failed call from its answer.
func proxyError(partition int, host string, m *Message) error {
	var text string
	if len(m.Entries) > 0 {
		text = string(m.Entries[0].Data)
	}
	for _, c := range proxyErrorClasses {
		if c.class == m.RejectHint {
			return fmt.Errorf("kommander: partition %d: through %s: %w (%s)", partition, host, c.sentinel, text)
		}
	}
	return fmt.Errorf("kommander: partition %d: through %s: %s", partition, host, text)
}
