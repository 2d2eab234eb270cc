// Command balancer runs a cluster of worker processes, one per core by
// default, behind one HTTP listener: the Go answer to Node's cluster
// module.
//
//	balancer [flags]          run the cluster (see -h)
//	balancer status [-addr A] list the workers of a running balancer, like pm2 list
//	balancer backend          run the built-in demo backend (what each worker runs)
//
// Signals: SIGINT/SIGTERM stop gracefully, SIGHUP reloads the workers one
// by one (reading the -config file again), SIGTTIN adds a worker and
// SIGTTOU removes one.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/pkg/admin"
	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/cpus"
	"github.com/clusterlb/clusterlb/pkg/demo"
	"github.com/clusterlb/clusterlb/pkg/guard"
	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/clusterlb/clusterlb/pkg/proxy"
	"github.com/clusterlb/clusterlb/pkg/stats"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		// Worker mode: the balancer re-executes itself as "balancer
		// backend", the way cluster.fork() re-runs the same script.
		os.Exit(demo.Main())
	}
	if len(os.Args) > 1 && os.Args[1] == "status" {
		os.Exit(runStatus(os.Args[2:]))
	}
	os.Exit(run(os.Args[1:]))
}

// runStatus prints the workers of a running balancer as a table.
func runStatus(args []string) int {
	fs := flag.NewFlagSet("balancer status", flag.ContinueOnError)
	addr := fs.String("addr", "127.0.0.1:8080", "the balancer's listen `ADDR`, or a full stats URL")
	path := fs.String("stats-path", "/stats", "stats `PATH` on that address")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	url := *addr
	if !strings.Contains(url, "://") {
		if strings.HasPrefix(url, ":") {
			url = "127.0.0.1" + url
		}
		url = "http://" + url + *path
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	snap, err := stats.Fetch(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancer status:", err)
		return 1
	}
	stats.WriteTable(os.Stdout, snap, time.Now())
	return 0
}

func run(args []string) int {
	cfg, _, err := config.Parse("balancer", args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // Parse printed why
	}
	logger := newLogger(cfg.LogLevel, cfg.LogFormat)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "balancer: listen %s: %v\n", cfg.Listen, err)
		return 1
	}
	var adminLn net.Listener
	if cfg.AdminListen != "" {
		if adminLn, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			ln.Close()
			fmt.Fprintf(os.Stderr, "balancer: admin_listen %s: %v (set -admin-listen to another address, or \"\" to turn the admin API off)\n", cfg.AdminListen, err)
			return 1
		}
	}
	spec, err := workerSpec(cfg, logger)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancer:", err)
		return 1
	}

	started := time.Now()
	p := pool.New(pool.NewSelector(cfg.Policy))
	sup := supervisor.New(spec, p)
	popts := proxy.Options{
		UpstreamTimeout:  cfg.UpstreamTimeout,
		MaxRetries:       proxyRetries(cfg.MaxRetries),
		RetryBufferBytes: cfg.RetryBufferBytes,
		Log:              logger,
	}
	if cfg.AccessLog {
		popts.AccessLog = logger
	}
	statsHandler := stats.Handler(p, started)
	metricsHandler := stats.Metrics(p, started)
	var stopping atomic.Bool
	own := ownPathsFor(cfg, p, statsHandler, metricsHandler, &stopping)
	front := newFrontend(cfg, p, popts, own, logger)

	workers := cfg.WorkerCount()
	if cfg.Workers == 0 {
		if lim, src, ok := cpus.Limit(os.DirFS("/")); ok {
			logger.Info("worker count follows the CPU limit", "cpus", lim, "source", src, "workers", workers)
		}
	}
	if !cfg.LocalWorkers {
		workers = 0
	}
	supCtx, stopWorkers := context.WithCancel(context.Background())
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(supCtx, workers) }()

	ctl := &controller{sup: sup, args: args, cfg: cfg, log: logger}
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	if adminLn != nil {
		h := admin.Handler(ctl, admin.Options{Token: cfg.AdminToken, Stats: statsHandler, Metrics: metricsHandler, Log: logger})
		go func() { adminDone <- admin.Serve(adminCtx, adminLn, h) }()
	} else {
		adminDone <- nil
	}

	serveDone := make(chan error, 1)
	go func() { serveDone <- front.serve(guard.NewListener(ln, cfg.MaxHeaderBytes)) }()
	logger.Info("balancer listening", "pid", os.Getpid(), "listen", ln.Addr().String(), "workers", workers, "policy", cfg.Policy, "engine", cfg.Engine,
		"stats", cfg.StatsPath, "admin", cfg.AdminListen)

	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	code := 0
