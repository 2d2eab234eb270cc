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
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/internal/asyncout"
	"github.com/clusterlb/clusterlb/internal/limits"
	"github.com/clusterlb/clusterlb/pkg/admin"
	"github.com/clusterlb/clusterlb/pkg/cluster"
	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/cpus"
	"github.com/clusterlb/clusterlb/pkg/demo"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/clusterlb/clusterlb/pkg/stats"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "backend" {
		// Worker mode: the balancer re-executes itself as "balancer
		// backend", the way cluster.fork() re-runs the same script.
		os.Exit(demo.Main(os.Args[2:]))
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
	timeout := fs.Duration("timeout", 10*time.Second, "give up after this long")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(os.Stderr, "balancer status: unexpected argument %q (give the address with -addr)\n", fs.Arg(0))
		return 2
	}
	url := *addr
	if !strings.Contains(url, "://") {
		if strings.HasPrefix(url, ":") {
			url = "127.0.0.1" + url
		}
		url = "http://" + url + *path
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	snap, err := stats.Fetch(ctx, url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "balancer status:", err, statusHint(err))
		return 1
	}
	stats.WriteTable(os.Stdout, snap, time.Now())
	return 0
}

// statusHint says, after a fetch of the stats that timed out, where a
// busy balancer still answers: at its max_conns the public address holds
// new connections back, the admin API does not.
func statusHint(err error) string {
	if !errors.Is(err, context.DeadlineExceeded) {
		return ""
	}
	return "(a balancer at its max_conns holds new connections back on its public address: ask its admin API, -addr 127.0.0.1:9090)"
}

func run(args []string) int {
	cfg, _, err := config.Parse("balancer", args, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		return 2 // Parse printed why
	}
	// The log and the workers' output go out through queues, so that an
	// output that stalls (a terminal paused with Ctrl-S, a pipe nobody
	// reads) drops lines rather than stall requests, restarts and the
	// stop; what is queued is written out on the way out, for a while.
	// Outputs that are one file (a terminal, 2>&1) share one queue, which
	// keeps their lines in order.
	stderr := asyncout.New(os.Stderr, outputQueue, dropNotice(cfg, "log output stalled: lines dropped"))
	stdout := stderr
	if !sameFile(os.Stdout, os.Stderr) {
		stdout = asyncout.New(os.Stdout, outputQueue, dropNotice(cfg, "output stalled: workers' lines dropped"))
	}
	defer asyncout.Close(outputFlush, stdout, stderr)
	logger := newLogger(cfg.LogLevel, cfg.LogFormat, stderr)
	workerOut := cluster.WorkerOutput(cfg.LogFormat, logger, stdout, stderr)
	// First of all: a signal that comes while the workers start must be
	// handled, not take its default action (exit, or stop the process).
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU)
	// A log line written to a pipe whose reader is gone (a "| head", a
	// log shipper that restarted) must fail with EPIPE, not end the
	// balancer with its workers: that is Go's default on stdout and
	// stderr unless SIGPIPE is asked for. Nothing reads the channel.
	// (Not signal.Ignore: an ignored signal stays ignored in the workers
	// across exec.)
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)

	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		fmt.Fprintf(stderr, "balancer: listen %s: %v\n", cfg.Listen, err)
		return listenExit(err)
	}
	var adminLn net.Listener
	if cfg.AdminListen != "" {
		adminLn, err = net.Listen("tcp", cfg.AdminListen)
		switch {
		case err == nil:
		case !cfg.AdminListenSet && errors.Is(err, syscall.EADDRINUSE):
			// Not asked for: the default port is a common one (a
			// Prometheus server's), and "go run ./balancer" must start.
			logger.Warn("admin API off: its default address is taken; set -admin-listen to another address", "admin_listen", cfg.AdminListen, "err", err)
		default:
			ln.Close()
			fmt.Fprintf(stderr, "balancer: admin_listen %s: %v (set -admin-listen to another address, or \"\" to turn the admin API off)\n", cfg.AdminListen, err)
			return listenExit(err)
		}
	}
	spec, err := cluster.WorkerSpec(cfg, logger, workerOut)
	if err != nil {
		fmt.Fprintln(stderr, "balancer:", err)
		return 1
	}

	started := time.Now()
	p := pool.New(pool.NewSelector(cfg.Policy))
	p.SetMaxInFlight(cfg.WorkerMaxConns)
	sup := supervisor.New(spec, p)
	statsHandler := stats.Handler(p, started)
	metricsHandler := stats.Metrics(p, started)
	var stopping atomic.Bool
	own := cluster.NewOwnPaths(cfg, p, statsHandler, metricsHandler, &stopping)
	front := cluster.NewFrontend(cfg, p, cluster.ProxyOptions(cfg, logger), own, logger)

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

	ctl := cluster.NewController(sup, args, cfg, logger, workerOut)
	adminCtx, stopAdmin := context.WithCancel(context.Background())
	adminDone := make(chan error, 1)
	if adminLn != nil {
		h := admin.Handler(ctl, admin.Options{Token: cfg.AdminToken, Stats: statsHandler, Metrics: metricsHandler, Log: logger})
		go func() { adminDone <- admin.Serve(adminCtx, adminLn, h) }()
	} else {
		adminDone <- nil
	}

	maxConns, fits := cluster.MaxConns(cfg)
	serveDone := make(chan error, 1)
	go func() { serveDone <- front.Serve(cluster.GuardListener(ln, cfg, maxConns, logger, p)) }()
	adminAddr := "off"
	if adminLn != nil {
		adminAddr = adminLn.Addr().String()
	}
	logger.Info("balancer listening", "pid", os.Getpid(), "listen", ln.Addr().String(), "workers", workers, "policy", cfg.Policy, "engine", cfg.Engine,
		"stats", cfg.StatsPath, "admin", adminAddr, "max_conns", maxConns)
	if !fits {
		logger.Warn("max_conns is past what the open-file limit allows: the balancer may run out of descriptors before it is reached (see ulimit -n)",
			"max_conns", maxConns, "open_files", limits.OpenFiles())
	}

	// One goroutine carries out the signals' operations, in the order
	// they came (a goroutine each would race for the supervisor, and a
	// SIGTTOU sent after a SIGTTIN could run first).
	ops := make(chan os.Signal, 16)
	go func() {
		for sig := range ops {
			switch sig {
			case syscall.SIGHUP:
				logFailure(logger, &stopping, "reload failed", ctl.ReloadWait(supCtx))
			case syscall.SIGTTIN:
				logFailure(logger, &stopping, "scale failed", ctl.ScaleBy(supCtx, +1))
			case syscall.SIGTTOU:
				logFailure(logger, &stopping, "scale failed", ctl.ScaleBy(supCtx, -1))
			}
		}
	}()
	defer close(ops)

	code := 0
