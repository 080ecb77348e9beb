package kommander

// Multicast discovery: every node announces itself on a UDP multicast group every
// interval (the datagram is in multicast_format.go) and forgets the nodes it has not heard
// from for a while. It needs no server, only a network that carries multicast between the
// nodes, which most LANs do and most clouds do not.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of MulticastOptions.
const (
	DefaultMulticastGroup    = "239.255.77.77"
	DefaultMulticastPort     = 7947
	DefaultMulticastInterval = time.Second
)

// ErrNoMulticast is wrapped by the error MulticastDiscovery returns for a network
// interface that does not support multicast.
var ErrNoMulticast = errors.New("kommander: network interface does not support multicast")

// MulticastOptions configures MulticastDiscovery.
type MulticastOptions struct {
	// Cluster names the cluster; announcements of other clusters on the same group are
	// ignored. Default "kommander".
	Cluster string

	// Secret, when set (at least 16 bytes), signs every announcement (HMAC, with a
	// timestamp); unsigned, badly signed, stale and replayed announcements are ignored.
	// Without it, anyone on the network can announce a node.
	Secret []byte

	// Group is the IPv4 multicast group. Default 239.255.77.77, in the range for use
	// within one organization.
	Group string

	// Port is the UDP port of the group. Default 7947.
	Port int

	// Interface names the network interface to announce and listen on, such as "eth0".
	// Empty means the system's choice.
	Interface string

	// TTL is the IP time-to-live of announcements: 1 (the default) keeps them on the local
	// network; each router they may cross adds one.
	TTL int

	// Interval is how often a node announces itself. Default 1s.
	Interval time.Duration

	// Timeout is how long a node that is no longer heard from is kept. Default five
	// Intervals, so that a few lost datagrams do not drop a node.
	Timeout time.Duration

	// MaxClockSkew is how far a signed announcement's timestamp may be from this node's
	// clock. Default 30s.
	MaxClockSkew time.Duration

	// MaxNodes bounds the nodes kept; announcements of further nodes are ignored until
	// some expire. Default 1024.
	MaxNodes int

	// Clock is the source of time. Nil means the real clock; tests pass a FakeClock.
	Clock Clock

	// Logger receives the logs. Nil means slog.Default().
	Logger *slog.Logger
}

func (o MulticastOptions) withDefaults() (MulticastOptions, error) {
	setDefault(&o.Cluster, "kommander")
	setDefault(&o.Group, DefaultMulticastGroup)
	setDefault(&o.Port, DefaultMulticastPort)
	setDefault(&o.TTL, 1)
	setDefault(&o.Interval, DefaultMulticastInterval)
	setDefault(&o.Timeout, 5*o.Interval)
	setDefault(&o.MaxClockSkew, DefaultMaxClockSkew)
	setDefault(&o.MaxNodes, DefaultRegistryMaxNodes)
	setDefault(&o.Clock, RealClock())
	setDefault(&o.Logger, slog.Default())
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: multicast: "+format, append([]any{ErrInvalidConfig}, args...)...)
	}
	ip := net.ParseIP(o.Group)
	switch {
	case len(o.Cluster) > maxNameBytes:
		return o, bad("Cluster has more than %d bytes", maxNameBytes)
	case len(o.Secret) > 0 && len(o.Secret) < minSecretBytes:
		return o, bad("Secret has %d bytes; use at least %d", len(o.Secret), minSecretBytes)
	case ip == nil || ip.To4() == nil || !ip.IsMulticast():
		return o, bad("Group %q is not an IPv4 multicast address (224.0.0.0/4)", o.Group)
	case o.Port < 1 || o.Port > 65535:
		return o, bad("Port %d is not in [1, 65535]", o.Port)
	case o.TTL < 0 || o.TTL > 255:
		return o, bad("TTL %d is not in [1, 255]", o.TTL)
	case o.Interval <= 0 || o.MaxClockSkew <= 0 || o.MaxNodes < 0:
		return o, bad("Interval, MaxClockSkew and MaxNodes must be positive")
	case o.Timeout <= o.Interval:
		return o, bad("Timeout (%v) must be longer than Interval (%v), or nodes expire between announcements", o.Timeout, o.Interval)
	}
	return o, nil
}

