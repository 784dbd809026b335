package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/understudy-ml/understudy/services/understudy/demo"
)

// runModel serves one of the demo models, for the docker-compose stack and manual trials.
func runModel(ctx context.Context, args []string, _, stderr io.Writer) int {
	fs := flag.NewFlagSet("model", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "champion", "demo model to serve: champion, candidate or copy (the noise baseline)")
	addr := fs.String("listen-addr", ":8000", "listen address")
	service := fs.Duration("service-time", demo.ServiceTime, "median service time added to every answer (log-normal, the same on every copy for the same request; 0: none)")
	if !parseFlags(fs, "model", args, stderr) {
		return 2
	}
	models := map[string]*demo.Model{"champion": demo.Champion(), "candidate": demo.Candidate(), "copy": demo.NoiseCopy()}
	m, ok := models[*name]
	if !ok {
		fmt.Fprintf(stderr, "understudy model: unknown model %q (champion, candidate or copy)\n", *name)
		return 2
	}
	m.Service = *service
	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		fmt.Fprintln(stderr, "understudy model:", err)
		return 1
	}
	srv := &http.Server{Handler: m, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}()
	fmt.Fprintf(stderr, "serving demo model %s v%s on %s (POST /v2/models/%s/infer)\n", *name, m.Version, ln.Addr(), m.Name)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		fmt.Fprintln(stderr, "understudy model:", err)
		return 1
	}
	return 0
}
