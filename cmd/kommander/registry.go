package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/kommander-go/kommander"
)

// The `registry` subcommand: a standalone discovery registry, where nodes register their
// addresses and find each other.

// runRegistry runs `kommander registry` until ctx ends or SIGTERM/SIGINT arrives.
func runRegistry(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "", "address the registry serves HTTP on, host:port (required)")
	cluster := fs.String("cluster", "kommander", "cluster name; registrations for another cluster are refused")
	secretFile := fs.String("secret-file", "", "file holding the cluster secret (at least 16 bytes) that signs requests and answers")
	ttl := fs.Duration("ttl", kommander.DefaultRegistryTTL, "the longest a registration lives without renewal")
	seeds := fs.String("seeds", "", "other registries to exchange tables with: http://host:port,...")
	maxNodes := fs.Int("max-nodes", kommander.DefaultRegistryMaxNodes, "the most nodes the registry holds")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("registry: unexpected argument %q", fs.Arg(0))
	}
	if *listen == "" {
		return errors.New("registry: -listen is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return fmt.Errorf("registry: -log-level: %w", err)
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	opts := kommander.RegistryOptions{Cluster: *cluster, TTL: *ttl, MaxNodes: *maxNodes, Logger: log}
	if *secretFile != "" {
		b, err := os.ReadFile(*secretFile)
		if err != nil {
			return fmt.Errorf("registry: -secret-file: %w", err)
		}
		opts.Secret = bytes.TrimSpace(b)
	}
	opts.Seeds = splitList(*seeds)
	reg, err := kommander.NewRegistryServer(opts)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("registry: -listen: %w", err)
	}
	srv := newHTTPServer(reg, 5*time.Second, log)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	reg.Start()
	log.Info("registry running", "listen", ln.Addr().String(), "cluster", *cluster, "ttl", *ttl, "seeds", opts.Seeds, "signed", opts.Secret != nil)

	sigs, stopSignals := signal.NotifyContext(ctx, syscall.SIGTERM, os.Interrupt)
	defer stopSignals()
	var serveErr error
	select {
	case <-sigs.Done():
		log.Info("stopping", "cause", context.Cause(sigs))
	case serveErr = <-served:
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return finish(log, "registry", serveErr, srv.Shutdown(shutCtx), reg.Close())
}
