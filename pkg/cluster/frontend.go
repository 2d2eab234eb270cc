package cluster

import (
	"context"
	"log"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/clusterlb/clusterlb/internal/limits"
	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/guard"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/clusterlb/clusterlb/pkg/proxy"
	"github.com/clusterlb/clusterlb/pkg/stats"
	"github.com/valyala/fasthttp"
)

// Frontend is the public listener's HTTP server with its proxy engine.
type Frontend interface {
	// Serve accepts connections on ln until Shutdown or Close.
	Serve(ln net.Listener) error
	// Shutdown stops accepting and waits for the requests in flight,
	// until ctx ends.
	Shutdown(ctx context.Context) error
	// Close ends the serving at once.
	Close()
	// CloseIdleConnections closes the idle connections to the workers.
	CloseIdleConnections()
}

// OwnPaths are the balancer's own pages on the public listener (stats,
// metrics, liveness, readiness), never proxied.
type OwnPaths struct {
	mux   *http.ServeMux
	paths []string
}

// NewOwnPaths serves the stats and metrics handlers and the liveness and
// readiness checks on the paths cfg names; an empty path turns its page
// off. Readiness fails once stopping is true.
func NewOwnPaths(cfg config.Config, p *pool.Pool, statsHandler, metricsHandler http.Handler, stopping *atomic.Bool) OwnPaths {
	o := OwnPaths{mux: http.NewServeMux()}
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

// GuardListener wraps the public listener in the defences both engines
// serve behind: the bound on client connections, and an accept that
// waits out a shortage of descriptors (guard.Admit); the send timeout for
// clients that stop reading; and the guard's framing check, outermost, as
// the guard must be. fasthttp finds a head's end by CRLF CRLF alone, so
// under it a head ending in a bare LF is refused at once rather than
// waited on until the read timeout.
// maxConns bounds the client connections (see MaxConns; 0: no bound); p,
// if not nil, reports them (pool.Clients).
func GuardListener(ln net.Listener, cfg config.Config, maxConns int, log *slog.Logger, p *pool.Pool) net.Listener {
	var opts []guard.Option
	if cfg.Engine == "fasthttp" {
		opts = append(opts, guard.CRLFHeadEnd())
	}
	admitted := guard.Admit(ln, maxConns, log)
	if p != nil {
		p.SetClients(admitted.Open, int64(maxConns))
	}
	return guard.NewListener(guard.SendTimeout(admitted, cfg.SendTimeout), cfg.MaxHeaderBytes, opts...)
}

// MaxConns is the bound on client connections: cfg.MaxConns, or when it
// is 0 the one the open-file limit allows for cfg's workers
// (limits.MaxConns); fits is false when cfg.MaxConns is past the latter.
func MaxConns(cfg config.Config) (n int, fits bool) {
	workers := len(cfg.Upstreams)
	if cfg.LocalWorkers {
		workers += cfg.WorkerCount()
	}
	allowed := limits.MaxConns(limits.OpenFiles(), workers)
	if cfg.MaxConns > 0 {
		return cfg.MaxConns, cfg.MaxConns <= allowed
	}
	return allowed, true
}

// NewFrontend builds the engine cfg.Engine names, serving own's pages and
// proxying every other request to p's workers.
func NewFrontend(cfg config.Config, p *pool.Pool, o proxy.Options, own OwnPaths, logger *slog.Logger) Frontend {
	if cfg.Engine == "fasthttp" {
		fx := proxy.NewFast(p, o)
		srv := fx.Server(proxy.ServerOptions{
			ReadTimeout:    cfg.ReadHeaderTimeout,
			BodyTimeout:    cfg.BodyTimeout,
			IdleTimeout:    cfg.IdleTimeout,
			MaxHeaderBytes: cfg.MaxHeaderBytes,
		}, own.paths, own.mux)
		f := &fastFrontend{srv: srv, fx: fx, conns: make(map[net.Conn]struct{})}
		srv.ConnState = f.track
		return f
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
		// An OPTIONS * asks the server in general what it allows: the
		// worker's to answer, as the fasthttp engine passes it on, not
		// net/http's own 200 that no worker said.
		DisableGeneralOptionsHandler: true,
	}
	// HTTP/2 from clients without TLS (h2c with prior knowledge), next to
	// HTTP/1.1; the workers are still spoken to in HTTP/1.1.
	srv.Protocols = new(http.Protocols)
	srv.Protocols.SetHTTP1(true)
	srv.Protocols.SetUnencryptedHTTP2(true)
	return &httputilFrontend{srv: srv, px: px}
}

type httputilFrontend struct {
	srv *http.Server
	px  *proxy.Proxy
}

func (f *httputilFrontend) Serve(ln net.Listener) error        { return f.srv.Serve(ln) }
func (f *httputilFrontend) Shutdown(ctx context.Context) error { return f.srv.Shutdown(ctx) }
func (f *httputilFrontend) Close()                             { f.srv.Close() }
func (f *httputilFrontend) CloseIdleConnections()              { f.px.CloseIdleConnections() }

// fastFrontend keeps its own set of client connections: fasthttp's
// Server can only wait for them. Once ShutdownWithContext has given up it
// has forgotten its listener, so a Shutdown after it does nothing, and it
// lets the connections it waited for go on serving keep-alive requests.
// It keeps its listener too: a Shutdown or Close that comes before
// fasthttp's Serve has taken it (a stop signal at start) would otherwise
// find none, and Serve would go on serving.
type fastFrontend struct {
	srv *fasthttp.Server
	fx  *proxy.Fast

	mu      sync.Mutex
	ln      net.Listener
	conns   map[net.Conn]struct{}
	stopped bool // Shutdown or Close ran: Serve serves nothing
	closed  bool // Close ran: a connection accepted now is closed
}

func (f *fastFrontend) Serve(ln net.Listener) error {
	f.mu.Lock()
	if f.stopped {
		f.mu.Unlock()
		ln.Close()
		return http.ErrServerClosed
	}
	f.ln = ln
	f.mu.Unlock()
	return f.srv.Serve(ln)
}

func (f *fastFrontend) Shutdown(ctx context.Context) error {
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	err := f.srv.ShutdownWithContext(ctx)
	f.closeListener()
	return err
}

// closeListener closes the listener Serve was given, which ends a Serve
// that fasthttp's Shutdown did not know of yet. (fasthttp's own close of
// it came first: this one's error says nothing.)
func (f *fastFrontend) closeListener() {
	f.mu.Lock()
	ln := f.ln
	f.mu.Unlock()
	if ln != nil {
		ln.Close()
	}
}

func (f *fastFrontend) CloseIdleConnections() { f.fx.CloseIdleConnections() }

// Close closes the listener and every client connection, in the middle
// of a request or not, as net/http's Server.Close does. Upgraded
// (hijacked) connections are the tunnels', which end with their workers.
func (f *fastFrontend) Close() {
	// fasthttp's own, if Shutdown never ran: a context already done
	// stops it from waiting for the requests in flight.
	f.mu.Lock()
	f.stopped = true
	f.mu.Unlock()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	f.srv.ShutdownWithContext(ctx)
	f.closeListener()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	for c := range f.conns {
		c.Close()
	}
	clear(f.conns)
}

// track is the server's ConnState hook.
func (f *fastFrontend) track(c net.Conn, state fasthttp.ConnState) {
	switch state {
	case fasthttp.StateActive, fasthttp.StateIdle:
		return // twice per request: no lock for these
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch state {
	case fasthttp.StateNew:
		if f.closed {
			c.Close() // accepted as Close ran
			return
		}
		f.conns[c] = struct{}{}
	case fasthttp.StateHijacked, fasthttp.StateClosed:
		delete(f.conns, c)
	}
}

// debugWriter sends net/http's own log lines (bad TLS, accept retries) to
// the debug level: a hostile client should not flood the log.
type debugWriter struct{ log *slog.Logger }

func (d debugWriter) Write(p []byte) (int, error) {
	d.log.Debug(string(p))
	return len(p), nil
}
