package demo

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gofiber/fiber/v2"
	"github.com/valyala/fasthttp"
)

const (
	// DefaultAddr is where a backend listens when PORT is unset: the
	// course's single-process baseline on :8080.
	DefaultAddr = ":8080"

	// DefaultMaxN is the largest ?n= that /operacion-compleja accepts when
	// Config.MaxN is zero: about half a second of one core per request.
	DefaultMaxN int64 = 1_000_000_000

	// DefaultComplejaN is the n of /operacion-compleja without ?n=.
	DefaultComplejaN int64 = 50_000_000

	// SimpleN is the fixed n of /operacion-simple: 0+1+...+9999 = 49995000.
	SimpleN int64 = 10_000

	// ShutdownTimeout bounds how long Run waits for in-flight requests once
	// its context is done.
	ShutdownTimeout = 10 * time.Second

	// DefaultParentPollInterval is the WatchParent interval used when the
	// given one is not positive.
	DefaultParentPollInterval = 250 * time.Millisecond

	// maxSumN is the largest n whose sum 0+...+(n-1) = n(n-1)/2 still fits
	// in an int64 (2^31 * (2^32-1) < 2^63); larger MaxN values are clamped.
	maxSumN int64 = 1 << 32
)

// ErrInvalidWorkerID is wrapped by WorkerID when WORKER_ID is set but is not
// a non-negative integer.
var ErrInvalidWorkerID = errors.New("invalid WORKER_ID")

// Config is what New and Run need to build a backend. The zero value is a
// usable standalone backend on DefaultAddr.
type Config struct {
	// Addr is the TCP address Run listens on; empty means DefaultAddr.
	// New ignores it.
	Addr string

	// WorkerID is reported as "worker" in every JSON answer; 0 means the
	// backend runs alone, not under the balancer.
	WorkerID int

	// MaxN is the largest ?n= accepted by /operacion-compleja (the lower
	// bound is 1). Zero or negative means DefaultMaxN; values above 2^32 are
	// clamped to 2^32 so the int64 sum cannot overflow.
	MaxN int64

	// Exit ends the process after /dead has answered; nil means os.Exit.
	// Tests inject a func that records the code instead.
	Exit func(code int)
}

// opResponse is the answer of both /operacion-* endpoints.
type opResponse struct {
	Operation string `json:"operation"`
	Sum       int64  `json:"sum"`
	PID       int    `json:"pid"`
	Worker    int    `json:"worker"`
}

type deadResponse struct {
	Operation string `json:"operation"`
	PID       int    `json:"pid"`
	Worker    int    `json:"worker"`
}

type healthResponse struct {
	Status string `json:"status"`
	PID    int    `json:"pid"`
	Worker int    `json:"worker"`
}

type errorResponse struct {
	Error string `json:"error"`
}

// backend holds the per-app state behind the handlers; one per New, so two
// apps in one process (as in tests) never share anything.
type backend struct {
	pid      int
	worker   int
	maxN     int64
	defaultN int64
	exit     func(code int)

	// dying holds the connections that carried a /dead answer; the process
	// exits when one of them is closed, i.e. after the answer was flushed.
	mu       sync.Mutex
	dying    map[net.Conn]struct{}
	exitOnce sync.Once
}

// New builds the demo backend app: /operacion-simple, /operacion-compleja,
// /dead and /health, all answering JSON, and {"error":"not found"} with 404
// for any other path. It does not listen; see Run.
func New(cfg Config) *fiber.App {
	b := &backend{
		pid:    os.Getpid(),
		worker: cfg.WorkerID,
		maxN:   cfg.MaxN,
		exit:   cfg.Exit,
		dying:  make(map[net.Conn]struct{}),
	}
	if b.maxN <= 0 {
		b.maxN = DefaultMaxN
	}
	b.maxN = min(b.maxN, maxSumN)
	b.defaultN = min(DefaultComplejaN, b.maxN)
	if b.exit == nil {
		b.exit = os.Exit
	}

	app := fiber.New(fiber.Config{
		DisableStartupMessage: true,
		ErrorHandler:          errorHandler,
	})
	// /dead exits from this hook rather than from a timer: fasthttp calls it
	// with StateClosed only after the response was written and flushed (or
	// the write failed), so the exit never races the write, however loaded
	// the machine is; a fixed delay would.
	// (ctx.Hijack would also run after the response, but fasthttp skips it
	// whenever either side sent "Connection: close".)
	app.Server().ConnState = b.connState

	app.Get("/operacion-simple", b.simple)
	app.Get("/operacion-compleja", b.compleja)
	app.Get("/dead", b.dead)
	app.Get("/health", b.health)
	return app
}

