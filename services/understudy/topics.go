package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/understudy-ml/understudy/services/platform/kafka"
	"github.com/understudy-ml/understudy/services/platform/topics"
)

func runTopics(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] != "create" {
		fmt.Fprintln(stderr, "usage: understudy topics create [--kafka.brokers=...] [--topics.partitions=N] [--topics.retention=D]")
		return 2
	}
	kc := kafka.NewDefaultConfig("cli")
	tc := topics.NewDefaultConfig()
	fs := flag.NewFlagSet("topics create", flag.ContinueOnError)
	fs.SetOutput(stderr)
	kc.RegisterFlags(fs)
	tc.RegisterFlags(fs)
	if !parseFlags(fs, "cli", args[1:], stderr) {
		return 2
	}
	if err := errors.Join(kc.Validate(), tc.Validate()); err != nil {
		fmt.Fprintf(stderr, "understudy topics create: invalid configuration:\n%v\n", err)
		return 2
	}
	cl, err := kgo.NewClient(kc.Opts()...)
	if err != nil {
		fmt.Fprintln(stderr, "understudy topics create:", err)
		return 1
	}
	defer cl.Close()
	res, err := topics.Ensure(ctx, cl, tc, topics.Understudy(tc))
	for _, r := range res {
		verb := "exists "
		if r.Created {
			verb = "created"
		}
		fmt.Fprintf(stdout, "%s %-28s partitions=%d\n", verb, r.Name, r.Partitions)
	}
	if err != nil {
		fmt.Fprintln(stderr, "understudy topics create:", err)
		return 1
	}
	return 0
}
