package kommander

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

var testMulticastSecret = []byte("multicast-secret-0123456789")

// testGroup is a multicast group simulated in memory: what a member sends reaches every
// member, itself included (as the loopback does), at once, inside the FakeClock's Advance.
type testGroup struct {
	mu      sync.Mutex
	members []*multicast
	muted   map[*multicast]bool
	sent    [][]byte // every datagram, for replays
}

func (g *testGroup) join(t *testing.T, clock *FakeClock, opts MulticastOptions) *multicast {
	t.Helper()
	opts.Clock, opts.Logger = clock, discardLogger()
	opts, err := opts.withDefaults()
	if err != nil {
		t.Fatal(err)
	}
	var m *multicast
	m = newMulticast(opts, func(b []byte) error {
		g.mu.Lock()
		if g.muted[m] {
			g.mu.Unlock()
			return nil
		}
		g.sent = append(g.sent, bytes.Clone(b))
		members := append([]*multicast(nil), g.members...)
		g.mu.Unlock()
		for _, o := range members {
			o.handle(b)
		}
		return nil
	})
	g.mu.Lock()
	g.members = append(g.members, m)
	g.mu.Unlock()
	t.Cleanup(func() { m.Close() })
	return m
}

func (g *testGroup) mute(m *multicast) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.muted == nil {
		g.muted = make(map[*multicast]bool)
	}
	g.muted[m] = true
}

// lastSentBy returns the last datagram the group carried from node id.
func (g *testGroup) lastSentBy(id string) []byte {
	g.mu.Lock()
	defer g.mu.Unlock()
	var last []byte
	for _, b := range g.sent {
		if d, err := decodeDatagram(b); err == nil && d.self.ID == id {
			last = b
		}
	}
	return last
}

func multicastPeers(t *testing.T, m *multicast) []Peer {
	t.Helper()
	peers, err := m.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return peers
}

// threeAnnouncers starts a group of three announced nodes a, b, c.
func threeAnnouncers(t *testing.T, clock *FakeClock, opts MulticastOptions) (*testGroup, []*multicast) {
	g := &testGroup{}
	var ms []*multicast
	for _, id := range []string{"a", "b", "c"} {
		m := g.join(t, clock, opts)
		announceTest(t, m, id, id+":1", "inc-"+id)
		ms = append(ms, m)
	}
	return g, ms
}

func TestMulticastAnnouncersDiscoverEachOtherAndSilentOnesExpire(t *testing.T) {
	for _, secret := range [][]byte{nil, testMulticastSecret} {
		t.Run(fmt.Sprintf("secret=%v", secret != nil), func(t *testing.T) {
			clock := NewFakeClock(time.Now())
			opts := MulticastOptions{Interval: time.Second, Timeout: 3 * time.Second, Secret: secret}
			g, ms := threeAnnouncers(t, clock, opts)
			w := ms[0].Watch(context.Background())
			clock.Advance(time.Second) // a heard b and c when they started; b and c hear a now
			for i, m := range ms {
				wantPeers(t, fmt.Sprintf("node %d", i), multicastPeers(t, m), "a=a:1,b=b:1,c=c:1")
			}
			wantPeers(t, "a's watch", latest(w), "a=a:1,b=b:1,c=c:1")

			// c goes silent (crashed, or cut off): after Timeout the others drop it.
			g.mute(ms[2])
			clock.Advance(2 * time.Second)
			wantPeers(t, "a before c's timeout", multicastPeers(t, ms[0]), "a=a:1,b=b:1,c=c:1")
			clock.Advance(2 * time.Second)
			wantPeers(t, "a after c's timeout", multicastPeers(t, ms[0]), "a=a:1,b=b:1")
			wantPeers(t, "b after c's timeout", multicastPeers(t, ms[1]), "a=a:1,b=b:1")
			wantPeers(t, "a's watch after c's timeout", latest(w), "a=a:1,b=b:1")

			// b leaves: the others drop it at once.
			if err := ms[1].Close(); err != nil {
				t.Fatal(err)
			}
			wantPeers(t, "a after b left", multicastPeers(t, ms[0]), "a=a:1")
		})
	}
}

// latest returns the newest set a watch channel holds.
func latest(w <-chan []Peer) []Peer {
	select {
	case p := <-w:
		return p
	default:
		return nil
	}
}

