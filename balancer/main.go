// Command balancer runs a cluster of worker processes, one per core by
// default, behind one HTTP listener: the Go answer to Node's cluster
// module.
//
//	balancer [flags]          run the cluster (see -h)
//	balancer backend          run the built-in demo backend (what each worker runs)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/pkg/config"
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
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	cfg, _, err := config.Parse("balancer", args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // Parse printed why
	}
	logger := newLogger(cfg.LogLevel)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		logger.Error("cannot listen", "listen", cfg.Listen, "err", err)
		fmt.Fprintf(os.Stderr, "balancer: listen %s: %v\n", cfg.Listen, err)
		return 1
	}

	argv := []string{}
	if cfg.Cmd != "" {
		argv = supervisor.Command(cfg.Cmd)
	} else {
		exe, err := os.Executable()
		if err != nil {
			fmt.Fprintln(os.Stderr, "balancer: find own executable for the built-in backend:", err)
			return 1
		}
		argv = []string{exe, "backend"}
	}
	var check health.Checker = health.TCP{}
	if path := cfg.HealthCheck(); path != "" {
		check = health.NewHTTP(path)
	}

	started := time.Now()
	p := pool.New(pool.NewSelector(cfg.Policy))
	sup := supervisor.New(supervisor.Spec{
		Argv:  argv,
		Grace: cfg.WorkerGrace,
		Backoff: supervisor.Backoff{
			Initial: cfg.RestartBackoff,
			Factor:  cfg.RestartBackoffFactor,
			Max:     cfg.RestartBackoffMax,
			Reset:   cfg.RestartBackoffReset,
		},
		Check: check,
		Health: health.Options{
			Interval: cfg.HealthInterval,
			Timeout:  cfg.HealthTimeout,
			Rise:     cfg.HealthRise,
			Fall:     cfg.HealthFall,
		},
		Log: logger,
	}, p)
	px := proxy.New(p, proxy.Options{UpstreamTimeout: cfg.UpstreamTimeout, Log: logger})
	sampler := stats.NewSampler()
	statsHandler := stats.Handler(p, sampler, started)

	srv := &http.Server{
		Handler: guard.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == cfg.StatsPath {
				statsHandler.ServeHTTP(w, r)
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

	workers := cfg.WorkerCount()
	supCtx, stopWorkers := context.WithCancel(context.Background())
	supDone := make(chan error, 1)
	go func() { supDone <- sup.Run(supCtx, workers) }()
	samplerCtx, stopSampler := context.WithCancel(context.Background())
	go sampler.Run(samplerCtx, p, time.Second)

	serveDone := make(chan error, 1)
	go func() { serveDone <- srv.Serve(guard.NewListener(ln, cfg.MaxHeaderBytes)) }()
	logger.Info("balancer listening", "listen", ln.Addr().String(), "workers", workers, "policy", cfg.Policy, "stats", cfg.StatsPath)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	code := 0
	select {
	case sig := <-sigs:
		logger.Info("stopping", "signal", sig.String(), "grace", cfg.ShutdownGrace)
	case err := <-serveDone:
		logger.Error("serve", "err", err)
		code = 1
	}

	// Stop accepting, let in-flight requests finish, then stop the
	// workers. A second signal cuts the wait short.
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	go func() {
		select {
		case sig := <-sigs:
			logger.Warn("second signal: closing connections now", "signal", sig.String())
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := srv.Shutdown(ctx); err != nil {
		logger.Warn("in-flight requests cut off", "err", err)
		srv.Close()
	}
	cancel()
	px.CloseIdleConnections()
	stopWorkers()
	<-supDone
	stopSampler()
	logger.Info("stopped")
	return code
}

func newLogger(level string) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: l}))
}

// debugWriter sends net/http's own log lines (bad TLS, accept retries) to
// the debug level: a hostile client should not flood the log.
type debugWriter struct{ log *slog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug(string(p))
	return len(p), nil
}