wait:
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP:
				go ctl.reload(supCtx, true)
			case syscall.SIGTTIN:
				go ctl.scaleBy(supCtx, +1)
			case syscall.SIGTTOU:
				go ctl.scaleBy(supCtx, -1)
			default:
				logger.Info("stopping", "signal", sig.String(), "grace", cfg.ShutdownGrace)
				break wait
			}
		case err := <-serveDone:
			logger.Error("serve", "err", err)
			code = 1
			break wait
		}
	}

	// Stop accepting, let in-flight requests finish, then stop the
	// workers. A second stop signal cuts the wait short.
	stopping.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGINT || sig == syscall.SIGTERM {
					logger.Warn("second signal: closing connections now", "signal", sig.String())
					cancel()
					return
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	stopAdmin()
	if err := front.shutdown(ctx); err != nil {
		logger.Warn("in-flight requests cut off", "err", err)
		front.close()
	}
	cancel()
	front.closeIdle()
	stopWorkers()
	<-supDone
	<-adminDone
	logger.Info("stopped")
	return code
}

// frontend is the public listener's server and proxy engine.
type frontend struct {
	serve     func(net.Listener) error
	shutdown  func(context.Context) error
	close     func()
	closeIdle func()
}

// ownPaths are the balancer's own paths on the public listener,
// never proxied.
type ownPaths struct {
	mux   *http.ServeMux
	paths []string
}

func ownPathsFor(cfg config.Config, p *pool.Pool, statsHandler, metricsHandler http.Handler, stopping *atomic.Bool) ownPaths {
	o := ownPaths{mux: http.NewServeMux()}
	for _, h := range []struct {
		path string
		h    http.Handler
	}{
		{cfg.StatsPath, statsHandler},
		{cfg.MetricsPath, metricsHandler},
		{cfg.LivezPath, stats.Livez()},
		{cfg.ReadyzPath, stats.Readyz(p, cfg.ReadyMinWorkers, stopping)},
	} {
		if h.path != "" {
			o.mux.Handle(h.path, h.h)
			o.paths = append(o.paths, h.path)
		}
	}
	return o
}

// newFrontend builds the engine named by cfg.Engine, serving the
// balancer's own paths and proxying everything else.
func newFrontend(cfg config.Config, p *pool.Pool, o proxy.Options, own ownPaths, logger *slog.Logger) frontend {
	if cfg.Engine == "fasthttp" {
		fx := proxy.NewFast(p, o)
		srv := fx.Server(proxy.ServerOptions{
			ReadTimeout:    cfg.ReadHeaderTimeout,
			IdleTimeout:    cfg.IdleTimeout,
			MaxHeaderBytes: cfg.MaxHeaderBytes,
		}, own.paths, own.mux)
		return frontend{
			serve:     srv.Serve,
			shutdown:  srv.ShutdownWithContext,
			close:     func() { srv.Shutdown() },
			closeIdle: fx.CloseIdleConnections,
		}
	}
	px := proxy.New(p, o)
	srv := &http.Server{
		Handler: guard.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if slices.Contains(own.paths, r.URL.Path) {
				own.mux.ServeHTTP(w, r)
				return
			}
			px.ServeHTTP(w, r)
		})),
		ReadHeaderTimeout: cfg.ReadHeaderTimeout,
		IdleTimeout:       cfg.IdleTimeout,
		MaxHeaderBytes:    cfg.MaxHeaderBytes,
		ConnContext:       guard.ConnContext,
		ErrorLog:          log.New(debugWriter{logger}, "", 0),
	}
	// HTTP/2 from clients without TLS (h2c with prior knowledge), next to
	// HTTP/1.1; the workers are still spoken to in HTTP/1.1.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return frontend{
		serve:     srv.Serve,
		shutdown:  srv.Shutdown,
		close:     func() { srv.Close() },
		closeIdle: px.CloseIdleConnections,
	}
}

// workerSpec builds the supervisor's spec from the configuration.
func workerSpec(cfg config.Config, logger *slog.Logger) (supervisor.Spec, error) {
	var argv []string
	if cfg.Cmd != "" {
		argv = supervisor.Command(cfg.Cmd)
	} else {
		exe, err := os.Executable()
		if err != nil {
			return supervisor.Spec{}, fmt.Errorf("find own executable for the built-in backend: %w", err)
		}
		argv = []string{exe, "backend"}
	}
	var check health.Checker = health.TCP{}
	if path := cfg.HealthCheck(); path != "" {
		check = health.NewHTTP(path)
	}
	return supervisor.Spec{
		Argv:  argv,
		Grace: cfg.WorkerGrace,
		Backoff: supervisor.Backoff{
			Initial: cfg.RestartBackoff,
			Factor:  cfg.RestartBackoffFactor,
			Max:     cfg.RestartBackoffMax,
			Reset:   cfg.RestartBackoffReset,
		},
		MinUptime:         cfg.MinUptime,
		MaxRestarts:       cfg.MaxRestarts,
		StartTimeout:      cfg.StartTimeout,
		DrainTimeout:      cfg.DrainTimeout,
		MaxRequests:       cfg.MaxRequests,
		MaxRequestsJitter: cfg.MaxRequestsJitter,
		MaxMemory:         uint64(cfg.MaxMemory),
		Remote:            cfg.Upstreams,
		Check:             check,
		Health: health.Options{
			Interval: cfg.HealthInterval,
			Timeout:  cfg.HealthTimeout,
			Rise:     cfg.HealthRise,
			Fall:     cfg.HealthFall,
		},
		Output: workerOutput(cfg.LogFormat, logger),
		Log:    logger,
	}, nil
}