func TestMulticastFollowsANewAddress(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	g, ms := threeAnnouncers(t, clock, MulticastOptions{})
	g.mute(ms[2])
	c2 := g.join(t, clock, MulticastOptions{})
	clock.Advance(time.Millisecond)
	announceTest(t, c2, "c", "c-moved:1", "inc-c") // the same data directory, a new address
	wantPeers(t, "a after c moved", multicastPeers(t, ms[0]), "a=a:1,b=b:1,c=c-moved:1")
}

func TestMulticastIgnoresOtherClustersAndTakeovers(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	g, ms := threeAnnouncers(t, clock, MulticastOptions{Cluster: "c1"})
	other := g.join(t, clock, MulticastOptions{Cluster: "c2"})
	announceTest(t, other, "x", "x:1", "inc-x")
	clock.Advance(time.Second)      // everyone has heard everyone: b's ID is held
	clock.Advance(time.Millisecond) // the thief's stamps are newer than b's
	thief := g.join(t, clock, MulticastOptions{Cluster: "c1"})
	announceTest(t, thief, "b", "evil:1", "inc-evil") // b's ID, another incarnation
	clock.Advance(3 * time.Second)
	for i, m := range ms {
		wantPeers(t, fmt.Sprintf("node %d", i), multicastPeers(t, m), "a=a:1,b=b:1,c=c:1")
	}
	wantPeers(t, "the other cluster", multicastPeers(t, other), "x=x:1")
}

func TestMulticastWithSecretIgnoresUnsignedBadlySignedStaleAndReplayed(t *testing.T) {
	clock := NewFakeClock(time.Now())
	opts := MulticastOptions{Secret: testMulticastSecret, Interval: time.Second, Timeout: 3 * time.Second}
	g, ms := threeAnnouncers(t, clock, opts)
	unsigned := g.join(t, clock, MulticastOptions{})
	announceTest(t, unsigned, "u", "u:1", "inc-u")
	forger := g.join(t, clock, MulticastOptions{Secret: []byte("not-the-secret-0123456789")})
	announceTest(t, forger, "f", "f:1", "inc-f")
	clock.Advance(time.Second)
	wantPeers(t, "a", multicastPeers(t, ms[0]), "a=a:1,b=b:1,c=c:1")

	// A datagram signed at a time outside the window.
	stale, err := encodeDatagram(datagram{stamp: clock.Now().Add(-time.Minute).UnixNano(), cluster: "kommander",
		self: Announcement{ID: "s", Addr: "s:1", Incarnation: "inc-s"}}, testMulticastSecret)
	if err != nil {
		t.Fatal(err)
	}
	ms[0].handle(stale)
	// A signed datagram with its address changed on the way.
	fromC := g.lastSentBy("c")
	tampered := bytes.Replace(fromC, []byte("c:1"), []byte("e:1"), 1)
	ms[0].handle(tampered)
	wantPeers(t, "a after stale and tampered datagrams", multicastPeers(t, ms[0]), "a=a:1,b=b:1,c=c:1")

	// c leaves; its earlier announcements, replayed, do not bring it back, neither while
	// its leave is remembered nor after c would have expired.
	if err := ms[2].Close(); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{0, 4 * time.Second, 20 * time.Second} {
		clock.Advance(at)
		ms[0].handle(fromC)
		wantPeers(t, fmt.Sprintf("a after replays of c, %v later", at), multicastPeers(t, ms[0]), "a=a:1,b=b:1")
	}
	// b goes silent and expires; a replay of its last announcement does not revive it.
	fromB := g.lastSentBy("b")
	g.mute(ms[1])
	clock.Advance(4 * time.Second)
	ms[0].handle(fromB)
	wantPeers(t, "a after b expired and was replayed", multicastPeers(t, ms[0]), "a=a:1")
}

