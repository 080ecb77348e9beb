package kommander

// The client side of the registry: a Discovery that registers this node with every
// registry it is given, renews the registration, and learns the live nodes from the
// answers.

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"sync"
	"time"
)

// RegistryDiscovery returns a Discovery that finds nodes through the registries at urls
// (base URLs such as "http://10.0.0.1:7001"; see RegistryServer). Announce registers this
// node with every one of them and renews the registration every opts.Interval; Peers asks
// them in order until one answers; Close deregisters. With several registries that
// exchange their tables (RegistryOptions.Seeds), any one that is up is enough.
func RegistryDiscovery(opts RegistryOptions, urls ...string) (Discovery, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if len(urls) == 0 {
		return nil, fmt.Errorf("%w: registry: no registry URL", ErrInvalidConfig)
	}
	for _, u := range urls {
		if err := checkRegistryURL(u); err != nil {
			return nil, fmt.Errorf("%w: registry URL %q: %v", ErrInvalidConfig, u, err)
		}
	}
	log := opts.Logger.With("discovery", "registry")
	return &registryClient{opts: opts, urls: urls, log: log, rlog: newRateLog(log, opts.Clock, transportLogInterval),
		watch: newPeerWatch()}, nil
}

type registryClient struct {
	opts  RegistryOptions
	urls  []string
	log   *slog.Logger
	rlog  *rateLog
	watch *peerWatch

	mu        sync.Mutex
	self      *Announcement
	lastStamp int64
	rep       *repeater
	closed    bool
}

var errDiscoveryClosed = errors.New("kommander: discovery closed")

func (c *registryClient) Peers(ctx context.Context) ([]Peer, error) {
	var list nodeList
	var errs []error
	for _, u := range c.urls {
		err := registryCall(ctx, c.opts.HTTPClient, c.opts.Secret, c.opts.Clock.Now(), http.MethodGet, u,
			registryPathNodes+"?cluster="+url.QueryEscape(c.opts.Cluster), nil, &list, maxExchangeBody(c.opts.MaxNodes))
		if err == nil {
			return list.Nodes, nil
		}
		errs = append(errs, err)
	}
	return nil, fmt.Errorf("kommander: no registry answered: %w", errors.Join(errs...))
}

func (c *registryClient) Watch(ctx context.Context) <-chan []Peer {
	ch := c.watch.watch(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closed && c.rep == nil {
		c.rep = startRepeater(c.opts.Clock, c.opts.Interval, c.refresh)
	}
	return ch
}

func (c *registryClient) Announce(ctx context.Context, self Announcement) error {
	self, err := self.complete()
	if err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return errDiscoveryClosed
	}
	c.self = &self
	if c.rep == nil {
		c.rep = startRepeater(c.opts.Clock, c.opts.Interval, c.refresh)
	}
	c.mu.Unlock()
	c.refreshCtx(ctx)
	return nil
}

// refresh renews the registration (or, before Announce, lists the nodes) and hands the
// list to the watchers.
func (c *registryClient) refresh() {
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.Interval)
	defer cancel()
	c.refreshCtx(ctx)
}

func (c *registryClient) refreshCtx(ctx context.Context) {
	c.mu.Lock()
	self := c.self
	c.mu.Unlock()
	if self == nil {
		if peers, err := c.Peers(ctx); err == nil {
			c.watch.set(sortedPeers(peers))
		} else {
			c.rlog.warn(c.log, "registry discovery: listing the nodes failed", "err", err)
		}
		return
	}
	var list []Peer
	for _, u := range c.urls {
		var ans registered
		err := c.call(ctx, u, registryPathRegister, c.registration(*self, false), &ans)
		if err != nil {
			c.rlog.warn(c.log, "registry discovery: registration failed", "registry", u, "id", self.ID, "err", err)
			continue
		}
		if list == nil {
			list = ans.Nodes
		}
	}
	if list != nil {
		c.watch.set(sortedPeers(list))
	}
}

// registration returns a registration of self with a stamp newer than any before.
func (c *registryClient) registration(self Announcement, leaving bool) registration {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.lastStamp = max(c.opts.Clock.Now().UnixNano(), c.lastStamp+1)
	r := registration{Cluster: c.opts.Cluster, ID: self.ID, Incarnation: self.Incarnation, Stamp: c.lastStamp}
	if !leaving {
		r.Addr, r.TTLMillis = self.Addr, c.opts.TTL.Milliseconds()
	}
	return r
}

func (c *registryClient) call(ctx context.Context, base, path string, in, out any) error {
	return registryCall(ctx, c.opts.HTTPClient, c.opts.Secret, c.opts.Clock.Now(), http.MethodPost, base, path, in, out,
		maxExchangeBody(c.opts.MaxNodes))
}

func (c *registryClient) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	rep, self := c.rep, c.self
	c.mu.Unlock()
	if rep != nil {
		rep.stop() // no renewal after the deregistration
	}
	var errs []error
	if self != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		for _, u := range c.urls {
			if err := c.call(ctx, u, registryPathDeregister, c.registration(*self, true), &struct{}{}); err != nil {
				errs = append(errs, err)
			}
		}
	}
	c.watch.close()
	c.rlog.close()
	if len(errs) > 0 {
		return fmt.Errorf("kommander: deregister: %w", errors.Join(errs...))
	}
	return nil
}
