package app

import (
	"errors"
	"flag"
	"fmt"
	"net"
	"time"

	"github.com/understudy-ml/understudy/services/platform/predict"
	"github.com/understudy-ml/understudy/services/platform/svc"
	"github.com/understudy-ml/understudy/services/platform/upstream"
	"github.com/understudy-ml/understudy/services/tap/internal/route"
	"github.com/understudy-ml/understudy/services/tap/producer"
)

// Config is the tap's configuration. Routes come from RoutesFile when it is set, otherwise
// from the single-route flags (champion.*, experiment, sampling.*, capture.max-bytes).
type Config struct {
	svc.Common
	Producer producer.Config

	ListenAddr   string // address of the proxy
	Engine       string // fast (fasthttp) or std (net/http, streams requests, h2c)
	MaxBodyBytes int    // fast engine: largest request or response body forwarded
	RoutesFile   string // YAML routes; reloaded on SIGHUP
	RedactionKey string // key of redaction hashes (prefer the env variable)
	RequireKafka bool   // /readyz fails while Kafka is unreachable

	ReadTimeout         time.Duration // a caller's whole request (headers and body) must arrive within this
	IdleTimeout         time.Duration // a caller's idle keep-alive connection is closed after this
	UpstreamIdleTimeout time.Duration // an idle connection to a champion is closed after this
	StreamTimeout       time.Duration // a champion's response may take this long after its first byte

	// The single route used when RoutesFile is empty.
	ChampionURL     string
	Experiment      string
	Tenant          string
	ModelName       string
	ModelVersion    string
	Protocol        string
	CaptureMaxBytes int
	SampleRate      float64
	SampleKey       string
}

// NewDefaultConfig returns the defaults.
func NewDefaultConfig() Config {
	pc := producer.NewDefaultConfig()
	return Config{
		Common:       svc.NewCommon("tap", ":9101"),
		Producer:     pc,
		ListenAddr:   ":8080",
		Engine:       EngineFast,
		MaxBodyBytes: 64 << 20,

		ReadTimeout:         30 * time.Second,
		IdleTimeout:         90 * time.Second,
		UpstreamIdleTimeout: upstream.DefaultIdleTimeout,
		StreamTimeout:       10 * time.Minute,
		Protocol:            predict.ProtocolOIPv2,
		CaptureMaxBytes:     512 << 10,
		SampleRate:          1,
		SampleKey:           route.SampleByRequestID,
	}
}

// RegisterFlags registers every flag.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	c.Common.RegisterFlags(fs)
	c.Producer.RegisterFlags(fs)
	fs.StringVar(&c.ListenAddr, "proxy.listen-addr", c.ListenAddr, "address the proxy listens on")
	fs.StringVar(&c.Engine, "proxy.engine", c.Engine, "proxy engine: fast (fasthttp, least CPU) or std (net/http: streams request bodies, h2c upstreams)")
	fs.IntVar(&c.MaxBodyBytes, "proxy.max-body-bytes", c.MaxBodyBytes, "fast engine: largest request body read, and largest response body not streamed")
	fs.StringVar(&c.RoutesFile, "routes.file", c.RoutesFile, "YAML routes file (reloaded on SIGHUP); without it the champion.* flags define one catch-all route")
	fs.StringVar(&c.RedactionKey, "redaction.key", c.RedactionKey, "HMAC key of redaction hashes (set UNDERSTUDY_TAP_REDACTION_KEY rather than the flag)")
	fs.BoolVar(&c.RequireKafka, "ready.require-kafka", c.RequireKafka, "make /readyz fail while Kafka is unreachable (the proxy keeps serving either way)")
	fs.DurationVar(&c.ReadTimeout, "proxy.read-timeout", c.ReadTimeout, "a caller's whole request (headers and body) must arrive within this, or the connection is closed (slow clients)")
	fs.DurationVar(&c.IdleTimeout, "proxy.idle-timeout", c.IdleTimeout, "idle keep-alive connections of callers are closed after this")
	fs.DurationVar(&c.UpstreamIdleTimeout, "proxy.upstream-idle-timeout", c.UpstreamIdleTimeout, "idle connections to champions are closed after this; keep it below the champion's keep-alive timeout (uvicorn 5s, gunicorn 2s)")
	fs.DurationVar(&c.StreamTimeout, "proxy.stream-timeout", c.StreamTimeout, "fast engine: how long a champion's response may take after its first byte (a route's timeout bounds the time to the first byte)")
	fs.StringVar(&c.ChampionURL, "champion.url", c.ChampionURL, "single route: base URL of the champion model server")
	fs.StringVar(&c.Experiment, "experiment", c.Experiment, "single route: experiment name of captured events")
	fs.StringVar(&c.Tenant, "tenant", c.Tenant, "single route: tenant tag of captured events")
	fs.StringVar(&c.ModelName, "champion.model-name", c.ModelName, "single route: champion model name (default: from the OIP path or response)")
	fs.StringVar(&c.ModelVersion, "champion.model-version", c.ModelVersion, "single route: champion model version")
	fs.StringVar(&c.Protocol, "champion.protocol", c.Protocol, "single route: oip-v2, kserve-v1 or json-pointer:/path")
	fs.IntVar(&c.CaptureMaxBytes, "capture.max-bytes", c.CaptureMaxBytes, "single route: largest body captured whole; larger ones are proxied in full and captured truncated")
	fs.Float64Var(&c.SampleRate, "sampling.rate", c.SampleRate, "single route: fraction of requests captured (deterministic by sampling key)")
	fs.StringVar(&c.SampleKey, "sampling.key", c.SampleKey, "single route: request_id or header:<Name>")
}

