package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"time"

	"github.com/kommander-go/kommander"
)

// nodeSpec is everything the subcommands choose about one node.
type nodeSpec struct {
	id        string
	listener  string // the transport's listen address; "127.0.0.1:0" picks a free port
	dataDir   string
	peers     []kommander.Peer // every voter, this node included; nil until known
	parts     int
	transport kommander.TransportKind
	cluster   string
	secret    []byte
	tls       *tls.Config
	noSync    bool
	sm        kommander.StateMachine
	election  time.Duration
	heartbeat time.Duration
	maxEntry  int
	lease     bool // lease reads on
	noQuiesce bool // quiescence off
	logger    *slog.Logger
	// snapEvery is the number of entries between a partition's snapshots (0: the default).
	snapEvery int
	// discovery, when set, finds the members instead of peers, and the cluster forms
	// with bootstrapExpect nodes.
	discovery       kommander.Discovery
	bootstrapExpect int
	// join: the node is new to a running cluster and waits to be added (Config.Join).
	join bool
}

// liveNode is a node with the WAL and the transport it runs on. The node closes the
// transport on Stop; the WAL is ours to close.
type liveNode struct {
	spec nodeSpec
	node *kommander.Node
	wal  *kommander.WAL
	tr   kommander.Transport
	addr string // the address the transport listens on
	// running is node once it started, for the transport's status callback.
	running atomic.Pointer[kommander.Node]
}

// listenNode opens the node's WAL and binds its transport, so that its address is known
// before the cluster's peer list is. start then creates and starts the node.
func listenNode(s nodeSpec) (*liveNode, error) {
	if s.logger == nil {
		s.logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	wal, err := kommander.OpenWAL(s.dataDir, kommander.WALOptions{UnsafeNoSync: s.noSync, Logger: s.logger})
	if err != nil {
		return nil, fmt.Errorf("node %s: %w", s.id, err)
	}
	ln := &liveNode{spec: s, wal: wal}
	tc := kommander.TransportConfig{
		NodeID:      s.id,
		Addr:        s.listener,
		ClusterName: s.cluster,
		Secret:      s.secret,
		TLS:         s.tls,
		Logger:      s.logger,
		// Room for two append messages of the largest entry, as NewNode's own transports
		// have; larger batches would be dropped.
		MaxBatchBytes: max(kommander.DefaultTransportMaxBatchBytes, 2*max(kommander.DefaultMaxMessageBytes, s.maxEntry+4096)),
		// The HTTP transport serves this at /kommander/v1/status.
		Status: func() any {
			if n := ln.running.Load(); n != nil {
				return n.Status()
			}
			return nil
		},
	}
	switch s.transport {
	case kommander.HTTP:
		t, err := kommander.NewHTTPTransport(tc)
		if err != nil {
			_ = wal.Close()
			return nil, fmt.Errorf("node %s: %w", s.id, err)
		}
		ln.tr, ln.addr = t, t.Addr()
	default:
		t, err := kommander.NewTCPTransport(tc)
		if err != nil {
			_ = wal.Close()
			return nil, fmt.Errorf("node %s: %w", s.id, err)
		}
		ln.tr, ln.addr = t, t.Addr()
	}
	return ln, nil
}

// start creates the node over the WAL and transport listenNode prepared, with peers as
// the cluster's members, and starts it. When it fails, the caller closes ln.
func (ln *liveNode) start(ctx context.Context, peers []kommander.Peer) error {
	s := ln.spec
	s.peers = peers
	ln.spec = s
	cfg := kommander.Config{
		NodeID:            s.id,
		Addr:              ln.addr,
		Partitions:        s.parts,
		Peers:             peers,
		StateMachine:      s.sm,
		Transport:         s.transport,
		CustomTransport:   ln.tr,
		ClusterName:       s.cluster,
		Secret:            s.secret,
		TLS:               s.tls,
		Storage:           ln.wal,
		DataDir:           s.dataDir, // the cluster identity is kept there
		ElectionTimeout:   s.election,
		HeartbeatInterval: s.heartbeat,
		MaxEntrySize:      s.maxEntry,
		LeaseReads:        s.lease,
		DisableQuiescence: s.noQuiesce,
		Logger:            s.logger,
		SnapshotEntries:   s.snapEvery,
		Join:              s.join,
		// A window a fifth of the interval: with the default interval, the default.
		SnapshotTrailingEntries: s.snapEvery / 5,
	}
	if s.discovery != nil {
		cfg.Peers, cfg.Discovery, cfg.BootstrapExpect = nil, s.discovery, s.bootstrapExpect
	}
	n, err := kommander.NewNode(cfg)
	if err != nil {
		return err
	}
	if err := n.Start(ctx); err != nil {
		return err
	}
	ln.node = n
	ln.running.Store(n)
	return nil
}

// stop stops the node and closes its WAL.
func (ln *liveNode) stop(ctx context.Context) error {
	var errs []error
	if ln.node != nil {
		errs = append(errs, ln.node.Stop(ctx))
	} else if ln.tr != nil {
		errs = append(errs, ln.tr.Close())
	}
	errs = append(errs, ln.wal.Close())
	return errors.Join(errs...)
}

// close releases what listenNode opened when the node never started.
func (ln *liveNode) close() {
	_ = ln.tr.Close()
	_ = ln.wal.Close()
}

// startCluster starts one node per spec on loopback, each transport on a free port, and
// returns them once every node runs (not yet once partitions have leaders).
func startCluster(ctx context.Context, specs []nodeSpec) ([]*liveNode, error) {
	nodes := make([]*liveNode, 0, len(specs))
	fail := func(err error) ([]*liveNode, error) {
		for _, n := range nodes {
			if n.node != nil {
				_ = n.stop(context.Background())
			} else {
				n.close()
			}
		}
		return nil, err
	}
	var peers []kommander.Peer
	for _, s := range specs {
		n, err := listenNode(s)
		if err != nil {
			return fail(err)
		}
		nodes = append(nodes, n)
		peers = append(peers, kommander.Peer{ID: s.id, Addr: n.addr})
	}
	for _, n := range nodes {
		if err := n.start(ctx, peers); err != nil {
			return fail(err)
		}
	}
	return nodes, nil
}

// waitForLeaders waits until every partition has a leader that every running node agrees
// on, and returns the leader of each partition.
func waitForLeaders(ctx context.Context, nodes []*liveNode, parts int) ([]string, error) {
	leaders := make([]string, parts)
	for {
		agreed := true
		for p := 0; p < parts && agreed; p++ {
			leaders[p] = ""
			for _, n := range nodes {
				if n.node == nil {
					continue
				}
				l, ok := n.node.Leader(p)
				if !ok || (leaders[p] != "" && l != leaders[p]) || !isRunning(nodes, l) {
					agreed = false
					break
				}
				leaders[p] = l
			}
		}
		if agreed {
			return leaders, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a leader in every partition: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// isRunning reports whether id names a node of nodes that is running.
func isRunning(nodes []*liveNode, id string) bool {
	for _, n := range nodes {
		if n.spec.id == id {
			return n.node != nil
		}
	}
	return false
}

// freeLoopbackAddr returns a loopback address with a port that was free a moment ago.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}
