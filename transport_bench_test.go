package kommander

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"
)

// BenchmarkTransportRoundTrip measures the latency of one message there and one back over
// loopback, one at a time: an append of one 128-byte entry from a to b, and b's answer,
// sent from its deliver callback. That is the hop a lone caller's write crosses twice
// (leader to follower, follower to leader), and what bounds a transport that cannot
// overlap its requests. ns/op is one round trip; allocs/op counts both transports.
//
//	go test -run '^$' -bench BenchmarkTransportRoundTrip -benchmem .
func BenchmarkTransportRoundTrip(b *testing.B) {
	for _, tc := range networkCases() {
		for _, secret := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/secret=%v", tc.name, secret), func(b *testing.B) {
				cfgA, cfgB := benchTransportConfigs()
				if secret {
					cfgA.Secret, cfgB.Secret = []byte("benchmark secret"), []byte("benchmark secret")
				}
				back := make(chan struct{}, 1)
				reply := []Message{{Type: MsgAppendResp, To: "a", Term: 1, Index: 11}}
				var self atomic.Value // b, for its deliver callback to answer through
				ta, tb := startTransportPair(b, tc, cfgA, cfgB, func([]Message) { back <- struct{}{} },
					func([]Message) { self.Load().(testTransport).Send("a", reply[:1:1]) })
				self.Store(tb)
				msg := []Message{{Type: MsgAppend, To: "b", Term: 1, Index: 10, LogTerm: 1, Commit: 9,
					Entries: []Entry{{Term: 1, Index: 11, Type: "put", Data: make([]byte, 128)}}}}
				roundTrip := func() {
					ta.Send("b", msg[:1:1])
					select {
					case <-back:
					case <-time.After(5 * time.Second):
						b.Fatalf("no answer in 5s (a: %+v, b: %+v)", ta.Stats(), tb.Stats())
					}
				}
				roundTrip() // connections up
				b.ReportAllocs()
				b.ResetTimer()
				for range b.N {
					roundTrip()
				}
			})
		}
	}
}