wait:
	for {
		select {
		case sig := <-sigs:
			switch sig {
			case syscall.SIGHUP, syscall.SIGTTIN, syscall.SIGTTOU:
				select {
				case ops <- sig:
				default:
					logger.Warn("signal ignored: too many operations queued", "signal", sig.String())
				}
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
	// workers. A second stop signal cuts both waits short: connections
	// are closed, and the workers killed rather than given their grace.
	stopping.Store(true)
	p.StopWaits() // no worker is coming for them now
	ctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownGrace)
	stopped := make(chan struct{})
	go func() {
		for {
			select {
			case sig := <-sigs:
				if sig == syscall.SIGINT || sig == syscall.SIGTERM {
					logger.Warn("second signal: closing connections and killing the workers now", "signal", sig.String())
					cancel()
					sup.Hurry()
					return
				}
			case <-stopped:
				return
			}
		}
	}()
	stopAdmin()
	if err := front.Shutdown(ctx); err != nil {
		logger.Warn("in-flight requests cut off", "err", err)
		front.Close()
	}
	cancel()
	front.CloseIdleConnections()
	stopWorkers()
	<-supDone
	close(stopped)
	<-adminDone
	logger.Info("stopped")
	return code
}

// outputQueue bounds the bytes of log and worker output held for an
// output that takes them slower than they come; outputFlush is how long
// the balancer waits on its way out for the output to take what is held.
const (
	outputQueue = 1 << 20
	outputFlush = 2 * time.Second
)

// dropNotice is the log line, in cfg's log format, that tells how many
// lines an output that stalled had dropped.
func dropNotice(cfg config.Config, msg string) func(lost int64) []byte {
	return func(lost int64) []byte {
		var b bytes.Buffer
		newLogger(cfg.LogLevel, cfg.LogFormat, &b).Warn(msg, "lines", lost)
		return b.Bytes()
	}
}

// sameFile reports whether a and b are one file (a terminal, or a pipe
// given as both, 2>&1).
func sameFile(a, b *os.File) bool {
	ai, err := a.Stat()
	if err != nil {
		return false
	}
	bi, err := b.Stat()
	return err == nil && os.SameFile(ai, bi)
}

func newLogger(level, format string, out io.Writer) *slog.Logger {
	var l slog.Level
	l.UnmarshalText([]byte(level))
	opts := &slog.HandlerOptions{Level: l}
	if format == "json" {
		// A duration as the text log writes it ("30s"); slog's JSON
		// default is a count of nanoseconds.
		opts.ReplaceAttr = func(_ []string, a slog.Attr) slog.Attr {
			if a.Value.Kind() == slog.KindDuration {
				a.Value = slog.StringValue(a.Value.Duration().String())
			}
			return a
		}
		return slog.New(slog.NewJSONHandler(out, opts))
	}
	return slog.New(slog.NewTextHandler(out, opts))
}

// listenExit is the exit status for a failure to listen: 2 when the
// address cannot be one of this machine's (a host that does not exist,
// or not a local address), a setting to correct; 1 when the machine
// refused it (the port taken, or privileged).
func listenExit(err error) int {
	var dns *net.DNSError
	if (errors.As(err, &dns) && dns.IsNotFound) || errors.Is(err, syscall.EADDRNOTAVAIL) {
		return 2
	}
	return 1 // a lookup that failed for now (a resolver down) too: worth a retry
}

// logFailure logs err, if any, as msg: a signal's operation has no one
// else to tell. An error, but a warning when the operation was refused
// (a count out of bounds), and information when the balancer's stop cut
// it short.
func logFailure(logger *slog.Logger, stopping *atomic.Bool, msg string, err error) {
	switch {
	case err == nil:
	case stopping.Load():
		logger.Info(msg+": cut short by the stop", "err", err)
	case errors.Is(err, supervisor.ErrBadCount):
		logger.Warn(msg, "err", err)
	default:
		logger.Error(msg, "err", err)
	}
}
