package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/clusterlb/clusterlb/pkg/cpus"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"go.yaml.in/yaml/v3"
)

// Policies lists the accepted values of Config.Policy.
var Policies = []string{"round-robin", "least-conn", "p2c"}

// Engines lists the accepted values of Config.Engine.
var Engines = []string{"httputil", "fasthttp"}

// HealthTCP is the value of Config.HealthPath that asks for a TCP connect
// check instead of an HTTP GET.
const HealthTCP = "tcp"

// Config is the balancer's whole configuration. The zero value is not
// useful; start from Default.
type Config struct {
	// Listen is the public address, ":8080" by default.
	Listen string `yaml:"listen"`
	// Workers is the number of worker processes; 0 means one per CPU,
	// capped by the cgroup CPU limit (see WorkerCount).
	Workers int `yaml:"workers"`
	// Cmd is the worker command line, run through "/bin/sh -c 'exec CMD'"
	// so quoting and $PORT work as in a shell. Empty runs the built-in
	// Fiber backend.
	Cmd string `yaml:"cmd"`
	// Policy picks a worker per request: round-robin (default),
	// least-conn or p2c.
	Policy string `yaml:"policy"`
	// Engine is the proxy implementation: "httputil" (default,
	// net/http's ReverseProxy: HTTP/2 clients, streaming, upgrades) or
	// "fasthttp" (faster; bodies read whole, up to 4 MiB).
	Engine string `yaml:"engine"`
	// StatsPath is where the stats are served on the listen address:
	// JSON, or an HTML dashboard to a browser.
	StatsPath string `yaml:"stats_path"`
	// MetricsPath is where Prometheus metrics are served on the listen
	// address; "" turns them off there (the admin API has them too).
	MetricsPath string `yaml:"metrics_path"`
	// LivezPath answers 200 while the balancer is alive; ReadyzPath 200
	// only while at least ReadyMinWorkers workers are up. Neither is
	// proxied; "" turns one off.
	LivezPath       string `yaml:"livez_path"`
	ReadyzPath      string `yaml:"readyz_path"`
	ReadyMinWorkers int    `yaml:"ready_min_workers"`

	// Upstreams are backends the balancer does not start ("host:port"),
	// health-checked and balanced next to the local workers.
	Upstreams []string `yaml:"upstreams"`
	// LocalWorkers false runs no worker processes: only Upstreams.
	LocalWorkers bool `yaml:"local_workers"`

	// HealthPath is the active health check: an HTTP path, "tcp" for a
	// TCP connect, or "" for the default: /health for the built-in
	// backend, and for -cmd workers OPTIONS * (health.Ping), which any
	// answer passes.
	HealthPath     string        `yaml:"health_path"`
	HealthInterval time.Duration `yaml:"health_interval"`
	HealthTimeout  time.Duration `yaml:"health_timeout"`
	// HealthRise is how many passed checks in a row mark a worker up.
	HealthRise int `yaml:"health_rise"`
	// HealthFall is how many failed checks in a row mark a worker down.
	HealthFall int `yaml:"health_fall"`

	// RestartBackoff is the wait before the first restart of a worker
	// that died; each further crash multiplies it by
	// RestartBackoffFactor, up to RestartBackoffMax. A worker that stayed
	// up for RestartBackoffReset starts again from RestartBackoff.
	RestartBackoff       time.Duration `yaml:"restart_backoff"`
	RestartBackoffFactor float64       `yaml:"restart_backoff_factor"`
	RestartBackoffMax    time.Duration `yaml:"restart_backoff_max"`
	RestartBackoffReset  time.Duration `yaml:"restart_backoff_reset"`

	// UpstreamTimeout bounds the wait for a worker's response headers
	// (fasthttp engine: each wait for its bytes, the body's too); past
	// it the client gets 504.
	UpstreamTimeout time.Duration `yaml:"upstream_timeout"`
	// ShutdownGrace is how long in-flight requests may run after a stop
	// signal before connections are closed.
	ShutdownGrace time.Duration `yaml:"shutdown_grace"`
	// WorkerGrace is the time between SIGTERM and SIGKILL for a worker.
	WorkerGrace time.Duration `yaml:"worker_grace"`

	// ReadHeaderTimeout closes connections that send their header too
	// slowly (slowloris); at most 10s.
	ReadHeaderTimeout time.Duration `yaml:"read_header_timeout"`
	// BodyTimeout cuts off a client whose request body stalls (408): the
	// longest wait for its next bytes (httputil engine), or for the whole
	// body (fasthttp engine, which reads it whole).
	BodyTimeout time.Duration `yaml:"body_timeout"`
	// SendTimeout cuts off a client that takes none of the bytes sent to
	// it for this long (nginx's send_timeout): each write gets this long,
	// and again as long as some of its bytes went; a slow reader is not
	// cut off.
	SendTimeout time.Duration `yaml:"send_timeout"`
	// IdleTimeout closes idle keep-alive client connections.
	IdleTimeout time.Duration `yaml:"idle_timeout"`
	// MaxHeaderBytes bounds a request's header block; larger gets 431.
	// 64 KiB by default: net/http's own default, 1 MiB, let 500 clients
	// that each sent a header of 1 MB and never ended it hold 2 GB of the
	// balancer's memory (nginx stops at 32 KiB, HAProxy at 16 KiB).
	MaxHeaderBytes int `yaml:"max_header_bytes"`
	// MaxConns bounds the client connections open at once; past it, new
	// ones wait in the kernel's listen queue until one closes (HAProxy's
	// maxconn). 0 takes it from the open-file limit (limits.MaxConns),
	// which leaves a descriptor for each one's connection to a worker and
	// some for health checks and restarts.
	MaxConns int `yaml:"max_conns"`

	// MaxRetries bounds the retries of one request on other workers; -1
	// (default) means one less than the number of workers, 0 none.
	MaxRetries int `yaml:"max_retries"`
	// WorkerMaxConns bounds the requests at each worker at once; past it
	// they wait in the balancer, in the order they came, up to
	// UpstreamTimeout. 0 sets no bound.
	WorkerMaxConns int `yaml:"worker_max_conns"`
	// RetryBufferBytes: request bodies up to this size are buffered so
	// they can be replayed on another worker; larger ones stream, and
	// are replayed only while none of the body was sent. 0 buffers none.
	RetryBufferBytes int64 `yaml:"retry_buffer_bytes"`
	// MaxResponseBytes bounds the body of a worker's answer in the
	// fasthttp engine, which holds each one whole in memory: a larger one
	// is a 502. The httputil engine streams answers, with no bound.
	MaxResponseBytes int64 `yaml:"max_response_bytes"`

	// MinUptime: a worker that exits sooner had an unstable start.
	// After MaxRestarts restarts that follow unstable starts, in a row,
	// the next unstable start puts it in state backoff, restarted only
	// every restart_backoff_max.
	MinUptime   time.Duration `yaml:"min_uptime"`
	MaxRestarts int           `yaml:"max_restarts"`
	// StartTimeout bounds the time a new worker has to pass its first
	// health check.
	StartTimeout time.Duration `yaml:"start_timeout"`
	// DrainTimeout bounds the wait for the in-flight requests of a worker
	// being replaced or removed.
	DrainTimeout time.Duration `yaml:"drain_timeout"`
	// MaxRequests replaces a worker after that many requests, plus a
	// random 0..MaxRequestsJitter; 0 never does.
	MaxRequests       int64 `yaml:"max_requests"`
	MaxRequestsJitter int64 `yaml:"max_requests_jitter"`
	// MaxMemory replaces a worker whose resident memory passes that many
	// bytes; 0 never does.
	MaxMemory int64 `yaml:"max_memory"`

	// AdminListen is the admin API's address, loopback by default; ""
	// turns the admin API off. It is never served on Listen.
	AdminListen string `yaml:"admin_listen"`
	// AdminListenSet tells whether a flag or the file gave AdminListen:
	// the default address, if taken, turns the admin API off with a
	// warning, so that a plain start never fails on it; an address asked
	// for stops the start.
	AdminListenSet bool `yaml:"-"`
	// AdminToken, if set, is the bearer token the admin API asks for.
	AdminToken string `yaml:"admin_token"`

	// LogLevel is debug, info, warn or error.
	LogLevel string `yaml:"log_level"`
	// LogFormat is text (default) or json, for the balancer's log and
	// the workers' forwarded output.
	LogFormat string `yaml:"log_format"`
	// AccessLog logs one line per proxied request.
	AccessLog bool `yaml:"access_log"`
}