// workerOutput forwards the workers' output: prefixed lines for text,
// log records for json.
func workerOutput(format string, logger *slog.Logger) supervisor.Output {
	if format == "json" {
		return supervisor.LogOutput(logger)
	}
	return supervisor.TextOutput(os.Stdout, os.Stderr)
}

// proxyRetries maps the max_retries setting (-1 auto, 0 none) to
// proxy.Options.MaxRetries (0 auto, negative none).
func proxyRetries(n int) int {
	switch n {
	case -1:
		return 0
	case 0:
		return -1
	}
	return n
}

// controller carries out reloads and scaling, from signals and from the
// admin API.
type controller struct {
	sup  *supervisor.Supervisor
	args []string
	cfg  config.Config // as started; settings that apply only at start come from here
	log  *slog.Logger
}

var _ admin.Controller = (*controller)(nil)

// Reload is the admin API's reload: it fails with ErrBusy while another
// operation runs.
func (c *controller) Reload(ctx context.Context) error { return c.doReload(ctx, false) }

func (c *controller) Scale(ctx context.Context, n int) error { return c.sup.Scale(ctx, n) }

func (c *controller) RestartWorker(ctx context.Context, id int) error {
	return c.sup.RestartWorker(ctx, id)
}

func (c *controller) reload(ctx context.Context, wait bool) {
	if err := c.doReload(ctx, wait); err != nil {
		c.log.Error("reload failed", "err", err)
	}
}

// doReload reads the configuration again (flags still win over the
// file); if it is valid it applies the worker settings and replaces the
// workers one by one. An invalid file leaves everything as it was.
func (c *controller) doReload(ctx context.Context, wait bool) error {
	cfg, _, err := config.Parse("balancer", c.args, io.Discard)
	if err != nil {
		return fmt.Errorf("configuration not reloaded, keeping the running one: %w", err)
	}
	for _, s := range []struct {
		name     string
		old, new any
	}{
		{"listen", c.cfg.Listen, cfg.Listen}, {"policy", c.cfg.Policy, cfg.Policy},
		{"engine", c.cfg.Engine, cfg.Engine}, {"admin_listen", c.cfg.AdminListen, cfg.AdminListen},
		{"upstream_timeout", c.cfg.UpstreamTimeout, cfg.UpstreamTimeout},
	} {
		if s.old != s.new {
			c.log.Warn("setting changed in the file applies at the next start only", "setting", s.name, "running", s.old, "file", s.new)
		}
	}
	spec, err := workerSpec(cfg, c.log)
	if err != nil {
		return err
	}
	if err := c.sup.Configure(ctx, spec); err != nil {
		return err
	}
	if cfg.Workers != c.cfg.Workers {
		// The count in the file changed: follow it before replacing.
		if err := c.scaleTo(ctx, cfg.WorkerCount(), wait); err != nil {
			return err
		}
		c.cfg.Workers = cfg.Workers
	}
	if wait {
		return c.sup.ReloadWait(ctx)
	}
	return c.sup.Reload(ctx)
}

func (c *controller) scaleTo(ctx context.Context, n int, wait bool) error {
	if wait {
		cur, err := c.sup.Workers(ctx)
		if err != nil {
			return err
		}
		return c.sup.ScaleBy(ctx, n-cur)
	}
	return c.sup.Scale(ctx, n)
}

func (c *controller) scaleBy(ctx context.Context, delta int) {
	if err := c.sup.ScaleBy(ctx, delta); err != nil {
		c.log.Error("scale failed", "err", err)
	}
}

func newLogger(level, format string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(os.Stderr, opts))
	}
	return slog.New(slog.NewTextHandler(os.Stderr, opts))
}

// debugWriter sends net/http's own log lines (bad TLS, accept retries) to
// the debug level: a hostile client should not flood the log.
type debugWriter struct{ log *slog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug(string(p))
	return len(p), nil
}