// MulticastDiscovery returns a Discovery that listens on the multicast group of opts
// at once and, after Announce, announces this node there every opts.Interval. Close
// announces that the node leaves.
func MulticastDiscovery(opts MulticastOptions) (Discovery, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	group := &net.UDPAddr{IP: net.ParseIP(opts.Group).To4(), Port: opts.Port}
	var ifi *net.Interface
	var ifAddr net.IP
	if opts.Interface != "" {
		if ifi, err = net.InterfaceByName(opts.Interface); err != nil {
			return nil, fmt.Errorf("kommander: multicast: interface %q: %w", opts.Interface, err)
		}
		if err := checkMulticastInterface(ifi); err != nil {
			return nil, err
		}
		if ifAddr, err = interfaceIPv4(ifi); err != nil {
			return nil, err
		}
	}
	recv, err := net.ListenMulticastUDP("udp4", ifi, group)
	if err != nil {
		return nil, fmt.Errorf("kommander: multicast: listen on %v: %w", group, err)
	}
	send, err := net.ListenUDP("udp4", &net.UDPAddr{})
	if err == nil {
		err = setMulticastSendOptions(send, opts.TTL, ifAddr)
		if err != nil {
			send.Close()
		}
	}
	if err != nil {
		recv.Close()
		return nil, fmt.Errorf("kommander: multicast: sending socket: %w", err)
	}
	m := newMulticast(opts, func(b []byte) error {
		_, err := send.WriteToUDP(b, group)
		return err
	})
	m.conns = []*net.UDPConn{recv, send}
	m.loopDone = make(chan struct{})
	go m.receive(recv)
	return m, nil
}

// setMulticastSendOptions sets, on the socket c sends from, the TTL of multicast
// datagrams, their loopback to this host (other nodes may run on it) and, with ifAddr,
// the interface that has that address as theirs (setMulticastOptions, per platform).
func setMulticastSendOptions(c *net.UDPConn, ttl int, ifAddr net.IP) error {
	rc, err := c.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = setMulticastOptions(fd, ttl, ifAddr) }); err != nil {
		return err
	}
	return serr
}

// checkMulticastInterface refuses an interface that is down or cannot multicast.
func checkMulticastInterface(ifi *net.Interface) error {
	if ifi.Flags&net.FlagMulticast == 0 {
		return fmt.Errorf("%w: %q (flags %v); choose another interface, or turn multicast on for it", ErrNoMulticast, ifi.Name, ifi.Flags)
	}
	if ifi.Flags&net.FlagUp == 0 {
		return fmt.Errorf("kommander: multicast: interface %q is down", ifi.Name)
	}
	return nil
}

// interfaceIPv4 returns the first IPv4 address of ifi.
func interfaceIPv4(ifi *net.Interface) (net.IP, error) {
	addrs, err := ifi.Addrs()
	if err != nil {
		return nil, fmt.Errorf("kommander: multicast: addresses of %q: %w", ifi.Name, err)
	}
	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil {
			return n.IP.To4(), nil
		}
	}
	return nil, fmt.Errorf("kommander: multicast: interface %q has no IPv4 address", ifi.Name)
}

type multicast struct {
	opts    MulticastOptions
	log     *slog.Logger
	rlog    *rateLog
	watch   *peerWatch
	send    func([]byte) error
	ticker  *repeater
	dropped atomic.Int64 // datagrams ignored, for tests

	conns    []*net.UDPConn // nil in tests that drive handle directly
	loopDone chan struct{}

	mu        sync.Mutex
	table     *peerTable
	self      *Announcement
	lastStamp int64
	closed    bool
}

// newMulticast returns the discovery without its sockets: send carries announcements, and
// what arrives is given to handle.
func newMulticast(opts MulticastOptions, send func([]byte) error) *multicast {
	log := opts.Logger.With("discovery", "multicast", "group", fmt.Sprintf("%s:%d", opts.Group, opts.Port))
	m := &multicast{opts: opts, log: log, rlog: newRateLog(log, opts.Clock, transportLogInterval),
		watch: newPeerWatch(), send: send, table: newPeerTable(opts.MaxNodes)}
	if opts.Secret != nil {
		m.table.linger = 2 * opts.MaxClockSkew
	}
	m.watch.set([]Peer{})
	m.ticker = startRepeater(opts.Clock, opts.Interval, m.tick)
	return m
}

func (m *multicast) Peers(context.Context) ([]Peer, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peersLocked(m.opts.Clock.Now()), nil
}

// peersLocked is the live nodes heard from and, once announced, this node.
func (m *multicast) peersLocked(now time.Time) []Peer {
	peers := m.table.peers(now)
	if m.self != nil {
		peers = sortedPeers(append(peers, Peer{ID: m.self.ID, Addr: m.self.Addr}))
	}
	return peers
}