// Default returns the built-in defaults.
func Default() Config {
	return Config{
		Listen:               ":8080",
		Workers:              0,
		Policy:               "round-robin",
		Engine:               "httputil",
		StatsPath:            "/stats",
		MetricsPath:          "/metrics",
		LivezPath:            "/livez",
		ReadyzPath:           "/readyz",
		ReadyMinWorkers:      1,
		LocalWorkers:         true,
		Upstreams:            []string{},
		HealthInterval:       time.Second,
		HealthTimeout:        time.Second,
		HealthRise:           1,
		HealthFall:           2,
		RestartBackoff:       100 * time.Millisecond,
		RestartBackoffFactor: 1.5,
		RestartBackoffMax:    15 * time.Second,
		RestartBackoffReset:  30 * time.Second,
		UpstreamTimeout:      60 * time.Second,
		ShutdownGrace:        30 * time.Second,
		WorkerGrace:          10 * time.Second,
		ReadHeaderTimeout:    10 * time.Second,
		BodyTimeout:          60 * time.Second,
		SendTimeout:          60 * time.Second,
		IdleTimeout:          120 * time.Second,
		MaxHeaderBytes:       64 << 10,
		MaxRetries:           -1,
		RetryBufferBytes:     1 << 20,
		MaxResponseBytes:     64 << 20,
		MinUptime:            time.Second,
		MaxRestarts:          10,
		StartTimeout:         30 * time.Second,
		DrainTimeout:         30 * time.Second,
		AdminListen:          "127.0.0.1:9090",
		LogLevel:             "info",
		LogFormat:            "text",
	}
}