func (b *backend) simple(c *fiber.Ctx) error {
	return c.JSON(opResponse{Operation: "simple", Sum: sumBelow(SimpleN), PID: b.pid, Worker: b.worker})
}

// compleja sums 0+...+(n-1); ?n= overrides DefaultComplejaN within 1..maxN.
// An empty ?n= is a bad value, not a request for the default.
func (b *backend) compleja(c *fiber.Ctx) error {
	n := b.defaultN
	if c.Context().QueryArgs().Has("n") {
		v, err := parseN(c.Query("n"), b.maxN)
		if err != nil {
			return fiber.NewError(fiber.StatusBadRequest, err.Error())
		}
		n = v
	}
	return c.JSON(opResponse{Operation: "compleja", Sum: sumBelow(n), PID: b.pid, Worker: b.worker})
}

// dead answers 200 and then ends the process with code 1. The response asks
// for the connection to be closed, so fasthttp flushes and closes it right
// after this handler and no client (nor the balancer's pool) reuses a
// connection to a process about to die; connState then calls exit.
func (b *backend) dead(c *fiber.Ctx) error {
	c.Context().Response.SetConnectionClose()
	b.mu.Lock()
	b.dying[c.Context().Conn()] = struct{}{}
	b.mu.Unlock()
	return c.JSON(deadResponse{Operation: "dead", PID: b.pid, Worker: b.worker})
}

func (b *backend) health(c *fiber.Ctx) error {
	return c.JSON(healthResponse{Status: "ok", PID: b.pid, Worker: b.worker})
}

// connState is the fasthttp ConnState hook; it exits, once, when a
// connection that answered /dead is gone.
func (b *backend) connState(conn net.Conn, state fasthttp.ConnState) {
	if state != fasthttp.StateClosed && state != fasthttp.StateHijacked {
		return
	}
	b.mu.Lock()
	_, ok := b.dying[conn]
	delete(b.dying, conn)
	b.mu.Unlock()
	if ok {
		b.exitOnce.Do(func() { b.exit(1) })
	}
}

// errorHandler is the one place that turns a handler or routing error into
// a status and a {"error":"..."} body.
func errorHandler(c *fiber.Ctx, err error) error {
	code, msg := fiber.StatusInternalServerError, "internal server error"
	var fe *fiber.Error
	if errors.As(err, &fe) {
		code, msg = fe.Code, fe.Message
		// Fiber's router says "Cannot GET /x"; the API promises plain
		// status words for unknown paths and methods.
		if code == fiber.StatusNotFound || code == fiber.StatusMethodNotAllowed {
			msg = strings.ToLower(http.StatusText(code))
		}
	}
	return c.Status(code).JSON(errorResponse{Error: msg})
}

// parseN parses the ?n= of /operacion-compleja: a base-10 integer in
// 1..maxN. The error names the parameter and the bound, and is shown to the
// client as is.
func parseN(raw string, maxN int64) (int64, error) {
	n, err := strconv.ParseInt(raw, 10, 64)
	if err != nil || n < 1 || n > maxN {
		return 0, fmt.Errorf("query parameter n must be an integer between 1 and %d; got %q", maxN, raw)
	}
	return n, nil
}

// sumBelow returns 0+1+...+(n-1) the slow way. The loop is the CPU work the
// course measures: gc does not rewrite it into n(n-1)/2, and it must stay a
// loop.
func sumBelow(n int64) int64 {
	var sum int64
	for i := int64(0); i < n; i++ {
		sum += i
	}
	return sum
}

// ListenAddr returns where a backend should listen given its environment:
// HOST:PORT when PORT is set and not empty, HOST defaulting to 127.0.0.1
// (a worker under the balancer, reachable only through it; set HOST to
// run it as a remote upstream on another host), else DefaultAddr. getenv
// is usually os.Getenv.
func ListenAddr(getenv func(string) string) string {
	if port := getenv("PORT"); port != "" {
		host := getenv("HOST")
		if host == "" {
			host = "127.0.0.1"
		}
		return net.JoinHostPort(host, port)
	}
	return DefaultAddr
}

// WorkerID reads WORKER_ID from getenv (usually os.Getenv): 0 when unset or
// empty (running alone), else a non-negative integer. An invalid value is an
// error wrapping ErrInvalidWorkerID.
func WorkerID(getenv func(string) string) (int, error) {
	raw := getenv("WORKER_ID")
	if raw == "" {
		return 0, nil
	}
	id, err := strconv.Atoi(raw)
	if err != nil || id < 0 {
		return 0, fmt.Errorf("%w %q: want a non-negative integer", ErrInvalidWorkerID, raw)
	}
	return id, nil
}

