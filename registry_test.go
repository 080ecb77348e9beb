package kommander

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var testRegistrySecret = []byte("registry-secret-0123456789")

// testRegistry is a RegistryServer on an httptest server, driven by a FakeClock.
type testRegistry struct {
	srv *RegistryServer
	url string
}

// startRegistries starts n registries on one clock; each is given the others' URLs that
// seeds(i) names as seeds.
func startRegistries(t *testing.T, clock *FakeClock, n int, opts RegistryOptions, seeds func(i int) []int) []*testRegistry {
	t.Helper()
	regs := make([]*testRegistry, n)
	handlers := make([]http.Handler, n)
	for i := range regs {
		i := i
		ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handlers[i].ServeHTTP(w, r) }))
		t.Cleanup(ts.Close)
		regs[i] = &testRegistry{url: ts.URL}
	}
	for i, r := range regs {
		o := opts
		o.Clock = clock
		o.Logger = discardLogger()
		o.Seeds = nil
		if seeds != nil {
			for _, j := range seeds(i) {
				o.Seeds = append(o.Seeds, regs[j].url)
			}
		}
		srv, err := NewRegistryServer(o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { srv.Close() })
		r.srv, handlers[i] = srv, srv
	}
	return regs
}

func newTestRegistryClient(t *testing.T, clock *FakeClock, opts RegistryOptions, urls ...string) *registryClient {
	t.Helper()
	opts.Clock, opts.Logger = clock, discardLogger()
	d, err := RegistryDiscovery(opts, urls...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	return d.(*registryClient)
}

func peerIDs(peers []Peer) string {
	ids := make([]string, len(peers))
	for i, p := range peers {
		ids[i] = p.ID + "=" + p.Addr
	}
	return strings.Join(ids, ",")
}

func wantPeers(t *testing.T, what string, got []Peer, want string) {
	t.Helper()
	if g := peerIDs(got); g != want {
		t.Fatalf("%s: peers %q, want %q", what, g, want)
	}
}

func announceTest(t *testing.T, d Discovery, id, addr, inc string) {
	t.Helper()
	if err := d.Announce(context.Background(), Announcement{ID: id, Addr: addr, Incarnation: inc}); err != nil {
		t.Fatal(err)
	}
}

// registryWithTwoClients starts a registry with a TTL of 3s and two clients that renew
// every second.
func registryWithTwoClients(t *testing.T) (*FakeClock, RegistryOptions, *testRegistry, *registryClient, *registryClient) {
	clock := NewFakeClock(time.Time{})
	opts := RegistryOptions{TTL: 3 * time.Second, Interval: time.Second}
	reg := startRegistries(t, clock, 1, opts, nil)[0]
	return clock, opts, reg, newTestRegistryClient(t, clock, opts, reg.url), newTestRegistryClient(t, clock, opts, reg.url)
}

func TestRegistryRenewsExpiresAndDeregisters(t *testing.T) {
	clock, _, reg, a, b := registryWithTwoClients(t)
	announceTest(t, a, "a", "10.0.0.1:7000", "inc-a")
	announceTest(t, b, "b", "10.0.0.2:7000", "inc-b")
	peers, err := a.Peers(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	wantPeers(t, "after two registrations", peers, "a=10.0.0.1:7000,b=10.0.0.2:7000")

	// Renewals every second keep both alive for many TTLs.
	clock.Advance(10 * time.Second)
	wantPeers(t, "after renewals", reg.srv.Peers(), "a=10.0.0.1:7000,b=10.0.0.2:7000")

	// b stops renewing (its process died: no deregistration) and expires after its TTL.
	crashRegistryClient(b)
	clock.Advance(2 * time.Second)
	wantPeers(t, "before b's TTL is over", reg.srv.Peers(), "a=10.0.0.1:7000,b=10.0.0.2:7000")
	clock.Advance(time.Second + time.Millisecond)
	wantPeers(t, "after b's TTL", reg.srv.Peers(), "a=10.0.0.1:7000")

	// a deregisters on Close: gone at once, not after its TTL.
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	wantPeers(t, "after a's Close", reg.srv.Peers(), "")
	clock.Advance(10 * time.Second)
	wantPeers(t, "after a's Close and renewal times", reg.srv.Peers(), "")
}

// crashRegistryClient stops c's renewals without deregistering, as a crash would.
func crashRegistryClient(c *registryClient) {
	c.mu.Lock()
	rep := c.rep
	c.self, c.closed = nil, true
	c.mu.Unlock()
	rep.stop()
}

func TestRegistryWatchSeesNodesAndAddressChanges(t *testing.T) {
	clock, opts, reg, a, b := registryWithTwoClients(t)
	ctx, cancel := context.WithCancel(context.Background())
	w := a.Watch(ctx)
	announceTest(t, a, "a", "h1:1", "inc-a")
	wantPeers(t, "a's watch after its own registration", <-w, "a=h1:1")
	announceTest(t, b, "b", "h2:1", "inc-b")
	clock.Advance(time.Second)
	wantPeers(t, "a's watch after b registered", <-w, "a=h1:1,b=h2:1")
	// b restarts at another address with the same incarnation (its data directory): the
	// registry takes the new address at once, and a's watch reports it.
	crashRegistryClient(b)
	clock.Advance(time.Millisecond)
	b2 := newTestRegistryClient(t, clock, opts, reg.url)
	announceTest(t, b2, "b", "h3:1", "inc-b")
	clock.Advance(time.Second)
	wantPeers(t, "a's watch after b moved", <-w, "a=h1:1,b=h3:1")
	cancel()
	for range w { // closed when ctx ends
	}
}

func TestRegistryConcurrentRegistrations(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	opts := RegistryOptions{}
	reg := startRegistries(t, clock, 1, opts, nil)[0]
	const n = 32
	var wg sync.WaitGroup
	var want []string
	for i := range n {
		id := fmt.Sprintf("n%02d", i)
		want = append(want, id+"=addr-"+id)
		c := newTestRegistryClient(t, clock, opts, reg.url)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 3 { // renewals race registrations of the others
				if err := c.Announce(context.Background(), Announcement{ID: id, Addr: "addr-" + id, Incarnation: "inc-" + id}); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	wantPeers(t, "after concurrent registrations", reg.srv.Peers(), strings.Join(want, ","))
}

// rawRegistryRequest sends body to path with method, signed with secret when set, and
// returns the status.
func rawRegistryRequest(t *testing.T, clock Clock, base, method, pathQuery string, body []byte, secret []byte) int {
	t.Helper()
	req, err := http.NewRequest(method, base+pathQuery, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := signRegistryRequest(req, secret, clock.Now(), body); err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

func TestRegistryRefusesBadInput(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	reg := startRegistries(t, clock, 1, RegistryOptions{Cluster: "c1", MaxNodes: 4}, nil)[0]
	good := `{"cluster":"c1","id":"a","addr":"h:1","incarnation":"i1","stamp":1}`
	if code := rawRegistryRequest(t, clock, reg.url, "POST", registryPathRegister, []byte(good), nil); code != 200 {
		t.Fatalf("a good registration got %d", code)
	}
	entries := `{"cluster":"c1","entries":[{"id":"x","addr":"h:1","incarnation":"i","stamp":1,"left_ms":1000}]}`
	for _, tc := range []struct {
		name, method, path, body string
		want                     int
	}{
		{"malformed JSON", "POST", registryPathRegister, `{"cluster":`, 400},
		{"not an object", "POST", registryPathRegister, `[1,2]`, 400},
		{"trailing data", "POST", registryPathRegister, good + `{}`, 400},
		{"unknown field", "POST", registryPathRegister, `{"cluster":"c1","id":"b","addr":"h:1","incarnation":"i","stamp":1,"admin":true}`, 400},
		{"empty ID", "POST", registryPathRegister, `{"cluster":"c1","id":"","addr":"h:1","incarnation":"i","stamp":1}`, 400},
		{"oversize ID", "POST", registryPathRegister, `{"cluster":"c1","id":"` + strings.Repeat("x", 256) + `","addr":"h:1","incarnation":"i","stamp":1}`, 400},
		{"no address", "POST", registryPathRegister, `{"cluster":"c1","id":"b","incarnation":"i","stamp":1}`, 400},
		{"no stamp", "POST", registryPathRegister, `{"cluster":"c1","id":"b","addr":"h:1","incarnation":"i"}`, 400},
		{"negative TTL", "POST", registryPathRegister, `{"cluster":"c1","id":"b","addr":"h:1","incarnation":"i","stamp":1,"ttl_ms":-5}`, 400},
		{"oversize body", "POST", registryPathRegister, `{"cluster":"c1","id":"b","addr":"` + strings.Repeat("h", maxRegistryBody) + `","incarnation":"i","stamp":1}`, 413},
		{"wrong cluster", "POST", registryPathRegister, `{"cluster":"c2","id":"b","addr":"h:1","incarnation":"i","stamp":1}`, 403},
		{"GET on register", "GET", registryPathRegister, ``, 405},
		{"POST on nodes", "POST", registryPathNodes + "?cluster=c1", ``, 405},
		{"nodes without cluster", "GET", registryPathNodes, ``, 400},
		{"nodes of another cluster", "GET", registryPathNodes + "?cluster=c2", ``, 403},
		{"nodes with extra parameters", "GET", registryPathNodes + "?cluster=c1&x=1", ``, 400},
		{"exchange of another cluster", "POST", registryPathExchange, strings.Replace(entries, "c1", "c2", 1), 403},
		{"exchange with a bad entry", "POST", registryPathExchange, strings.Replace(entries, `"stamp":1`, `"stamp":0`, 1), 400},
		{"exchange with too many entries", "POST", registryPathExchange, `{"cluster":"c1","entries":[` +
			strings.TrimSuffix(strings.Repeat(`{"id":"x","addr":"h:1","incarnation":"i","stamp":1,"left_ms":1000},`, 5), ",") + `]}`, 400},
		{"deregistration by another incarnation", "POST", registryPathDeregister, `{"cluster":"c1","id":"a","incarnation":"i2","stamp":9}`, 409},
		{"takeover by another incarnation", "POST", registryPathRegister, `{"cluster":"c1","id":"a","addr":"evil:1","incarnation":"i2","stamp":9}`, 409},
		{"unknown path", "GET", "/v1/admin", ``, 404},
	} {
		if code := rawRegistryRequest(t, clock, reg.url, tc.method, tc.path, []byte(tc.body), nil); code != tc.want {
			t.Errorf("%s: status %d, want %d", tc.name, code, tc.want)
		}
		wantPeers(t, tc.name, reg.srv.Peers(), "a=h:1")
	}
}

func TestRegistryWithSecretRefusesUnsignedBadAndReplayedRequests(t *testing.T) {
	clock := NewFakeClock(time.Now()) // the request timestamps are checked against it
	reg := startRegistries(t, clock, 1, RegistryOptions{Secret: testRegistrySecret}, nil)[0]
	body := []byte(`{"cluster":"kommander","id":"a","addr":"h:1","incarnation":"i1","stamp":1}`)
	if code := rawRegistryRequest(t, clock, reg.url, "POST", registryPathRegister, body, nil); code != 401 {
		t.Fatalf("unsigned registration: status %d, want 401", code)
	}
	if code := rawRegistryRequest(t, clock, reg.url, "POST", registryPathRegister, body, []byte("another-secret-0123456789")); code != 401 {
		t.Fatalf("registration signed with another secret: status %d, want 401", code)
	}
	if code := rawRegistryRequest(t, clock, reg.url, "GET", registryPathNodes+"?cluster=kommander", nil, nil); code != 401 {
		t.Fatalf("unsigned list: status %d, want 401", code)
	}
	// A signed request is accepted once; the same bytes again are a replay.
	req, _ := http.NewRequest("POST", reg.url+registryPathRegister, nil)
	if _, err := signRegistryRequest(req, testRegistrySecret, clock.Now(), body); err != nil {
		t.Fatal(err)
	}
	for i, want := range []int{200, 401} {
		r2, _ := http.NewRequest("POST", reg.url+registryPathRegister, bytes.NewReader(body))
		r2.Header = req.Header.Clone()
		resp, err := http.DefaultClient.Do(r2)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("signed request, attempt %d: status %d, want %d", i+1, resp.StatusCode, want)
		}
	}
	// A signed request whose body was changed on the way.
	r3, _ := http.NewRequest("POST", reg.url+registryPathRegister, nil)
	if _, err := signRegistryRequest(r3, testRegistrySecret, clock.Now(), body); err != nil {
		t.Fatal(err)
	}
	r3.Body = io.NopCloser(strings.NewReader(strings.Replace(string(body), "h:1", "evil:1", 1)))
	r3.ContentLength = -1
	if resp, err := http.DefaultClient.Do(r3); err != nil || resp.StatusCode != 401 {
		t.Fatalf("tampered body: %v %v, want 401", resp.Status, err)
	}
	// A request signed at a time outside the window.
	stale := []byte(`{"cluster":"kommander","id":"b","addr":"h:2","incarnation":"i1","stamp":1}`)
	r4, _ := http.NewRequest("POST", reg.url+registryPathRegister, bytes.NewReader(stale))
	if _, err := signRegistryRequest(r4, testRegistrySecret, clock.Now().Add(-time.Minute), stale); err != nil {
		t.Fatal(err)
	}
	if resp, err := http.DefaultClient.Do(r4); err != nil || resp.StatusCode != 401 {
		t.Fatalf("stale request: %v %v, want 401", resp.Status, err)
	}
	wantPeers(t, "after the refused requests", reg.srv.Peers(), "a=h:1")

	// The client signs, and checks the registry's signature on the answer.
	good := newTestRegistryClient(t, clock, RegistryOptions{Secret: testRegistrySecret}, reg.url)
	if peers, err := good.Peers(context.Background()); err != nil || peerIDs(peers) != "a=h:1" {
		t.Fatalf("signed client: %v %v", peers, err)
	}
	wrong := newTestRegistryClient(t, clock, RegistryOptions{Secret: []byte("another-secret-0123456789")}, reg.url)
	if _, err := wrong.Peers(context.Background()); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("client with another secret: %v, want ErrAuthFailed", err)
	}
	open := startRegistries(t, clock, 1, RegistryOptions{}, nil)[0]
	trusting := newTestRegistryClient(t, clock, RegistryOptions{Secret: testRegistrySecret}, open.url)
	if _, err := trusting.Peers(context.Background()); !errors.Is(err, ErrAuthFailed) {
		t.Fatalf("a client with a secret took an unsigned answer: %v", err)
	}
}

func TestRegistryIDCannotBeTakenOverUntilItExpires(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	opts := RegistryOptions{TTL: 3 * time.Second, Interval: time.Second}
	reg := startRegistries(t, clock, 1, opts, nil)[0]
	owner := newTestRegistryClient(t, clock, opts, reg.url)
	announceTest(t, owner, "a", "good:1", "inc-1")
	thief := newTestRegistryClient(t, clock, opts, reg.url)
	err := thief.call(context.Background(), reg.url, registryPathRegister,
		thief.registration(Announcement{ID: "a", Addr: "evil:1", Incarnation: "inc-2"}, false), &registered{})
	if !errors.Is(err, ErrIDInUse) {
		t.Fatalf("takeover: %v, want ErrIDInUse", err)
	}
	announceTest(t, thief, "a", "evil:1", "inc-2") // keeps trying at every renewal
	clock.Advance(5 * time.Second)
	wantPeers(t, "while the owner renews", reg.srv.Peers(), "a=good:1")
	// The owner dies without deregistering; once its registration expires the ID is free.
	crashRegistryClient(owner)
	clock.Advance(4 * time.Second)
	wantPeers(t, "after the owner expired", reg.srv.Peers(), "a=evil:1")
}

func TestRegistryBoundsItsNodes(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	reg := startRegistries(t, clock, 1, RegistryOptions{MaxNodes: 3, TTL: 2 * time.Second}, nil)[0]
	post := func(id string) int {
		body := fmt.Sprintf(`{"cluster":"kommander","id":%q,"addr":"h:1","incarnation":"i","stamp":%d}`, id, clock.Now().UnixNano())
		return rawRegistryRequest(t, clock, reg.url, "POST", registryPathRegister, []byte(body), nil)
	}
	for _, id := range []string{"a", "b", "c"} {
		if code := post(id); code != 200 {
			t.Fatalf("%s: %d", id, code)
		}
	}
	if code := post("d"); code != 503 {
		t.Fatalf("a fourth node: %d, want 503", code)
	}
	clock.Advance(time.Millisecond)
	if code := post("a"); code != 200 {
		t.Fatalf("renewal of a held node when full: %d, want 200", code)
	}
	clock.Advance(2 * time.Second) // b and c expire; a's renewal too
	if code := post("d"); code != 200 {
		t.Fatalf("a new node after others expired: %d", code)
	}
	wantPeers(t, "after expiry", reg.srv.Peers(), "d=h:1")
}

// gossipRounds lets every registry exchange with its seeds rounds times.
func gossipRounds(regs []*testRegistry, rounds int) {
	for range rounds {
		for _, r := range regs {
			r.srv.Gossip()
		}
	}
}

func TestRegistriesConvergeByGossip(t *testing.T) {
	for _, n := range []int{2, 3} {
		t.Run(strconv.Itoa(n), func(t *testing.T) {
			opts := RegistryOptions{TTL: 3 * time.Second, Interval: time.Second, Secret: testRegistrySecret}
			clock := NewFakeClock(time.Now()) // signed requests are checked against it
			// A chain: each registry knows only the next one as its seed.
			regs := startRegistries(t, clock, n, opts, func(i int) []int {
				if i+1 < n {
					return []int{i + 1}
				}
				return nil
			})
			var clients []*registryClient
			var want []string
			for i, r := range regs {
				c := newTestRegistryClient(t, clock, opts, r.url) // each node knows one registry
				id := fmt.Sprintf("n%d", i)
				announceTest(t, c, id, "addr-"+id, "inc-"+id)
				clients = append(clients, c)
				want = append(want, id+"="+"addr-"+id)
			}
			for _, r := range regs {
				r.srv.Start()
			}
			clock.Advance(time.Second) // one round of renewals and exchanges
			clock.Advance(time.Second)
			for i, r := range regs {
				wantPeers(t, fmt.Sprintf("registry %d", i), r.srv.Peers(), strings.Join(want, ","))
			}
			// n0 deregisters at its registry only; the tombstone reaches the others, and no
			// exchange brings n0 back.
			if err := clients[0].Close(); err != nil {
				t.Fatal(err)
			}
			clock.Advance(time.Second)
			clock.Advance(time.Second)
			for i, r := range regs {
				wantPeers(t, fmt.Sprintf("registry %d after n0 left", i), r.srv.Peers(), strings.Join(want[1:], ","))
			}
			// The others stop renewing: their entries expire everywhere, even though the
			// registries keep exchanging them.
			for _, c := range clients[1:] {
				crashRegistryClient(c)
			}
			clock.Advance(4 * time.Second)
			for i, r := range regs {
				wantPeers(t, fmt.Sprintf("registry %d after expiry", i), r.srv.Peers(), "")
			}
		})
	}
}

func TestRegistriesResolveConflictingRegistrationsByNewestStamp(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	regs := startRegistries(t, clock, 2, RegistryOptions{}, func(i int) []int { return []int{1 - i} })
	reg := func(r *testRegistry, addr, inc string, stamp int64) {
		body := fmt.Sprintf(`{"cluster":"kommander","id":"a","addr":%q,"incarnation":%q,"stamp":%d}`, addr, inc, stamp)
		if code := rawRegistryRequest(t, clock, r.url, "POST", registryPathRegister, []byte(body), nil); code != 200 {
			t.Fatalf("register: %d", code)
		}
	}
	// Before any exchange, two incarnations of "a" registered at different registries.
	reg(regs[0], "old:1", "inc-1", 100)
	reg(regs[1], "new:1", "inc-2", 200)
	gossipRounds(regs, 2)
	for i, r := range regs {
		wantPeers(t, fmt.Sprintf("registry %d", i), r.srv.Peers(), "a=new:1")
	}
}

func TestRegistryOptionsAreValidated(t *testing.T) {
	for _, o := range []RegistryOptions{
		{Secret: []byte("short")},
		{TTL: time.Second, Interval: time.Second},
		{Seeds: []string{"not a url"}},
		{Seeds: []string{"ftp://x"}},
		{MaxNodes: -1},
	} {
		if _, err := NewRegistryServer(o); !errors.Is(err, ErrInvalidConfig) {
			t.Errorf("%+v: %v, want ErrInvalidConfig", o, err)
		}
	}
	if _, err := RegistryDiscovery(RegistryOptions{}); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("no URL: %v", err)
	}
	if _, err := RegistryDiscovery(RegistryOptions{}, "localhost:7000"); !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("URL without scheme: %v", err)
	}
}

// FuzzRegistryRequest sends any body to the registry's POST endpoints: it is refused with a
// 4xx (or taken), never panics, and the table never grows past its bound.
func FuzzRegistryRequest(f *testing.F) {
	for _, s := range []string{
		`{"cluster":"kommander","id":"a","addr":"h:1","incarnation":"i","stamp":1}`,
		`{"cluster":"kommander","id":"a","incarnation":"i","stamp":2}`,
		`{"cluster":"kommander","entries":[{"id":"x","addr":"h:1","incarnation":"i","stamp":1,"left_ms":1000}]}`,
		`{"cluster":"kommander","id":"a","addr":"h:1","incarnation":"i","stamp":1,"ttl_ms":1e99}`,
		`{"cluster":"kommander","entries":[{"id":"x","leaving":true,"incarnation":"i","stamp":1,"left_ms":-1}]}`,
		`[]`, `null`, `{"cluster":"kommander","id":"a"}{}`,
	} {
		for path := range 3 {
			f.Add(uint8(path), []byte(s))
		}
	}
	f.Fuzz(func(t *testing.T, path uint8, body []byte) {
		clock := NewFakeClock(time.Time{})
		srv, err := NewRegistryServer(RegistryOptions{MaxNodes: 2, Clock: clock, Logger: discardLogger()})
		if err != nil {
			t.Fatal(err)
		}
		defer srv.Close()
		paths := []string{registryPathRegister, registryPathDeregister, registryPathExchange}
		for range 2 {
			rec := httptest.NewRecorder()
			srv.ServeHTTP(rec, httptest.NewRequest("POST", paths[int(path)%len(paths)], bytes.NewReader(body)))
			if c := rec.Code; c != 200 && (c < 400 || c >= 500) && c != 503 {
				t.Fatalf("status %d for %q", c, body)
			}
		}
		srv.mu.Lock()
		n := len(srv.table.entries)
		srv.mu.Unlock()
		if n > 2 {
			t.Fatalf("the table holds %d entries, bound 2", n)
		}
	})
}

func TestRegistryClampsHugeLifetimes(t *testing.T) {
	clock := NewFakeClock(time.Time{})
	regs := startRegistries(t, clock, 1, RegistryOptions{TTL: 3 * time.Second}, nil)
	body := `{"cluster":"kommander","id":"a","addr":"h:1","incarnation":"i","stamp":1,"ttl_ms":9000000000000000000}`
	if code := rawRegistryRequest(t, clock, regs[0].url, "POST", registryPathRegister, []byte(body), nil); code != 200 {
		t.Fatalf("status %d", code)
	}
	x := `{"cluster":"kommander","entries":[{"id":"b","addr":"h:2","incarnation":"i","stamp":1,"left_ms":9000000000000000000}]}`
	if code := rawRegistryRequest(t, clock, regs[0].url, "POST", registryPathExchange, []byte(x), nil); code != 200 {
		t.Fatalf("exchange: status %d", code)
	}
	wantPeers(t, "with huge lifetimes", regs[0].srv.Peers(), "a=h:1,b=h:2")
	clock.Advance(3 * time.Second) // both capped at the registry's TTL
	wantPeers(t, "after the TTL", regs[0].srv.Peers(), "")
}

func TestRegistryWithSecretWorksUnderAPrefix(t *testing.T) {
	clock := NewFakeClock(time.Now())
	srv, err := NewRegistryServer(RegistryOptions{Secret: testRegistrySecret, Clock: clock, Logger: discardLogger()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	mux := http.NewServeMux()
	mux.Handle("/discovery/", http.StripPrefix("/discovery", srv))
	ts := httptest.NewServer(mux)
	defer ts.Close()
	c := newTestRegistryClient(t, clock, RegistryOptions{Secret: testRegistrySecret}, ts.URL+"/discovery")
	announceTest(t, c, "a", "h:1", "i")
	if peers, err := c.Peers(context.Background()); err != nil || peerIDs(peers) != "a=h:1" {
		t.Fatalf("peers %v, %v", peers, err)
	}
}