// WorkerCount resolves Workers: a positive value is returned as is; 0
// becomes the number of usable CPUs, cpus.Count of the real cgroup files
// and runtime.NumCPU (which already follows the CPU affinity mask): the
// CPUs, capped by the cgroup CPU limit rounded up, and at least 1.
//
// That matches what Go's runtime (1.25 and later) does for the default
// GOMAXPROCS, so in a container limited to 2 CPUs on a 64-core host it
// gives 2, not 64 (Node's os.cpus().length gives 64). It is computed
// explicitly rather than read from runtime.GOMAXPROCS(0) because the
// GOMAXPROCS environment variable, if the user set it for the balancer
// process, says nothing about the container; because the runtime never
// goes below 2 where one worker per whole CPU is wanted here (a 1-CPU
// container gets one worker); and so that where the number came from can
// be logged (cpus.Limit returns its source).
func (c Config) WorkerCount() int {
	if c.Workers > 0 {
		return c.Workers
	}
	return cpus.Count(os.DirFS("/"), runtime.NumCPU())
}

// backends is how many workers and upstreams the balancer starts with.
func (c Config) backends() int {
	n := len(c.Upstreams)
	if c.LocalWorkers {
		n += c.WorkerCount()
	}
	return n
}

// HealthCheck resolves HealthPath: it returns the HTTP path to GET, "*"
// for an OPTIONS * that any answer passes (a -cmd worker's paths are not
// known, but a stopped or stuck process answers nothing, though the
// kernel still accepts its connections), or "" for a TCP connect check.
func (c Config) HealthCheck() string {
	switch c.HealthPath {
	case HealthTCP:
		return ""
	case "":
		if c.Cmd != "" {
			return "*"
		}
		return "/health"
	}
	return c.HealthPath
}

// MaxWorkers bounds Workers; past it a typo is likelier than a need.
const MaxWorkers = pool.MaxWorkers

// MaxWorkerConns bounds WorkerMaxConns: each place is one slot of a
// channel per worker.
const MaxWorkerConns = 1 << 16

// MaxConnsLimit is the largest max_conns, far past what a process can
// have open.
const MaxConnsLimit = 1 << 24

// MaxHeaderBytesLimit is the largest max_header_bytes: 64 MiB, 64 times
// net/http's default, far past any real header, and far from the sums
// (the read buffer's slack on top of it) that would overflow.
const MaxHeaderBytesLimit = 64 << 20

