// Command flux-node serves Flux rate-limit checks over NATS.
//
//	flux-node [flags]                     run a node (embedded NATS on 127.0.0.1:4222)
//	flux-node check [flags] LIMITER KEY [COST]
//	                                      ask a running node; exit 0 allowed, 1 denied, 2 error
//	flux-node version                     print the version and VCS revision (also --version)
//
// Run `flux-node -h` or `flux-node check -h` for the flags. The README's
// "Running flux-node" section and docs/PROTOCOL.md say more.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"

	// Time zones of calendar fixed windows (timezone: Europe/Paris) load
	// even on machines and containers without a zoneinfo database.
	_ "time/tzdata"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(exitStatus(err, os.Stderr))
}

// exitCode is an error that only sets the process's exit status; run has
// already said what there was to say.
type exitCode int

func (e exitCode) Error() string { return fmt.Sprintf("exit status %d", int(e)) }

// loggedError is an error the node's log has already shown: it sets the
// exit status without printing the error a second time.
type loggedError struct{ error }

func (e loggedError) Unwrap() error { return e.error }

// badFlag tells, after the flag package printed a flag's error, where the
// usage is, instead of printing the whole usage under the error.
func badFlag(stderr io.Writer, cmd string) error {
	fmt.Fprintf(stderr, "run %s --help for usage\n", cmd)
	return exitCode(2)
}

// exitStatus maps run's error to the exit status, printing it if needed.
func exitStatus(err error, stderr io.Writer) int {
	var ec exitCode
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ec):
		return int(ec)
	case errors.As(err, new(loggedError)):
		return 1
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "flux-node") {
		msg = "flux-node: " + msg
	}
	fmt.Fprintln(stderr, msg)
	return 1
}

// run is the whole program: args are the arguments after the program name.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 {
		switch args[0] {
		case "check":
			return runCheck(ctx, args[1:], stdout, stderr)
		case "version":
			fmt.Fprintln(stdout, version())
			return nil
		}
	}
	return serve(ctx, args, stdout, stderr)
}
