// Package servicetest holds what the services' own tests share about their lifecycle: a leak
// check for the whole test binary, an in-process broker and a file to point a flag at. It is
// imported by tests only.
package servicetest

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/understudy-ml/understudy/schemas"
	"go.uber.org/goleak"
)

// VerifyNoLeaks runs the package's tests (call it from TestMain) and fails them when any
// goroutine outlives them, except fasthttp's own: its process-wide dialer cache cleaner and
// server date updater, and the cleaners of each host client's idle connections and each
// server's idle workers, which end by themselves within their idle timeouts.
func VerifyNoLeaks(m *testing.M) {
	goleak.VerifyTestMain(m,
		goleak.IgnoreTopFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"))
}

// Broker starts an in-process Kafka (kfake) with every Understudy topic of the given
// partitions, closed when the test ends, and returns its addresses as --kafka.brokers takes
// them.
func Broker(t testing.TB, partitions int32) string {
	t.Helper()
	cluster, err := kfake.NewCluster(kfake.NumBrokers(1), kfake.SeedTopics(partitions, schemas.Topics...))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cluster.Close)
	return strings.Join(cluster.ListenAddrs(), ",")
}

// File writes content to a file named name in the test's temporary directory and returns its
// path.
func File(t testing.TB, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}