// Validate checks every setting and returns the first error, naming the
// setting.
func (c Config) Validate() error {
	bad := func(name, format string, args ...any) error {
		return &SettingError{Setting: name, Reason: fmt.Sprintf(format, args...)}
	}
	if !validAddr(c.Listen, false) {
		return bad("listen", "want HOST:PORT or :PORT, the port 0 to 65535; got %q", c.Listen)
	}
	if c.Workers < 0 || c.Workers > MaxWorkers {
		return bad("workers", "want 0 (one per CPU) to %d; got %d", MaxWorkers, c.Workers)
	}
	if c.Cmd != "" && strings.TrimSpace(c.Cmd) == "" {
		return bad("cmd", "is blank")
	}
	if !contains(Policies, c.Policy) {
		return bad("policy", "want one of %s; got %q", strings.Join(Policies, ", "), c.Policy)
	}
	if !contains(Engines, c.Engine) {
		return bad("engine", "want one of %s; got %q", strings.Join(Engines, ", "), c.Engine)
	}
	if !validPath(c.StatsPath) {
		return bad("stats_path", "want a path of letters, digits and - . _ ~ / starting with /; got %q", c.StatsPath)
	}
	own := map[string]string{"stats_path": c.StatsPath}
	for _, pth := range []struct{ name, v string }{{"metrics_path", c.MetricsPath}, {"livez_path", c.LivezPath}, {"readyz_path", c.ReadyzPath}} {
		if pth.v == "" {
			continue
		}
		if !validPath(pth.v) {
			return bad(pth.name, "want a path of letters, digits and - . _ ~ / starting with /, or \"\" for none; got %q", pth.v)
		}
		for other, v := range own {
			if v == pth.v {
				return bad(pth.name, "%q is also %s: give one of the two another path", pth.v, other)
			}
		}
		own[pth.name] = pth.v
	}
	if c.ReadyMinWorkers < 0 {
		return bad("ready_min_workers", "want 0 or more; got %d", c.ReadyMinWorkers)
	}
	for i, u := range c.Upstreams {
		if !validAddr(u, true) {
			return bad("upstreams", "want HOST:PORT, the port 1 to 65535; got %q", u)
		}
		if slices.Contains(c.Upstreams[:i], u) {
			// Two workers of one backend would double its share of
			// the requests, and its failures.
			return bad("upstreams", "%q is given twice", u)
		}
	}
	if !c.LocalWorkers && len(c.Upstreams) == 0 {
		return bad("local_workers", "false leaves no backend: give upstreams too")
	}
	if total := c.backends(); c.ReadyMinWorkers > total {
		return bad("ready_min_workers", "want at most the %d workers and upstreams there are, or /readyz never answers ready; got %d", total, c.ReadyMinWorkers)
	}
	if c.HealthPath != "" && c.HealthPath != HealthTCP {
		if !strings.HasPrefix(c.HealthPath, "/") {
			return bad("health_path", "want a path starting with /, or %q; got %q", HealthTCP, c.HealthPath)
		}
		// net/url takes a space, a control byte and a '#', which no
		// request line carries.
		if _, err := url.ParseRequestURI(c.HealthPath); err != nil || strings.ContainsFunc(c.HealthPath, func(r rune) bool { return r <= ' ' || r == 0x7F || r == '#' }) {
			return bad("health_path", "want a path a request can carry (%%XX escapes of two hex digits); got %q", c.HealthPath)
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"health_interval", c.HealthInterval},
		{"health_timeout", c.HealthTimeout},
		{"restart_backoff", c.RestartBackoff},
		{"restart_backoff_max", c.RestartBackoffMax},
		{"restart_backoff_reset", c.RestartBackoffReset},
		{"upstream_timeout", c.UpstreamTimeout},
		{"worker_grace", c.WorkerGrace},
		{"read_header_timeout", c.ReadHeaderTimeout},
		{"body_timeout", c.BodyTimeout},
		{"send_timeout", c.SendTimeout},
		{"idle_timeout", c.IdleTimeout},
	} {
		if d.v <= 0 {
			return bad(d.name, "want a duration above 0; got %v", d.v)
		}
	}
	if c.ShutdownGrace < 0 {
		return bad("shutdown_grace", "want 0 or more; got %v", c.ShutdownGrace)
	}
	if c.ReadHeaderTimeout > 10*time.Second {
		return bad("read_header_timeout", "want at most 10s, or slow clients hold connections open; got %v", c.ReadHeaderTimeout)
	}
	if c.RestartBackoffMax < c.RestartBackoff {
		return bad("restart_backoff_max", "want at least restart_backoff (%v); got %v", c.RestartBackoff, c.RestartBackoffMax)
	}
	if !(c.RestartBackoffFactor >= 1) || math.IsInf(c.RestartBackoffFactor, 0) {
		return bad("restart_backoff_factor", "want a number of 1 or more; got %v", c.RestartBackoffFactor)
	}
	if c.HealthRise < 1 {
		return bad("health_rise", "want 1 or more; got %d", c.HealthRise)
	}
	if c.HealthFall < 1 {
		return bad("health_fall", "want 1 or more; got %d", c.HealthFall)
	}
	if c.MaxHeaderBytes < 1024 || c.MaxHeaderBytes > MaxHeaderBytesLimit {
		return bad("max_header_bytes", "want 1024 to %d; got %d", MaxHeaderBytesLimit, c.MaxHeaderBytes)
	}
	if c.MaxConns < 0 || c.MaxConns > MaxConnsLimit {
		return bad("max_conns", "want 0 (from the open-file limit) to %d; got %d", MaxConnsLimit, c.MaxConns)
	}
	if c.WorkerMaxConns < 0 || c.WorkerMaxConns > MaxWorkerConns {
		return bad("worker_max_conns", "want 0 (no bound) to %d; got %d", MaxWorkerConns, c.WorkerMaxConns)
	}
	if c.MaxRetries < -1 {
		return bad("max_retries", "want -1 (workers - 1), 0 (none) or more; got %d", c.MaxRetries)
	}
	for _, n := range []struct {
		name string
		v    int64
	}{
		{"retry_buffer_bytes", c.RetryBufferBytes},
		{"max_requests", c.MaxRequests},
		{"max_requests_jitter", c.MaxRequestsJitter},
		{"max_memory", c.MaxMemory},
		{"max_restarts", int64(c.MaxRestarts)},
	} {
		if n.v < 0 {
			return bad(n.name, "want 0 or more; got %d", n.v)
		}
	}
	if c.MaxResponseBytes < 1 {
		return bad("max_response_bytes", "want 1 or more; got %d", c.MaxResponseBytes)
	}
	if c.MaxRequestsJitter >= math.MaxInt64-c.MaxRequests {
		return bad("max_requests_jitter", "want max_requests (%d) + max_requests_jitter below %d; got %d", c.MaxRequests, int64(math.MaxInt64), c.MaxRequestsJitter)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"min_uptime", c.MinUptime},
		{"start_timeout", c.StartTimeout},
		{"drain_timeout", c.DrainTimeout},
	} {
		if d.v <= 0 {
			return bad(d.name, "want a duration above 0; got %v", d.v)
		}
	}
	if c.AdminListen != "" {
		if !validAddr(c.AdminListen, false) {
			return bad("admin_listen", "want HOST:PORT (the port 0 to 65535), or \"\" to turn the admin API off; got %q", c.AdminListen)
		}
		if sameListener(c.AdminListen, c.Listen) {
			return bad("admin_listen", "must differ from listen (%q): the admin API is never served on the public listener", c.Listen)
		}
		if c.AdminToken == "" && !loopbackAddr(c.AdminListen) {
			return bad("admin_listen", "%q is not a loopback address, and the admin API (reload, scale, restart, profiles) would answer anyone who reaches it: set admin_token, or listen on 127.0.0.1, [::1] or localhost", c.AdminListen)
		}
	}
	switch c.LogLevel {
	case "debug", "info", "warn", "error":
	default:
		return bad("log_level", "want debug, info, warn or error; got %q", c.LogLevel)
	}
	if c.LogFormat != "text" && c.LogFormat != "json" {
		return bad("log_format", "want text or json; got %q", c.LogFormat)
	}
	return nil
}

