package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/fluxlimiter/flux"
	"github.com/fluxlimiter/flux/client"
	"github.com/fluxlimiter/flux/node"
	"github.com/fluxlimiter/flux/protocol"
)

// defaultURL is where `flux-node check` looks for a node unless told
// otherwise (by --nats-url or $NATS_URL): the default embedded server.
const defaultURL = "nats://127.0.0.1:4222"

// runCheck is `flux-node check [flags] LIMITER KEY [COST]`: it prints the
// decision and exits 0 when allowed, 1 when denied, 2 on any error.
func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("flux-node check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	url := defaultURL
	if env := os.Getenv("NATS_URL"); env != "" {
		url = env
	}
	fs.StringVar(&url, "nats-url", url, "NATS `URL` of the node ($NATS_URL if set)")
	token := fs.String("token", "", "NATS authorization `TOKEN` (default: the environment variable "+node.EnvToken+")")
	user := fs.String("user", "", "NATS `USER`")
	password := fs.String("password", "", "NATS `PASSWORD` (default: the environment variable "+node.EnvPassword+")")
	ca := fs.String("tls-ca", "", "PEM CA `FILE` to verify the server with")
	cert := fs.String("tls-cert", "", "PEM client certificate `FILE`")
	key := fs.String("tls-key", "", "PEM key `FILE` of --tls-cert")
	timeout := fs.Duration("timeout", 2*time.Second, "how long to wait for the answer")
	usage := func() {
		fmt.Fprintf(stderr, "Usage: flux-node check [flags] LIMITER KEY [COST]\n\n"+
			"Asks a flux-node whether a request of COST (default 1; 0 peeks) for KEY\n"+
			"is admitted by LIMITER, and records it if so.\n"+
			"Exit status: 0 allowed, 1 denied, 2 error.\n\nFlags:\n")
		fs.PrintDefaults()
	}
	fs.Usage = func() {} // a bad flag gets its error and a hint, not the usage
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage()
			return nil
		}
		return badFlag(stderr, "flux-node check")
	}
	fail := func(format string, a ...any) error {
		fmt.Fprintf(stderr, "flux-node check: "+format+"\n", a...)
		return exitCode(2)
	}
	if fs.NArg() < 2 || fs.NArg() > 3 {
		usage()
		return exitCode(2)
	}
	limiter, k, cost := fs.Arg(0), fs.Arg(1), 1
	if fs.NArg() == 3 {
		c, err := strconv.Atoi(fs.Arg(2))
		if err != nil {
			return fail("COST %q is not a whole number", fs.Arg(2))
		}
		cost = c
	}
	opts := []nats.Option{nats.Name("flux-node check"), nats.Timeout(*timeout)}
	// As the node does, read what the flags leave out from the
	// environment: flags show in the process list.
	tok, _, pw, err := node.Config{Token: *token, User: *user, Password: *password}.Credentials()
	if err != nil {
		return fail("%v", err)
	}
	switch {
	case tok != "":
		opts = append(opts, nats.Token(tok))
	case *user != "":
		opts = append(opts, nats.UserInfo(*user, pw))
	}
	if *ca != "" {
		opts = append(opts, nats.RootCAs(*ca))
	}
	if *cert != "" {
		opts = append(opts, nats.ClientCert(*cert, *key))
	}
	nc, err := nats.Connect(url, opts...)
	if err != nil {
		return fail("cannot connect to NATS at %s: %v (is flux-node running? pass its address with --nats-url)", url, err)
	}
	defer nc.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	d, err := client.New(nc).Check(ctx, limiter, k, cost)
	if errors.Is(err, nats.ErrNoResponders) {
		return fail("no flux-node answers on %s at %s (is it running there? pass its address with --nats-url)", protocol.SubjectCheck, url)
	}
	if err != nil {
		return fail("%v", err)
	}
	fmt.Fprintln(stdout, describe(limiter, k, d))
	if !d.Allowed {
		return exitCode(1)
	}
	return nil
}

// describe says a decision for a person. Waits are rounded up to the
// millisecond, so waiting the time shown is always enough.
func describe(limiter, key string, d flux.Decision) string {
	verdict := "allowed"
	if !d.Allowed {
		verdict = "denied"
	}
	s := fmt.Sprintf("%s: %s %q: %d of %d remaining", verdict, limiter, key, d.Remaining, d.Limit)
	if !d.Allowed {
		s += fmt.Sprintf(", retry after %v", roundUp(d.RetryAfter))
	}
	if d.Delay > 0 {
		s += fmt.Sprintf(", act after %v", roundUp(d.Delay))
	}
	return s + fmt.Sprintf(", full again in %v", roundUp(d.ResetAfter))
}

func roundUp(d time.Duration) time.Duration {
	const ms = time.Millisecond
	return (d + ms - 1) / ms * ms
}