func TestMulticastBoundsItsNodesAndDropsGarbage(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	g := &testGroup{}
	m := g.join(t, clock, MulticastOptions{MaxNodes: 2})
	for i := range 5 {
		b, err := encodeDatagram(datagram{stamp: 1, cluster: "kommander",
			self: Announcement{ID: fmt.Sprintf("n%d", i), Addr: "h:1", Incarnation: "i"}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		m.handle(b)
	}
	wantPeers(t, "after five nodes announced", multicastPeers(t, m), "n0=h:1,n1=h:1")
	for _, b := range [][]byte{nil, []byte("KD"), []byte("GET / HTTP/1.1\r\n"), bytes.Repeat([]byte{'K'}, 2000)} {
		m.handle(b)
	}
	if got := m.dropped.Load(); got != 3+4 {
		t.Fatalf("dropped %d datagrams, want 7", got)
	}
	wantPeers(t, "after garbage", multicastPeers(t, m), "n0=h:1,n1=h:1")
}

// TestMulticastDatagramFormat pins the byte layout documented in multicast_format.go.
func TestMulticastDatagramFormat(t *testing.T) {
	d := datagram{stamp: 0x0102030405060708, leaving: true, cluster: "c", self: Announcement{ID: "n1", Addr: "h:7", Incarnation: "i"}}
	b, err := encodeDatagram(d, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "4b44" + "01" + "02" + "0102030405060708" + "0163" + "026e31" + "03683a37" + "0169"
	if got := hex.EncodeToString(b); got != want {
		t.Fatalf("datagram\n got %s\nwant %s", got, want)
	}
	signed, err := encodeDatagram(d, testMulticastSecret)
	if err != nil {
		t.Fatal(err)
	}
	if len(signed) != len(b)+32 || signed[3] != flagSigned|flagLeaving || !bytes.Equal(signed[4:len(b)], b[4:]) {
		t.Fatalf("signed datagram %x", signed)
	}
	got, err := decodeDatagram(signed)
	if err != nil || !got.verify(testMulticastSecret) || got.verify([]byte("not-the-secret-0123456789")) ||
		got.self != d.self || got.stamp != d.stamp || !got.leaving || got.cluster != "c" {
		t.Fatalf("decoded %+v, %v", got, err)
	}
	for _, bad := range []string{
		"",       // empty
		"4b4402", // another version (caught before the length)
		"4b44010401020304050607080163026e3103683a370169",   // unknown flag
		"4b4401000102030405060708016302",                   // truncated ID
		"4b44010001020304050607080163026e3103683a37016900", // trailing byte
		"4b44010001020304050607080063026e3103683a370169",   // empty cluster
		"4b44010101020304050607080163026e3103683a370169",   // signed, no MAC
	} {
		b, _ := hex.DecodeString(bad)
		if _, err := decodeDatagram(b); err == nil {
			t.Errorf("decoded %s", bad)
		}
	}
	if _, err := encodeDatagram(datagram{cluster: "c", self: Announcement{ID: "n", Addr: "h:1", Incarnation: strings.Repeat("i", 65)}}, nil); err == nil {
		t.Error("encoded an incarnation of 65 bytes")
	}
}

// FuzzDecodeDatagram checks that the decoder never panics, never accepts what the encoder
// would not produce, and that what it accepts encodes back to the same bytes.
func FuzzDecodeDatagram(f *testing.F) {
	for _, d := range []datagram{
		{stamp: 1, cluster: "kommander", self: Announcement{ID: "n1", Addr: "10.0.0.1:7000", Incarnation: "0123456789abcdef"}},
		{stamp: 1 << 62, leaving: true, cluster: "c", self: Announcement{ID: "n", Addr: "h:1", Incarnation: "i"}},
	} {
		for _, secret := range [][]byte{nil, testMulticastSecret} {
			b, err := encodeDatagram(d, secret)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		d, err := decodeDatagram(b)
		if err != nil {
			return
		}
		if err := d.self.check(); err != nil {
			t.Fatalf("accepted an announcement that fails its check: %v", err)
		}
		again, err := encodeDatagram(d, nil)
		if err != nil {
			t.Fatalf("accepted what cannot be encoded: %v", err)
		}
		n := len(b)
		if d.signed {
			n -= 32
			again[3] |= flagSigned
		}
		if !bytes.Equal(again, b[:n]) {
			t.Fatalf("decode then encode changed the bytes:\n in %x\nout %x", b, again)
		}
		// The handler takes what the decoder takes, without a socket.
		m := newMulticast(MulticastOptions{Cluster: d.cluster, Interval: time.Second, Timeout: 2 * time.Second,
			MaxNodes: 4, MaxClockSkew: time.Second, Clock: NewFakeClock(time.Time{}), Logger: discardLogger(),
			Secret: testMulticastSecret}, func([]byte) error { return nil })
		m.handle(b)
		m.Close()
	})
}

func TestMulticastOptionsAndInterfaceChecks(t *testing.T) {
	for _, o := range []MulticastOptions{
		{Group: "10.0.0.1"},
		{Group: "ff02::1"},
		{Port: 70000},
		{TTL: 300},
		{Secret: []byte("short")},
		{Interval: time.Second, Timeout: time.Second},
	} {
		if _, err := o.withDefaults(); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", o, err)
		}
	}
	err := checkMulticastInterface(&net.Interface{Name: "lo", Flags: net.FlagUp | net.FlagLoopback})
	if !errors.Is(err, ErrNoMulticast) || !strings.Contains(err.Error(), `"lo"`) {
		t.Errorf("interface without multicast: %v", err)
	}
	if err := checkMulticastInterface(&net.Interface{Name: "eth0", Flags: net.FlagMulticast}); err == nil || !strings.Contains(err.Error(), "down") {
		t.Errorf("interface down: %v", err)
	}
	if err := checkMulticastInterface(&net.Interface{Name: "eth0", Flags: net.FlagUp | net.FlagMulticast}); err != nil {
		t.Errorf("good interface: %v", err)
	}
	if _, err := MulticastDiscovery(MulticastOptions{Interface: "no-such-interface-x"}); err == nil {
		t.Error("an unknown interface was accepted")
	}
}

const netnsEnv = "KOMMANDER_MULTICAST_NETNS"

// TestMulticastOverLoopbackInANetworkNamespace runs three multicast discoveries over real
// sockets. Multicast on loopback needs a route and the multicast flag on lo, which a test
// must not set on the host: it runs itself again inside a network namespace of its own.
func TestMulticastOverLoopbackInANetworkNamespace(t *testing.T) {
	if os.Getenv(netnsEnv) == "1" {
		multicastOverSockets(t)
		return
	}
	runInMulticastNamespace(t)
}

// runInMulticastNamespace runs the calling test again, alone, in a network namespace
// whose loopback carries multicast, and fails unless it passes there. Where that cannot
// be done it says why; in CI (Linux, root, .ci/run installs iproute2) it must run, so
// there a missing precondition fails the test instead of skipping it.
func runInMulticastNamespace(t *testing.T) {
	cannot := t.Skipf
	if os.Getenv("CI") == "true" && runtime.GOOS == "linux" {
		cannot = t.Fatalf
	}
	if runtime.GOOS != "linux" {
		cannot("needs a Linux network namespace (unshare -n) to turn on multicast on loopback")
	}
	if os.Geteuid() != 0 {
		cannot("needs root to create a network namespace (unshare -n); CI runs as root")
	}
	for _, tool := range []string{"unshare", "ip"} {
		if _, err := exec.LookPath(tool); err != nil {
			cannot("needs %s (util-linux, iproute2) to set up the namespace: %v", tool, err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "unshare", "-n", "sh", "-c",
		`ip link set lo up && ip link set lo multicast on && ip route add 224.0.0.0/4 dev lo && exec "$0" -test.run "^$1\$" -test.count=1 -test.v`,
		os.Args[0], t.Name())
	cmd.Env = append(os.Environ(), netnsEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in the namespace: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: "+t.Name()) {
		t.Fatalf("the test did not pass in the namespace:\n%s", out)
	}
}

func multicastOverSockets(t *testing.T) {
	opts := MulticastOptions{Interface: "lo", Port: 17947, Interval: 20 * time.Millisecond, Timeout: time.Second,
		Secret: testMulticastSecret, Logger: discardLogger()}
	var ds []Discovery
	for _, id := range []string{"a", "b", "c"} {
		d, err := MulticastDiscovery(opts)
		if err != nil {
			t.Fatal(err)
		}
		defer d.Close()
		announceTest(t, d, id, id+":1", "")
		ds = append(ds, d)
	}
	waitPeers := func(d Discovery, want string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		var last []Peer
		for peers := range d.Watch(ctx) {
			if last = peers; peerIDs(peers) == want {
				return
			}
		}
		t.Fatalf("timed out waiting for %q; last saw %q", want, peerIDs(last))
	}
	for _, d := range ds {
		waitPeers(d, "a=a:1,b=b:1,c=c:1")
	}
	if err := ds[2].Close(); err != nil {
		t.Fatal(err)
	}
	waitPeers(ds[0], "a=a:1,b=b:1")
	// Another cluster on the same group is not seen.
	o2 := opts
	o2.Cluster = "other"
	other, err := MulticastDiscovery(o2)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	announceTest(t, other, "x", "x:1", "")
	waitPeers(other, "x=x:1")
	if p, _ := ds[0].Peers(context.Background()); peerIDs(p) != "a=a:1,b=b:1" {
		t.Fatalf("a sees %q", peerIDs(p))
	}
	// An interface without multicast gets a clear error.
	if err := exec.Command("ip", "link", "set", "lo", "multicast", "off").Run(); err != nil {
		t.Fatal(err)
	}
	if _, err := MulticastDiscovery(opts); !errors.Is(err, ErrNoMulticast) {
		t.Fatalf("lo without multicast: %v, want ErrNoMulticast", err)
	}
}