// loopbackAddr reports whether addr's host is localhost or a loopback
// address; an empty host (":9090") is every address.
func loopbackAddr(addr string) bool {
	host, _, _ := net.SplitHostPort(addr)
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}

// validAddr reports whether addr is HOST:PORT (or :PORT, unless
// needHost) with a port that exists: a number up to 65535 (0 picks one;
// never for an upstream) or a service name.
func validAddr(addr string, needHost bool) bool {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || port == "" || needHost && host == "" {
		return false
	}
	n, err := net.LookupPort("tcp", port)
	return err == nil && (n > 0 || !needHost)
}

// sameListener reports whether listeners on a and b (both valid) would
// take the same port: the same port number, not 0 (which picks a free
// one), with the same host or either on every address. ("localhost"
// beside "127.0.0.1" is left to the bind, which names its address.)
func sameListener(a, b string) bool {
	ha, pa, _ := net.SplitHostPort(a)
	hb, pb, _ := net.SplitHostPort(b)
	na, _ := net.LookupPort("tcp", pa)
	nb, _ := net.LookupPort("tcp", pb)
	if na == 0 || na != nb {
		return false
	}
	wildcard := func(h string) bool { return h == "" || h == "0.0.0.0" || h == "::" }
	return strings.EqualFold(ha, hb) || wildcard(ha) || wildcard(hb)
}

// validPath reports whether p is a path the balancer can serve its own
// pages on: a / and then letters, digits and - . _ ~ / only, so that no
// pattern syntax ({name}, spaces, a method) reaches the mux.
func validPath(p string) bool {
	if !strings.HasPrefix(p, "/") {
		return false
	}
	for _, r := range p {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-._~/", r)) {
			return false
		}
	}
	return true
}

// SettingError is a setting with a bad value. File and Line are set when
// the value came from a config file and was wrong there: Line is its
// key's.
type SettingError struct {
	File    string
	Line    int
	Setting string
	Reason  string
}

func (e *SettingError) Error() string {
	switch {
	case e.File != "" && e.Line > 0:
		return fmt.Sprintf("%s: %s: line %d: %s", e.File, e.Setting, e.Line, e.Reason)
	case e.File != "":
		return fmt.Sprintf("%s: %s: %s", e.File, e.Setting, e.Reason)
	}
	return fmt.Sprintf("%s: %s", e.Setting, e.Reason)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// LoadFile reads the YAML file at path over c. Every error names the key
// and its line: a key it does not know (so a typo does not pass
// silently), one given twice, one with no value (which would leave the
// default in place unseen), a value of the wrong type (a fraction for a
// whole number, which the YAML decoder would cut, or a bare number other
// than 0 for a duration), and a second document in the file.
func (c *Config) LoadFile(path string) error {
	_, err := c.loadFile(path)
	return err
}

// loadFile is LoadFile, and returns the settings the file gave, each
// with the line of its key.
func (c *Config) loadFile(path string) (given map[string]int, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config file: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil // an empty file: the defaults
		}
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		if err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
		if !emptyDoc(&more) { // a "---" at the end is no second document
			return nil, fmt.Errorf("config file %s: line %d: a second YAML document; the settings are one mapping", path, more.Line)
		}
	}
	if emptyDoc(&doc) {
		return nil, nil // only comments
	}
	root := doc.Content[0]
	if root.Kind != yaml.MappingNode {
		return nil, fmt.Errorf("config file %s: line %d: want a mapping of settings (key: value)", path, root.Line)
	}
	pairs, err := settingPairs(root)
	if err != nil {
		return nil, fmt.Errorf("config file %s: %w", path, err)
	}
	fields := map[string]reflect.Value{}
	v := reflect.ValueOf(c).Elem()
	for i := range v.NumField() {
		if name, _, _ := strings.Cut(v.Type().Field(i).Tag.Get("yaml"), ","); name != "" && name != "-" {
			fields[name] = v.Field(i)
		}
	}
	seen := map[string]settingPair{}
	for _, kv := range pairs {
		k, val := kv.k, kv.v
		if val.Kind == yaml.AliasNode {
			val = val.Alias
		}
		bad := func(format string, args ...any) error {
			return &SettingError{File: path, Line: k.Line, Setting: k.Value, Reason: fmt.Sprintf(format, args...)}
		}
		f, ok := fields[k.Value]
		if !ok {
			if key := strings.ReplaceAll(strings.TrimLeft(k.Value, "-"), "-", "_"); fields[key].IsValid() {
				// The flag's spelling (health-path, or -health-path).
				return nil, bad("no such setting; the file writes it %s", key)
			}
			return nil, bad("no such setting")
		}
		if first, dup := seen[k.Value]; dup && !first.merged {
			return nil, bad("given again (first on line %d)", first.k.Line)
		}
		seen[k.Value] = kv
		if val.Kind == yaml.ScalarNode && val.ShortTag() == "!!null" {
			// The decoder would leave the default in place, unseen: ""
			// (admin_listen: "", to turn the admin API off) is a value.
			return nil, bad("has no value; write one (\"\" for an empty string), or leave the key out for the default")
		}
		if val.Kind == yaml.ScalarNode {
			switch {
			case f.Type() == reflect.TypeFor[time.Duration]():
				d, err := time.ParseDuration(val.Value)
				if err != nil {
					return nil, bad("want a duration such as 500ms, 2s or 1m; got %q", val.Value)
				}
				f.SetInt(int64(d)) // a bare 0 too, which the decoder refuses
				continue
			case (f.CanInt() || f.Kind() == reflect.Float64) && val.Style&(yaml.DoubleQuotedStyle|yaml.SingleQuotedStyle) != 0 && isNumber(val.Value):
				return nil, bad("want a number; got the quoted string %s: write it without quotes", strconv.Quote(val.Value))
			case f.CanInt() && val.ShortTag() != "!!int" && !wholeFloat(val):
				return nil, bad("want a whole number; got %q", val.Value)
			case f.Kind() == reflect.Float64 && val.ShortTag() != "!!int" && val.ShortTag() != "!!float":
				return nil, bad("want a number; got %q", val.Value)
			case f.Kind() == reflect.Slice:
				return nil, bad("want a list, one \"- %s\" line per item or [%s]; got the single value %q", val.Value, val.Value, val.Value)
			}
		}
		if err := val.Decode(f.Addr().Interface()); err != nil {
			var te *yaml.TypeError
			if errors.As(err, &te) && len(te.Errors) > 0 {
				msg := te.Errors[0]
				if strings.HasPrefix(msg, "line ") { // bad gives the line already
					_, msg, _ = strings.Cut(msg, ": ")
				}
				return nil, bad("%s", msg)
			}
			return nil, bad("%v", err)
		}
	}
	given = make(map[string]int, len(seen))
	for k, kv := range seen {
		given[k] = kv.k.Line
	}
	return given, nil
}

