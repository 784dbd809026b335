// Package server runs a service's operational HTTP endpoints: /healthz (the process is alive),
// /readyz (every dependency check passes right now), /metrics (Prometheus) and, when enabled,
// /debug/pprof, the last two behind an optional bearer token. Services may mount their own
// handlers on the same mux.
package server

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/pprof"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config holds the listen address, shutdown limit and who may read metrics and profiles.
type Config struct {
	ListenAddr      string
	ShutdownTimeout time.Duration
	// Token, when set, is required as "Authorization: Bearer <token>" by /metrics and
	// /debug/pprof (Prometheus: authorization.credentials in the scrape config). /healthz and
	// /readyz stay open for probes.
	Token string
	// Pprof serves /debug/pprof; off by default (profiles expose memory contents).
	Pprof bool
}

// NewDefaultConfig returns a config listening on addr.
func NewDefaultConfig(addr string) Config {
	return Config{ListenAddr: addr, ShutdownTimeout: 10 * time.Second}
}

// RegisterFlags registers http.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.ListenAddr, "http.listen-addr", c.ListenAddr, "address of the /healthz, /readyz and /metrics endpoints")
	fs.DurationVar(&c.ShutdownTimeout, "http.shutdown-timeout", c.ShutdownTimeout, "time allowed to drain HTTP connections at shutdown")
	fs.StringVar(&c.Token, "http.token", c.Token, "bearer token required by /metrics and /debug/pprof (set it through the environment); empty leaves them open")
	fs.BoolVar(&c.Pprof, "http.pprof", c.Pprof, "serve /debug/pprof on the operational port (behind http.token when set)")
}

// Validate reports every problem with the config.
func (c *Config) Validate() error {
	var errs []error
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("http.listen-addr: %w", err))
	}
	if c.ShutdownTimeout <= 0 {
		errs = append(errs, errors.New("http.shutdown-timeout: must be positive"))
	}
	return errors.Join(errs...)
}

// Check reports whether one dependency is usable now; it must honour ctx.
type Check func(ctx context.Context) error

// Server serves the operational endpoints.
type Server struct {
	cfg    Config
	logger *slog.Logger
	mux    *http.ServeMux

	mu     sync.Mutex
	checks map[string]Check
	infos  map[string]Check
	ln     net.Listener
}

// New returns a server whose /metrics serves gatherer. It does not listen until Run.
func New(cfg Config, logger *slog.Logger, gatherer prometheus.Gatherer) *Server {
	s := &Server{cfg: cfg, logger: logger, mux: http.NewServeMux(), checks: map[string]Check{}, infos: map[string]Check{}}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		_, _ = w.Write([]byte("ok\n"))
	})
	s.mux.HandleFunc("GET /readyz", s.ready)
	s.mux.Handle("GET /metrics", RequireToken(cfg.Token, promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{})))
	if cfg.Pprof {
		// Profiles, on the operational port only (never on a service's data port).
		s.mux.Handle("GET /debug/pprof/", RequireToken(cfg.Token, http.HandlerFunc(pprof.Index)))
		s.mux.Handle("GET /debug/pprof/profile", RequireToken(cfg.Token, http.HandlerFunc(pprof.Profile)))
		s.mux.Handle("GET /debug/pprof/trace", RequireToken(cfg.Token, http.HandlerFunc(pprof.Trace)))
	}
	return s
}

// RequireToken wraps h so that it answers 401 unless the request carries
// "Authorization: Bearer <token>" (compared in constant time); an empty token leaves h open.
func RequireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if subtle.ConstantTimeCompare([]byte(r.Header.Get("Authorization")), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="understudy"`)
			http.Error(w, "missing or wrong bearer token", http.StatusUnauthorized)
			return
		}
		h.ServeHTTP(w, r)
	})
}

// Mux returns the mux, for services that add handlers.
func (s *Server) Mux() *http.ServeMux { return s.mux }

// AddCheck adds a named readiness check; /readyz runs every check on each request.
func (s *Server) AddCheck(name string, c Check) {
	s.mu.Lock()
	s.checks[name] = c
	s.mu.Unlock()
}

// AddInfo adds a named check that /readyz runs and reports under "degraded" without failing:
// for dependencies the service keeps working without.
func (s *Server) AddInfo(name string, c Check) {
	s.mu.Lock()
	s.infos[name] = c
	s.mu.Unlock()
}

// Ready runs every check and returns the failures by name.
func (s *Server) Ready(ctx context.Context) map[string]string {
	s.mu.Lock()
	checks := maps.Clone(s.checks)
	s.mu.Unlock()
	return run(ctx, checks)
}

func (s *Server) degraded(ctx context.Context) map[string]string {
	s.mu.Lock()
	infos := maps.Clone(s.infos)
	s.mu.Unlock()
	return run(ctx, infos)
}

func run(ctx context.Context, checks map[string]Check) map[string]string {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var (
		mu       sync.Mutex
		wg       sync.WaitGroup
		failures = map[string]string{}
	)
	for name, c := range checks {
		wg.Go(func() {
			if err := c(ctx); err != nil {
				mu.Lock()
				failures[name] = err.Error()
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return failures
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	failures := s.Ready(r.Context())
	degraded := s.degraded(r.Context())
	w.Header().Set("Content-Type", "application/json")
	if len(failures) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	_ = json.NewEncoder(w).Encode(map[string]any{"ready": len(failures) == 0, "failing": failures, "degraded": degraded})
}

// Listen binds the listen address; Run calls it when it was not called before. Calling it
// first lets a caller learn the bound address (port 0) before Run.
func (s *Server) Listen() (net.Addr, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		return s.ln.Addr(), nil
	}
	ln, err := net.Listen("tcp", s.cfg.ListenAddr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", s.cfg.ListenAddr, err)
	}
	s.ln = ln
	return ln.Addr(), nil
}

// Close releases the listener bound by Listen for a server whose Run never ran (Run closes it
// itself when it returns). It is idempotent.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln != nil {
		_ = s.ln.Close() // already closed after Run
	}
}

// Run serves until ctx ends, then shuts down within the configured timeout.
func (s *Server) Run(ctx context.Context) error {
	if _, err := s.Listen(); err != nil {
		return err
	}
	return Serve(ctx, s.logger.With("server", "ops"), s.ln, s.mux, s.cfg.ShutdownTimeout)
}

// Serve serves h on ln until ctx ends, then stops accepting and waits at most timeout for
// in-flight requests. It returns nil after a clean shutdown and closes ln in every case.
func Serve(ctx context.Context, logger *slog.Logger, ln net.Listener, h http.Handler, timeout time.Duration) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 2 * time.Minute}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	logger.Info("http server listening", "addr", ln.Addr().String())
	select {
	case err := <-errc:
		return fmt.Errorf("http serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		_ = srv.Close()
		return fmt.Errorf("http shutdown %s: %w", ln.Addr(), err)
	}
	return nil
}
