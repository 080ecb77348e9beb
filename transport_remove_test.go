package kommander

import "testing"

// TestTransportConformanceRemovedPeerIsRefused: after RemovePeer, a transport sends the
// peer nothing and refuses what it sends (its open connection is closed, a new one is
// refused like a stranger's), so that a node removed from the cluster cannot disturb it;
// SetPeer admits it again.
func TestTransportConformanceRemovedPeerIsRefused(t *testing.T) {
	for _, tc := range transportCases() {
		t.Run(tc.name, func(t *testing.T) {
			a, b := startTransportNode(t, tc, transportTestConfig("a")), startTransportNode(t, tc, transportTestConfig("b"))
			connectAll(a, b)
			b.tr.Send("a", []Message{testHeartbeat(1, 1)})
			a.rec.waitFor(t, transportWait, "b's first message", func(m []Message) bool { return countMsgs(m, withMsgContext(1)) == 1 })

			a.tr.RemovePeer("b")
			a.tr.Send("b", []Message{testHeartbeat(1, 9)})
			stop := make(chan struct{})
			wg := keepSending(b, "a", 2, stop)
			if tc.network {
				// b's connection is closed and its new ones are refused: wait for two
				// refusals, so that anything b wrote before the first one has arrived.
				waitForCondition(t, transportWait, "two refusals of b", func() bool { return a.tr.Stats().Rejected >= 2 })
				before, _ := a.rec.snapshot()
				seen := a.tr.Stats().Rejected
				waitForCondition(t, transportWait, "another refusal of b", func() bool { return a.tr.Stats().Rejected > seen })
				after, _ := a.rec.snapshot()
				if got, was := countMsgs(after, withMsgContext(2)), countMsgs(before, withMsgContext(2)); got != was {
					t.Fatalf("a delivered %d more messages of the removed b", got-was)
				}
				if s := a.tr.Stats(); s.Dropped == 0 {
					t.Fatalf("a's message to the removed b was not dropped: %+v", s)
				}
			} else {
				b.tr.Send("a", []Message{testHeartbeat(1, 2)})
				if got, _ := a.rec.snapshot(); countMsgs(got, withMsgContext(2)) != 0 {
					t.Fatalf("a delivered the removed b's messages")
				}
			}
			if got, _ := b.rec.snapshot(); countMsgs(got, withMsgContext(9)) != 0 {
				t.Fatalf("b received a's message sent after RemovePeer")
			}

			a.tr.SetPeer("b", b.tr.Addr())
			a.rec.waitFor(t, transportWait, "b's traffic once admitted again", func(m []Message) bool { return countMsgs(m, withMsgContext(2)) > 0 })
			close(stop)
			wg.Wait()
		})
	}
}