// isNumber reports whether s reads as a number, as YAML would read it
// unquoted.
func isNumber(s string) bool {
	_, err := strconv.ParseFloat(s, 64)
	return err == nil
}

// emptyDoc reports whether a decoded YAML document holds nothing: no node,
// or a null (a file of comments, a "---" at the end).
func emptyDoc(doc *yaml.Node) bool {
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return doc.Kind == 0 || doc.Kind == yaml.DocumentNode
	}
	n := doc.Content[0]
	return n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null"
}

// settingPairs returns the key and value nodes of the mapping m, with the
// mappings merged into it by "<<" (YAML's merge key) first: the keys m
// gives itself come after, so they win.
func settingPairs(m *yaml.Node) ([]settingPair, error) {
	var merged, own []settingPair
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		if k.Value != "<<" || k.ShortTag() != "!!merge" {
			own = append(own, settingPair{k: k, v: v})
			continue
		}
		sources := []*yaml.Node{v}
		if v.Kind == yaml.SequenceNode {
			sources = v.Content
		}
		// The first mapping of a list wins (YAML's merge key type): the
		// last one merged is the one kept, so the list goes in reverse.
		for i := len(sources) - 1; i >= 0; i-- {
			src := sources[i]
			if src.Kind == yaml.AliasNode {
				src = src.Alias
			}
			if src.Kind != yaml.MappingNode {
				return nil, fmt.Errorf("line %d: << wants a mapping, or a list of them", k.Line)
			}
			ps, err := settingPairs(src)
			if err != nil {
				return nil, err
			}
			for _, p := range ps {
				p.merged = true
				merged = append(merged, p)
			}
		}
	}
	return append(merged, own...), nil
}

// settingPair is a key and its value; merged when it came through "<<",
// so that the mapping's own key may replace it.
type settingPair struct {
	k, v   *yaml.Node
	merged bool
}

// wholeFloat reports whether a YAML float is a whole number (1e9), which
// an integer setting takes as the YAML decoder does.
func wholeFloat(n *yaml.Node) bool {
	if n.ShortTag() != "!!float" {
		return false
	}
	f, err := strconv.ParseFloat(strings.ReplaceAll(n.Value, "_", ""), 64)
	return err == nil && f == math.Trunc(f) && math.Abs(f) < 1<<62
}

// Parse builds the configuration from defaults, then the file named by
// -config, then the other flags in args, and validates the result. Every
// error is also printed to output, prefixed with name (flag errors with
// the usage); the caller should exit with status 2. It returns
// flag.ErrHelp when -h or -help was asked for.
func Parse(name string, args []string, output io.Writer) (Config, string, error) {
	// First pass: find -config, and reject unknown flags before reading
	// any file. The flag package prints its own errors.
	probe := Default()
	fs := newFlagSet(name, &probe, output)
	var path string
	fs.StringVar(&path, "config", "", "YAML `FILE` with settings; flags win over it")
	if err := fs.Parse(args); err != nil {
		return Config{}, "", err
	}
	c, err := parse(name, args, fs, path)
	if err != nil {
		fmt.Fprintf(output, "%s: %v\n", name, err)
		return Config{}, path, err
	}
	return c, path, nil
}