// Run listens on cfg.Addr (DefaultAddr when empty), serves New(cfg) until
// ctx is done, then shuts down gracefully, waiting up to ShutdownTimeout for
// in-flight requests, and returns nil. It returns an error naming the
// address when it cannot listen, when serving fails, or when the shutdown
// did not finish in time.
func Run(ctx context.Context, cfg Config) error {
	addr := cfg.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	return serve(ctx, New(cfg), ln)
}

// serve runs app on ln until ctx is done; it owns ln and closes it.
func serve(ctx context.Context, app *fiber.App, ln net.Listener) error {
	defer ln.Close() // after a clean shutdown fasthttp has closed it already
	addr := ln.Addr().String()
	nl := &notifyListener{Listener: ln, accepting: make(chan struct{})}
	errc := make(chan error, 1)
	go func() { errc <- app.Listener(nl) }()

	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", addr, err)
	case <-ctx.Done():
	}
	// fasthttp's Shutdown only closes the listeners that Serve has already
	// registered and returns at once if there are none, after which a late
	// Serve would run forever. Serve registers ln before its first Accept,
	// so wait for that.
	select {
	case <-nl.accepting:
	case err := <-errc:
		if err != nil {
			return fmt.Errorf("serve on %s: %w", addr, err)
		}
		return nil
	}

	shutdownErr := app.ShutdownWithTimeout(ShutdownTimeout)
	serveErr := <-errc // Shutdown closed ln, so Serve returns now
	if shutdownErr != nil {
		return fmt.Errorf("shut down %s: %w", addr, shutdownErr)
	}
	if serveErr != nil {
		return fmt.Errorf("serve on %s: %w", addr, serveErr)
	}
	return nil
}

// notifyListener closes accepting when Accept is first called, which is how
// serve knows fasthttp's Serve has registered the listener.
type notifyListener struct {
	net.Listener
	once      sync.Once
	accepting chan struct{}
}

func (l *notifyListener) Accept() (net.Conn, error) {
	l.once.Do(func() { close(l.accepting) })
	return l.Listener.Accept()
}

// WatchParent calls gone once, and returns, when this process's parent pid
// changes from the one it had when WatchParent was called: the parent died
// and the kernel re-parented us. It polls every interval
// (DefaultParentPollInterval when not positive) and returns without calling
// gone when ctx is done.
//
// Workers run it next to Pdeathsig, because Pdeathsig fires when the parent
// *thread* that forked us exits, not the parent process, and Go may end
// that thread while the balancer lives on (golang/go#27505); polling the
// ppid catches what Pdeathsig misses, whichever way the parent goes.
//
// Call it early: if the parent is already gone when it is called, the new
// parent is recorded and nothing is noticed. A parent pid of 1 is not taken
// to mean orphaned, since the balancer itself may be pid 1 in a container.
func WatchParent(ctx context.Context, interval time.Duration, gone func()) {
	watchParent(ctx, interval, os.Getppid, gone)
}

func watchParent(ctx context.Context, interval time.Duration, getppid func() int, gone func()) {
	if interval <= 0 {
		interval = DefaultParentPollInterval
	}
	parent := getppid()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if getppid() != parent {
				gone()
				return
			}
		}
	}
}

// Main runs the backend as a program: configured from the environment
// (PORT, WORKER_ID), stopped by SIGINT or SIGTERM, and, under the
// balancer (WORKER_ID set), also when its parent goes away: a second guard
// next to Pdeathsig, which can miss the parent's death (golang/go#27505).
// args are the command line's after the program (none are taken: -h
// prints a usage line). It returns the process exit code: 2 for a bad
// environment or an argument, 1 when the server fails. Both cmd/backend
// and the balancer's worker mode call it.
func Main(args []string) int {
	if len(args) > 0 {
		// It takes no flags: its settings are PORT and WORKER_ID, which
		// the balancer sets. A -h must not start a server on :8080.
		fmt.Fprintln(os.Stderr, "usage: backend (no arguments): the demo backend on :8080, or on 127.0.0.1:$PORT when PORT is set; WORKER_ID, when set, names the worker in its answers")
		if args[0] == "-h" || args[0] == "-help" || args[0] == "--help" {
			return 0
		}
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	id, err := WorkerID(os.Getenv)
	if err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		return 2
	}
	if os.Getenv("WORKER_ID") != "" {
		go WatchParent(ctx, DefaultParentPollInterval, cancel)
	}
	if err := Run(ctx, Config{Addr: ListenAddr(os.Getenv), WorkerID: id}); err != nil {
		fmt.Fprintln(os.Stderr, "backend:", err)
		return 1
	}
	return 0
}
