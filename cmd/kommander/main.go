// Command kommander is the runnable face of the kommander Raft library:
//
//	kommander demo    a local three-node cluster that shows elections, replication,
//	                  a leader failing over and a node catching up (no flags needed)
//	kommander node    one node of a replicated key-value store served over HTTP
//	kommander bench   the standard benchmark: ops/s, MB/s, latency and CPU per op
//	kommander registry  a discovery registry where nodes register their addresses
//
// Run `kommander <command> -h` for the flags of each.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `usage: kommander <command> [flags]

commands:
  demo    run a local 3-node cluster and show elections, replication and failover
  node    run one node of a replicated key-value store over HTTP
  bench   measure ops/s, MB/s, latency percentiles and CPU per op
  registry  run a discovery registry where nodes register and find each other

Run 'kommander <command> -h' for the flags of a command.
`

// run runs the command args name and returns the process exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "demo", "bench":
		// Ctrl-C ends the run early but still stops the nodes and removes the temporary
		// directory.
		sctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
		defer stop()
		if args[0] == "demo" {
			err = runDemo(sctx, args[1:], stdout, stderr)
		} else {
			err = runBench(sctx, args[1:], stdout, stderr)
		}
	case "node":
		err = runNode(ctx, args[1:], stderr)
	case "registry":
		err = runRegistry(ctx, args[1:], stderr)
	case "help", "-h", "-help", "--help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "kommander: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	switch {
	case errors.Is(err, flag.ErrHelp):
		return 0
	case err != nil:
		fmt.Fprintf(stderr, "kommander %s: %v\n", args[0], err)
		return 1
	}
	return 0
}