func parse(name string, args []string, fs *flag.FlagSet, path string) (Config, error) {
	if fs.NArg() > 0 {
		// "-local-workers false": the flag package reads a true/false
		// flag's value only after '=', and stops at the word after it.
		if a, i := fs.Arg(0), len(args)-fs.NArg()-1; (a == "true" || a == "false") && i >= 0 && strings.HasPrefix(args[i], "-") {
			return Config{}, fmt.Errorf("unexpected argument %q: a true/false flag takes its value after '=', as in %s=%s", a, args[i], a)
		}
		return Config{}, fmt.Errorf("unexpected argument %q (settings are flags, e.g. -workers 4)", fs.Arg(0))
	}
	c := Default()
	var given map[string]int
	if path != "" {
		var err error
		if given, err = c.loadFile(path); err != nil {
			return Config{}, err
		}
	}
	if err := finish(name, args, &c, path, given); err != nil {
		return Config{}, err
	}
	return c, nil
}

// finish applies the flags over c and validates the result. An error is
// blamed on the file at path, and the line given has for it, when the
// file gave the setting and no flag replaced it.
func finish(name string, args []string, c *Config, path string, given map[string]int) error {
	fs := newFlagSet(name, c, io.Discard)
	fs.String("config", "", "")
	if err := fs.Parse(args); err != nil {
		return err
	}
	_, inFile := given["admin_listen"]
	c.AdminListenSet = inFile || flagSet(fs, "admin_listen")
	if err := c.Validate(); err != nil {
		var se *SettingError
		if errors.As(err, &se) && given[se.Setting] > 0 && !flagSet(fs, se.Setting) {
			se.File, se.Line = path, given[se.Setting]
		}
		return err
	}
	return nil
}

// Overridden returns the names of the settings that the file given
// with -config in args sets to one value and a flag in args to another:
// the flag's is the one in force, so an edit of the file's does nothing,
// which a reload says. Nil when args give no file, or it cannot be read.
func Overridden(name string, args []string) []string {
	flags := Default()
	fs := newFlagSet(name, &flags, io.Discard)
	var path string
	fs.StringVar(&path, "config", "", "")
	if fs.Parse(args) != nil || path == "" {
		return nil
	}
	file := Default()
	given, err := file.loadFile(path)
	if err != nil {
		return nil
	}
	var names []string
	fv, gv := reflect.ValueOf(file), reflect.ValueOf(flags)
	for i := range fv.NumField() {
		key, _, _ := strings.Cut(fv.Type().Field(i).Tag.Get("yaml"), ",")
		if given[key] > 0 && flagSet(fs, key) && !reflect.DeepEqual(fv.Field(i).Interface(), gv.Field(i).Interface()) {
			names = append(names, key)
		}
	}
	return names
}

// flagSet reports whether the flag of setting was given.
func flagSet(fs *flag.FlagSet, setting string) bool {
	name := strings.ReplaceAll(setting, "_", "-")
	if setting == "upstreams" {
		name = "upstream" // repeated, one upstream each
	}
	found := false
	fs.Visit(func(f *flag.Flag) {
		if f.Name == name {
			found = true
		}
	})
	return found
}

