package kommander

import (
	"fmt"
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
				cfgA, cfgB := transportTestConfig("a"), transportTestConfig("b")
				cfgA.PeerTimeout, cfgB.PeerTimeout = 10*time.Second, 10*time.Second
				if secret {
					cfgA.Secret, cfgB.Secret = []byte("benchmark secret"), []byte("benchmark secret")
				}
				ta, err := tc.new(cfgA)
				if err != nil {
					b.Fatal(err)
				}
				tb, err := tc.new(cfgB)
				if err != nil {
					b.Fatal(err)
				}
				defer ta.Close()
				defer tb.Close()
				back := make(chan struct{}, 1)
				ta.Start(func([]Message) { back <- struct{}{} })
				reply := []Message{{Type: MsgAppendResp, To: "a", Term: 1, Index: 11}}
				tb.Start(func([]Message) { tb.Send("a", reply[:1:1]) })
				ta.SetPeer("b", tb.Addr())
				tb.SetPeer("a", ta.Addr())
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
