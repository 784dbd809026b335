package main

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/understudy-ml/understudy/schemas"

	"github.com/twmb/franz-go/pkg/kfake"
)

func TestUnknownCommandAndHelp(t *testing.T) {
	var out, errOut bytes.Buffer
	if code := run(context.Background(), []string{"nope"}, &out, &errOut); code != 2 || !strings.Contains(errOut.String(), `unknown command "nope"`) {
		t.Fatalf("code %d, stderr %q", code, errOut.String())
	}
	errOut.Reset()
	if code := run(context.Background(), []string{"help"}, &out, &errOut); code != 0 || !strings.Contains(errOut.String(), "demo") {
		t.Fatalf("help: code %d, stderr %q", code, errOut.String())
	}
}

func TestTopicsCreateIsIdempotent(t *testing.T) {
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1))
	if err != nil {
		t.Fatal(err)
	}
	defer cluster.Close()
	args := []string{"create", "--kafka.brokers=" + strings.Join(cluster.ListenAddrs(), ","), "--topics.partitions=3"}
	for i, verb := range []string{"created", "exists "} {
		var out, errOut bytes.Buffer
		if code := runTopics(context.Background(), args, &out, &errOut); code != 0 {
			t.Fatalf("run %d: code %d: %s", i, code, errOut.String())
		}
		if n := strings.Count(out.String(), verb); n != len(schemas.Topics) {
			t.Fatalf("run %d: want %d topics %q, got:\n%s", i, len(schemas.Topics), verb, out.String())
		}
	}
}

// TestDemoRunsEndToEnd is the smoke test of `make demo`: a short run on the embedded broker
// and a throwaway Postgres must account for every request.
func TestDemoRunsEndToEnd(t *testing.T) {
	var out, errOut bytes.Buffer
	code := runDemo(context.Background(), []string{"--duration=2s", "--rate=50", "--label-delay=1s", "--exit", "--addr=127.0.0.1:0", "--data-dir=" + t.TempDir()}, &out, &errOut)
	// 100 requests are too few to decide: the verdict is CONTINUE, exit code 3.
	if code != 3 || !strings.Contains(out.String(), "CONTINUE") {
		t.Fatalf("demo exited %d\nstdout:\n%s\nstderr:\n%s", code, out.String(), errOut.String())
	}
	for _, want := range []string{
		"comparisons in Postgres          100  complete=100", "callers got the champion's bytes 100/100",
		"labeled comparisons              100 of 100", "candidate vs champion", /* the report's title row */
	} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("summary lacks %q:\n%s", want, out.String())
		}
	}
}

// TestBadEnvironmentValueIsPrinted: a bad value in the environment is named on stderr with
// exit code 2, not swallowed.
func TestBadEnvironmentValueIsPrinted(t *testing.T) {
	t.Setenv("UNDERSTUDY_MODEL_SERVICE_TIME", "soon")
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"model"}, &stdout, &stderr); code != 2 {
		t.Fatalf("exit %d, want 2; stderr %s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "UNDERSTUDY_MODEL_SERVICE_TIME") {
		t.Fatalf("stderr does not name the variable: %q", stderr.String())
	}
}
