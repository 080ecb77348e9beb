package main

import (
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/kommander-go/kommander"
)

// How `kommander node` finds the other nodes: -discovery static (the -peers list), registry
// (one or more registries, -registry; or every node serves one on its -http address under
// /registry and they exchange tables with -seeds), or multicast (-multicast-group).

// registryPath is where a node serves its registry with -seeds.
const registryPath = "/registry"

// discoveryFlags are the flags of `kommander node` that choose discovery.
type discoveryFlags struct {
	mode, registries, seeds, group string
	expect                         int
}

func addDiscoveryFlags(fs *flag.FlagSet) *discoveryFlags {
	d := &discoveryFlags{}
	fs.StringVar(&d.mode, "discovery", "static", "how nodes find each other: static (-peers), registry (-registry or -seeds) or multicast (-multicast-group)")
	fs.StringVar(&d.registries, "registry", "", "with -discovery registry: registries to register with, http://host:port,...")
	fs.StringVar(&d.seeds, "seeds", "", "with -discovery registry: this node serves a registry at http://<-http>"+registryPath+" and exchanges tables with these other nodes' registries, http://host:port"+registryPath+",...")
	fs.StringVar(&d.group, "multicast-group", "", fmt.Sprintf("with -discovery multicast: the UDP group, ip:port (default %s:%d)", kommander.DefaultMulticastGroup, kommander.DefaultMulticastPort))
	fs.IntVar(&d.expect, "bootstrap-expect", 0, "with -discovery registry or multicast: the number of nodes that form a new cluster (more than half of those that start together; 3 is usual)")
	return d
}

// nodeDiscovery is what the flags chose: the Discovery (nil for static) and, with -seeds,
// the registry this node serves.
type nodeDiscovery struct {
	discovery kommander.Discovery
	registry  *kommander.RegistryServer
}

// check refuses flag combinations that cannot work, before anything is opened.
func (d *discoveryFlags) check(peers string, join bool) error {
	given := func(name, v string) error {
		if v != "" {
			return fmt.Errorf("%s is for -discovery %s", name, map[string]string{"-peers": "static", "-registry": "registry", "-seeds": "registry", "-multicast-group": "multicast"}[name])
		}
		return nil
	}
	var errs []error
	switch d.mode {
	case "static":
		errs = append(errs, given("-registry", d.registries), given("-seeds", d.seeds), given("-multicast-group", d.group))
		if d.expect != 0 {
			errs = append(errs, errors.New("-bootstrap-expect is for -discovery registry or multicast; with static, the members are -peers"))
		}
		if peers == "" {
			errs = append(errs, errors.New("-peers is required with -discovery static"))
		}
	case "registry", "multicast":
		errs = append(errs, given("-peers", peers))
		if join {
			errs = append(errs, errors.New("-join is for -discovery static; with discovery, a new node that finds the cluster formed waits to be added by itself"))
		}
		if d.mode == "registry" {
			errs = append(errs, given("-multicast-group", d.group))
			if d.registries == "" && d.seeds == "" {
				errs = append(errs, errors.New("-discovery registry needs -registry (registries to use) or -seeds (other nodes' registries)"))
			}
		} else {
			errs = append(errs, given("-registry", d.registries), given("-seeds", d.seeds))
		}
		if d.expect < 1 {
			errs = append(errs, fmt.Errorf("-discovery %s needs -bootstrap-expect N, the number of nodes that form the cluster", d.mode))
		}
	default:
		return fmt.Errorf("-discovery %q: want static, registry or multicast", d.mode)
	}
	return errors.Join(errs...)
}

// build makes the Discovery the flags ask for; httpAddr is where this node serves HTTP
// (its registry, with -seeds), raftAddr what it announces.
func (d *discoveryFlags) build(cluster string, secret []byte, httpAddr, raftAddr string, log *slog.Logger) (nodeDiscovery, error) {
	var nd nodeDiscovery
	if d.mode == "static" {
		return nd, nil
	}
	if err := announceable(raftAddr); err != nil {
		return nd, fmt.Errorf("-raft: %w", err)
	}
	switch d.mode {
	case "registry":
		opts := kommander.RegistryOptions{Cluster: cluster, Secret: secret, Logger: log}
		urls := splitList(d.registries)
		if d.seeds != "" {
			if err := announceable(httpAddr); err != nil {
				return nd, fmt.Errorf("-http (its registry is announced to -seeds): %w", err)
			}
			sopts := opts
			sopts.Seeds = splitList(d.seeds)
			reg, err := kommander.NewRegistryServer(sopts)
			if err != nil {
				return nd, fmt.Errorf("-seeds: %w", err)
			}
			nd.registry = reg
			urls = append([]string{"http://" + httpAddr + registryPath}, append(urls, sopts.Seeds...)...)
		}
		disc, err := kommander.RegistryDiscovery(opts, urls...)
		if err != nil {
			return nd, fmt.Errorf("-registry: %w", err)
		}
		nd.discovery = disc
	case "multicast":
		opts := kommander.MulticastOptions{Cluster: cluster, Secret: secret, Logger: log}
		if d.group != "" {
			host, port, err := net.SplitHostPort(d.group)
			if err != nil {
				return nd, fmt.Errorf("-multicast-group %q: want ip:port: %w", d.group, err)
			}
			p, err := strconv.Atoi(port)
			if err != nil {
				return nd, fmt.Errorf("-multicast-group %q: port: %w", d.group, err)
			}
			opts.Group, opts.Port = host, p
		}
		disc, err := kommander.MulticastDiscovery(opts)
		if err != nil {
			return nd, fmt.Errorf("-multicast-group: %w", err)
		}
		nd.discovery = disc
	}
	return nd, nil
}

// announceable refuses an address other nodes cannot use: one with no host or an
// unspecified one (0.0.0.0, ::), since discovery announces it as it is.
func announceable(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	if ip := net.ParseIP(host); host == "" || (ip != nil && ip.IsUnspecified()) {
		return fmt.Errorf("%q is announced to the other nodes through discovery: give a host they can reach, not %q", addr, host)
	}
	return nil
}

// withRegistry serves the node's registry, when it has one, beside h.
func (nd nodeDiscovery) withRegistry(h http.Handler) http.Handler {
	if nd.registry == nil {
		return h
	}
	mux := http.NewServeMux()
	mux.Handle(registryPath+"/", http.StripPrefix(registryPath, nd.registry))
	mux.Handle("/", h)
	return mux
}

// lateHandler serves a handler set once it exists, and 503 before.
type lateHandler struct{ h atomic.Pointer[http.Handler] }

func (l *lateHandler) set(h http.Handler) { l.h.Store(&h) }

func (l *lateHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := l.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	writeError(w, http.StatusServiceUnavailable, "the node is starting")
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}