func (m *multicast) publishLocked(now time.Time) { m.watch.set(m.peersLocked(now)) }

func (m *multicast) Watch(ctx context.Context) <-chan []Peer { return m.watch.watch(ctx) }

func (m *multicast) Announce(_ context.Context, self Announcement) error {
	self, err := self.complete()
	if err != nil {
		return err
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return errDiscoveryClosed
	}
	m.self = &self
	m.publishLocked(m.opts.Clock.Now())
	m.mu.Unlock()
	return m.announce(false)
}

// tick expires silent nodes and announces this node.
func (m *multicast) tick() {
	m.mu.Lock()
	now := m.opts.Clock.Now()
	if m.table.expire(now) {
		m.publishLocked(now)
	}
	announced := m.self != nil
	m.mu.Unlock()
	if announced {
		if err := m.announce(false); err != nil {
			m.rlog.warn(m.log, "multicast discovery: announcing failed", "err", err)
		}
	}
}

// announce sends one announcement of this node.
func (m *multicast) announce(leaving bool) error {
	m.mu.Lock()
	self := *m.self
	m.lastStamp = max(m.opts.Clock.Now().UnixNano(), m.lastStamp+1)
	d := datagram{stamp: m.lastStamp, leaving: leaving, cluster: m.opts.Cluster, self: self}
	m.mu.Unlock()
	b, err := encodeDatagram(d, m.opts.Secret)
	if err != nil {
		return err
	}
	if err := m.send(b); err != nil {
		return fmt.Errorf("kommander: multicast: announce: %w", err)
	}
	return nil
}

// handle takes in one datagram from the group. Anything wrong with it drops it, with a
// rate-limited warning: anyone on the network can send them.
func (m *multicast) handle(b []byte) {
	d, err := decodeDatagram(b)
	if err != nil {
		m.drop("multicast discovery dropped a malformed datagram", err)
		return
	}
	if d.cluster != m.opts.Cluster {
		m.dropped.Add(1) // another cluster may share the group: not worth a warning
		return
	}
	now := m.opts.Clock.Now()
	if m.opts.Secret != nil {
		if !d.verify(m.opts.Secret) {
			m.drop("multicast discovery dropped an unsigned or badly signed announcement", ErrAuthFailed, "id", clip(d.self.ID))
			return
		}
		if skew := now.Sub(time.Unix(0, d.stamp)); skew > m.opts.MaxClockSkew || skew < -m.opts.MaxClockSkew {
			m.drop("multicast discovery dropped a stale announcement", ErrAuthFailed, "id", d.self.ID, "skew", skew)
			return
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.self != nil && d.self.ID == m.self.ID {
		if d.self.Incarnation != m.self.Incarnation {
			m.drop("multicast discovery: another process announces this node's ID", ErrIDInUse, "id", d.self.ID, "addr", d.self.Addr)
		}
		return
	}
	expires := now.Add(m.opts.Timeout)
	if d.leaving {
		expires = expires.Add(m.table.linger)
	}
	changed, err := m.table.claim(d.self.ID, announced{addr: d.self.Addr, incarnation: d.self.Incarnation,
		stamp: d.stamp, expires: expires, left: d.leaving}, now)
	if err != nil {
		m.drop("multicast discovery ignored an announcement", err, "id", d.self.ID, "addr", d.self.Addr)
		return
	}
	if changed {
		m.publishLocked(now)
	}
}

func (m *multicast) drop(msg string, err error, args ...any) {
	m.dropped.Add(1)
	m.rlog.warn(m.log, msg, append(args, "err", err)...)
}

// receive hands every datagram that arrives on conn to handle, until conn is closed.
func (m *multicast) receive(conn *net.UDPConn) {
	defer close(m.loopDone)
	buf := make([]byte, maxDatagram+1)
	for {
		n, _, err := conn.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		switch {
		case err != nil:
			m.rlog.warn(m.log, "multicast discovery: receive failed", "err", err)
		case n > maxDatagram:
			m.drop("multicast discovery dropped a malformed datagram", errDatagram, "bytes", n)
		default:
			m.handle(buf[:n])
		}
	}
}

func (m *multicast) Close() error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	announced := m.self != nil
	m.mu.Unlock()
	m.ticker.stop()
	var err error
	if announced {
		err = m.announce(true) // the others drop this node now rather than after Timeout
	}
	for _, c := range m.conns {
		c.Close()
	}
	if m.loopDone != nil {
		<-m.loopDone
	}
	m.watch.close()
	m.rlog.close()
	return err
}