// Routes returns the routes the config describes: the routes file when one is set (read
// now), else the single route of the flags.
func (c *Config) Routes() ([]route.Route, error) {
	if c.RoutesFile != "" {
		return route.Load(c.RoutesFile)
	}
	rate := c.SampleRate
	r := route.Route{
		Name: "default", Experiment: c.Experiment, Tenant: c.Tenant,
		Champion: route.Champion{URL: c.ChampionURL, Protocol: c.Protocol, ModelName: c.ModelName, ModelVersion: c.ModelVersion},
		Sampling: route.Sampling{Rate: &rate, Key: c.SampleKey},
		Capture:  route.Capture{MaxBytes: c.CaptureMaxBytes, Oversize: route.OversizeTruncate},
	}
	return []route.Route{r}, route.Validate([]route.Route{r})
}

// Validate reports every problem.
func (c *Config) Validate() error {
	errs := []error{c.Common.Validate(), c.Producer.Validate()}
	if _, _, err := net.SplitHostPort(c.ListenAddr); err != nil {
		errs = append(errs, fmt.Errorf("proxy.listen-addr: %w", err))
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"proxy.read-timeout", c.ReadTimeout}, {"proxy.idle-timeout", c.IdleTimeout}, {"proxy.upstream-idle-timeout", c.UpstreamIdleTimeout}, {"proxy.stream-timeout", c.StreamTimeout}} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be positive, got %s", d.name, d.v))
		}
	}
	if c.Engine != EngineFast && c.Engine != EngineStd {
		errs = append(errs, fmt.Errorf("proxy.engine: %q is neither fast nor std", c.Engine))
	}
	if c.MaxBodyBytes < 1<<20 {
		errs = append(errs, errors.New("proxy.max-body-bytes: must be at least 1 MiB"))
	}
	if c.RoutesFile == "" { // a routes file is read by New and Reload (Validate reads no file)
		routes, err := c.Routes()
		errs = append(errs, err, c.checkRoutes(routes))
	}
	return errors.Join(errs...)
}

// checkRoutes reports what routes need that the rest of the configuration does not give.
func (c *Config) checkRoutes(routes []route.Route) error {
	var errs []error
	for _, r := range routes {
		if r.Champion.H2C && c.Engine == EngineFast {
			errs = append(errs, fmt.Errorf("route %q: h2c upstreams need --proxy.engine=std", r.Name))
		}
	}
	return errors.Join(errs...)
}

// loadRoutes returns the routes the config describes, checked against the rest of it.
func (c *Config) loadRoutes() ([]route.Route, error) {
	routes, err := c.Routes()
	if err == nil {
		err = c.checkRoutes(routes)
	}
	return routes, err
}