func newFlagSet(name string, c *Config, output io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(output)
	fs.Usage = func() {
		fmt.Fprintf(output, "usage: %[1]s %-20[2]s run the cluster\n"+
			"       %[1]s %-20[3]s list the workers of a running balancer\n"+
			"       %[1]s %-20[4]s run the built-in demo backend (what each worker runs)\n\n"+
			"flags (each also a key of the -config file, with _ for -):\n", name, "[flags]", "status [-addr ADDR]", "backend")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Listen, "listen", c.Listen, "public listen `ADDR`")
	fs.IntVar(&c.Workers, "workers", c.Workers, "worker processes, 0 = one per CPU")
	fs.StringVar(&c.Cmd, "cmd", c.Cmd, "worker command `\"PROGRAM ARGS\"` (run by /bin/sh; it must listen on $PORT); empty = built-in backend")
	fs.StringVar(&c.Policy, "policy", c.Policy, "worker selection: "+strings.Join(Policies, "|"))
	fs.StringVar(&c.Engine, "engine", c.Engine, "proxy engine: "+strings.Join(Engines, "|"))
	fs.StringVar(&c.StatsPath, "stats-path", c.StatsPath, "`PATH` of the JSON stats on the listen address")
	fs.StringVar(&c.MetricsPath, "metrics-path", c.MetricsPath, "`PATH` of the Prometheus metrics on the listen address; empty = none")
	fs.StringVar(&c.LivezPath, "livez-path", c.LivezPath, "liveness probe `PATH`; empty = none")
	fs.StringVar(&c.ReadyzPath, "readyz-path", c.ReadyzPath, "readiness probe `PATH` (200 while ready-min-workers are up); empty = none")
	fs.IntVar(&c.ReadyMinWorkers, "ready-min-workers", c.ReadyMinWorkers, "workers that must be up for the readiness probe to pass")
	fromFlags := false
	fs.Func("upstream", "a backend `HOST:PORT` the balancer does not start; repeat for more", func(v string) error {
		if !fromFlags {
			// Flags win over the file: the first -upstream replaces
			// the file's list rather than adding to it.
			c.Upstreams, fromFlags = nil, true
		}
		c.Upstreams = append(c.Upstreams, v)
		return nil
	})
	fs.BoolVar(&c.LocalWorkers, "local-workers", c.LocalWorkers, "run worker processes; false = only -upstream backends")
	fs.StringVar(&c.HealthPath, "health-path", c.HealthPath, "health check `PATH`, or \"tcp\"; empty = /health for the built-in backend, for -cmd an OPTIONS * that any answer passes")
	fs.DurationVar(&c.HealthInterval, "health-interval", c.HealthInterval, "time between health checks")
	fs.DurationVar(&c.HealthTimeout, "health-timeout", c.HealthTimeout, "timeout of one health check")
	fs.IntVar(&c.HealthRise, "health-rise", c.HealthRise, "passed checks in a row that mark a worker up")
	fs.IntVar(&c.HealthFall, "health-fall", c.HealthFall, "failed checks in a row that mark a worker down")
	fs.DurationVar(&c.RestartBackoff, "restart-backoff", c.RestartBackoff, "first wait before restarting a dead worker")
	fs.Float64Var(&c.RestartBackoffFactor, "restart-backoff-factor", c.RestartBackoffFactor, "backoff multiplier per crash")
	fs.DurationVar(&c.RestartBackoffMax, "restart-backoff-max", c.RestartBackoffMax, "longest wait before a restart")
	fs.DurationVar(&c.RestartBackoffReset, "restart-backoff-reset", c.RestartBackoffReset, "time up after which the backoff starts over")
	fs.DurationVar(&c.UpstreamTimeout, "upstream-timeout", c.UpstreamTimeout, "wait for a worker's response headers before answering 504")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "time in-flight requests get after a stop signal")
	fs.DurationVar(&c.WorkerGrace, "worker-grace", c.WorkerGrace, "time between SIGTERM and SIGKILL for a worker")
	fs.DurationVar(&c.ReadHeaderTimeout, "read-header-timeout", c.ReadHeaderTimeout, "time a client has to send its request header (at most 10s)")
	fs.DurationVar(&c.BodyTimeout, "body-timeout", c.BodyTimeout, "a request body that stalls this long is cut off with 408 (fasthttp engine: the whole body)")
	fs.DurationVar(&c.SendTimeout, "send-timeout", c.SendTimeout, "a client that takes none of the answer's bytes for this long is cut off")
	fs.DurationVar(&c.IdleTimeout, "idle-timeout", c.IdleTimeout, "idle keep-alive client connections are closed after this")
	fs.IntVar(&c.MaxHeaderBytes, "max-header-bytes", c.MaxHeaderBytes, "largest request header block; larger gets 431")
	fs.IntVar(&c.MaxConns, "max-conns", c.MaxConns, "client connections open at once; more wait in the listen queue; 0 = from the open-file limit (half of what is left after 64, and 4 per worker)")
	fs.IntVar(&c.MaxRetries, "max-retries", c.MaxRetries, "retries of a request on other workers; -1 = workers - 1")
	fs.IntVar(&c.WorkerMaxConns, "worker-max-conns", c.WorkerMaxConns, "requests at each worker at once; more wait in the balancer, in order, up to upstream-timeout (8 suits a CPU-bound Node app); 0 = no bound")
	fs.Int64Var(&c.RetryBufferBytes, "retry-buffer-bytes", c.RetryBufferBytes, "request bodies up to this size are buffered for replay; 0 = none")
	fs.Int64Var(&c.MaxResponseBytes, "max-response-bytes", c.MaxResponseBytes, "fasthttp engine: a worker's answer with a larger body gets 502 (the engine holds answers whole in memory)")
	fs.DurationVar(&c.MinUptime, "min-uptime", c.MinUptime, "a worker that exits sooner had an unstable start")
	fs.IntVar(&c.MaxRestarts, "max-restarts", c.MaxRestarts, "restarts after unstable starts, in a row, before a worker is held in backoff; 0 = never")
	fs.DurationVar(&c.StartTimeout, "start-timeout", c.StartTimeout, "time a new worker has to pass its first health check")
	fs.DurationVar(&c.DrainTimeout, "drain-timeout", c.DrainTimeout, "wait for in-flight requests of a worker being replaced or removed")
	fs.Int64Var(&c.MaxRequests, "max-requests", c.MaxRequests, "replace a worker after this many requests; 0 = never")
	fs.Int64Var(&c.MaxRequestsJitter, "max-requests-jitter", c.MaxRequestsJitter, "random extra requests added to max-requests per worker")
	fs.Int64Var(&c.MaxMemory, "max-memory", c.MaxMemory, "replace a worker whose RSS passes this many bytes; 0 = never")
	fs.StringVar(&c.AdminListen, "admin-listen", c.AdminListen, "admin API `ADDR` (loopback); empty = off")
	fs.StringVar(&c.AdminToken, "admin-token", c.AdminToken, "bearer `TOKEN` the admin API asks for; empty = none")
	fs.StringVar(&c.LogLevel, "log-level", c.LogLevel, "debug|info|warn|error")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "text|json, for the log and the workers' output")
	fs.BoolVar(&c.AccessLog, "access-log", c.AccessLog, "log one line per proxied request")
	return fs
}
