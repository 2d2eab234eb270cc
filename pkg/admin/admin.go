package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/clusterlb/clusterlb/pkg/supervisor"
)

// Controller is what the admin API drives; *supervisor.Supervisor
// implements it. Each method returns when the action is done or ctx ends,
// with an error that wraps one of the supervisor's sentinels (ErrBusy,
// ErrNoSuchWorker, ErrBadCount, ErrStopped) or ctx's error where one
// applies.
type Controller interface {
	// Reload replaces every worker, one after the other.
	Reload(ctx context.Context) error
	// Scale sets the number of workers.
	Scale(ctx context.Context, workers int) error
	// RestartWorker drains the worker with that id and replaces it.
	RestartWorker(ctx context.Context, id int) error
}

var _ Controller = (*supervisor.Supervisor)(nil)

// ErrInvalidConfig is what a Controller's Reload wraps when the
// configuration it read again is invalid (a bad value, an unknown key, a
// file that does not parse), and nothing changed: 422, since the
// balancer did not fail, the file it was asked to apply did.
var ErrInvalidConfig = errors.New("configuration not reloaded, keeping the running one")

// Options configure Handler. The zero value is an open API with no stats,
// no log and a 5-minute bound on each control call.
type Options struct {
	// Token, if not empty, is required on every request as
	// "Authorization: Bearer <Token>"; other requests get 401. Empty means
	// no check at all.
	Token string
	// Stats is served at GET /stats; nil answers 404.
	Stats http.Handler
	// Metrics is served at GET /metrics; nil answers 404.
	Metrics http.Handler
	// Log gets one line per control action; nil discards.
	Log *slog.Logger
	// Timeout bounds one control call; zero or negative means 5 minutes.
	Timeout time.Duration
}

// DefaultTimeout bounds a control call when Options.Timeout is zero. A
// rolling reload drains every worker in turn, so it is generous.
const DefaultTimeout = 5 * time.Minute

// StatusClientClosed answers a control call that a Controller ended with
// context.Canceled (nginx's 499). A client that goes away does not cancel
// its call: a reload runs to its end, or to the timeout, whoever asked for
// it, as one asked for by SIGHUP does, instead of being undone because a
// curl was interrupted or had a shorter timeout than a rolling reload.
const StatusClientClosed = 499

// Handler returns the admin API over c, which must not be nil:
//
//	POST /reload                 rolling reload of every worker
//	POST /scale?workers=N        set the worker count (1 <= N <= 1024)
//	POST /workers/{id}/restart   drain and replace one worker
//	GET  /stats                  Options.Stats
//	GET  /debug/runtime          goroutines, open fds, pid
//
// Every answer but /stats is JSON: {"ok":true,"action":...} on success,
// {"ok":false,"error":...} otherwise, including 401, 404 and 405.
func Handler(c Controller, o Options) http.Handler {
	a := &api{c: c, timeout: o.Timeout, log: o.Log}
	if a.timeout <= 0 {
		a.timeout = DefaultTimeout
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	stats := orNotFound(o.Stats, "stats not configured")
	metrics := orNotFound(o.Metrics, "metrics not configured")
	mux := http.NewServeMux()
	mux.HandleFunc("POST /reload", a.reload)
	mux.HandleFunc("POST /scale", a.scale)
	mux.HandleFunc("POST /workers/{id}/restart", a.restart)
	mux.Handle("GET /stats", stats)
	mux.Handle("GET /metrics", metrics)
	mux.HandleFunc("GET /debug/runtime", runtimeInfo)
	// Profiles of the balancer itself, for `go tool pprof
	// http://127.0.0.1:9090/debug/pprof/profile?seconds=10`.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	return authorize(o.Token, refuseBrowsers(o.Token != "", jsonFallback(mux)))
}

// refuseBrowsers turns away what a web page open in a browser on this
// machine could send the API, which listens on loopback and, by
// default, asks for no token: a cross-origin POST (a fetch in "no-cors"
// mode reaches 127.0.0.1 without a preflight), and, unless a token is
// asked for, any request for a host name that is not the loopback's, the
// mark of DNS rebinding (a page whose own name was made to resolve to
// 127.0.0.1 is same-origin to itself, but sends that name as Host). curl,
// pprof and scripts send neither.
func refuseBrowsers(tokenSet bool, next http.Handler) http.Handler {
	cop := http.NewCrossOriginProtection()
	cop.SetDenyHandler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusForbidden, "cross-origin request refused")
	}))
	h := cop.Handler(next)
	if tokenSet {
		return h // a page cannot send the token
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !loopbackHost(r.Host) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("host %q refused: without -admin-token the admin API answers only to localhost, 127.0.0.1 or [::1]", r.Host))
			return
		}
		h.ServeHTTP(w, r)
	})
}

// loopbackHost reports whether a Host header names this machine's
// loopback: localhost or a loopback address, with or without a port. An
// HTTP/1.0 request may send none.
func loopbackHost(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	host = strings.TrimSuffix(host, ".")
	if host == "" || strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(strings.TrimSuffix(strings.TrimPrefix(host, "["), "]"))
	return err == nil && ip.IsLoopback()
}

// api holds what the control handlers share.
type api struct {
	c       Controller
	timeout time.Duration
	log     *slog.Logger
}

// result is the body of a successful control call. Worker is a pointer
// because worker ids may start at 0, which omitempty would drop.
type result struct {
	OK      bool   `json:"ok"`
	Action  string `json:"action"`
	Workers *int   `json:"workers,omitempty"`
	Worker  *int   `json:"worker,omitempty"`
}

func (a *api) reload(w http.ResponseWriter, r *http.Request) {
	a.control(w, r, result{Action: "reload"}, a.c.Reload)
}

func (a *api) scale(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if !q.Has("workers") {
		writeError(w, http.StatusBadRequest, "missing workers: want POST /scale?workers=N")
		return
	}
	if len(q["workers"]) > 1 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("workers given %d times: want one count", len(q["workers"])))
		return
	}
	n, err := strconv.Atoi(q.Get("workers"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("workers %q is not an integer", q.Get("workers")))
		return
	}
	if n < 1 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("workers %d: want at least 1", n))
		return
	}
	a.control(w, r, result{Action: "scale", Workers: &n}, func(ctx context.Context) error {
		return a.c.Scale(ctx, n)
	})
}

func (a *api) restart(w http.ResponseWriter, r *http.Request) {
	// A negative id is left to the controller, which owns the id space
	// and answers ErrNoSuchWorker.
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("worker id %q is not an integer", r.PathValue("id")))
		return
	}
	a.control(w, r, result{Action: "restart", Worker: &id}, func(ctx context.Context) error {
		return a.c.RestartWorker(ctx, id)
	})
}

// control runs one call under the timeout, logs how it ended, and answers
// with res or the mapped error. The call keeps the request's values but
// not its cancellation: it goes on if the client leaves (see
// StatusClientClosed).
func (a *api) control(w http.ResponseWriter, r *http.Request, res result, call func(context.Context) error) {
	ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), a.timeout)
	defer cancel()
	start := time.Now()
	err := call(ctx)

	attrs := []any{"action", res.Action}
	if res.Workers != nil {
		attrs = append(attrs, "workers", *res.Workers)
	}
	if res.Worker != nil {
		attrs = append(attrs, "worker", *res.Worker)
	}
	attrs = append(attrs, "remote", r.RemoteAddr, "duration", time.Since(start))
	if err != nil {
		code := statusOf(err)
		a.log.Info("admin action", append(attrs, "outcome", "failed", "status", code, "err", err)...)
		writeError(w, code, err.Error())
		return
	}
	a.log.Info("admin action", append(attrs, "outcome", "ok", "status", http.StatusOK)...)
	res.OK = true
	writeJSON(w, http.StatusOK, res)
}

// statusOf maps a controller's error to the status of the answer. It is
// the only place that does.
func statusOf(err error) int {
	switch {
	case errors.Is(err, supervisor.ErrBusy):
		return http.StatusConflict
	case errors.Is(err, supervisor.ErrNoSuchWorker):
		return http.StatusNotFound
	case errors.Is(err, ErrInvalidConfig):
		return http.StatusUnprocessableEntity // before ErrBadCount, which a file's count may wrap too
	case errors.Is(err, supervisor.ErrBadCount):
		return http.StatusBadRequest
	case errors.Is(err, supervisor.ErrStopped):
		return http.StatusServiceUnavailable
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	case errors.Is(err, context.Canceled):
		return StatusClientClosed
	default:
		return http.StatusInternalServerError
	}
}

// runtimeStats is the body of GET /debug/runtime.
type runtimeStats struct {
	Goroutines int `json:"goroutines"`
	OpenFDs    int `json:"open_fds"`
	Pid        int `json:"pid"`
}

func runtimeInfo(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, runtimeStats{
		Goroutines: runtime.NumGoroutine(),
		OpenFDs:    openFDs(),
		Pid:        os.Getpid(),
	})
}

// openFDs counts this process's open file descriptors, or returns -1
// where /proc/self/fd cannot be read (not Linux, or no /proc).
func openFDs() int {
	d, err := os.Open("/proc/self/fd")
	if err != nil {
		return -1
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return -1
	}
	// The listing includes the descriptor that reads it.
	return len(names) - 1
}

// authorize lets a request through to next only if it carries the bearer
// token; an empty token lets everything through. It runs before routing,
// so a caller without the token learns nothing about the routes.
func authorize(token string, next http.Handler) http.Handler {
	if token == "" {
		return next
	}
	// Comparing digests keeps the comparison constant-time in the token's
	// length too: subtle.ConstantTimeCompare returns at once on a length
	// mismatch.
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		if !ok || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", "Bearer")
			writeError(w, http.StatusUnauthorized, "missing or wrong bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// bearer returns the credentials of an "Authorization: Bearer <token>"
// header value. The scheme is case-insensitive (RFC 9110, section 11.1).
func bearer(h string) (string, bool) {
	scheme, cred, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	cred = strings.TrimSpace(cred)
	return cred, cred != ""
}

// jsonFallback serves mux, but answers its own 404 and 405 in JSON. The
// mux writes those as text/plain; it reports them by returning an empty
// pattern from Handler, and for a 405 it sets the Allow header, which
// this keeps.
func jsonFallback(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h, pattern := mux.Handler(r)
		if pattern != "" {
			mux.ServeHTTP(w, r)
			return
		}
		h.ServeHTTP(&fallbackWriter{w: w, r: r}, r)
	})
}

// fallbackWriter turns the status of the mux's error handlers into a JSON
// error and drops their plain-text body.
type fallbackWriter struct {
	w     http.ResponseWriter
	r     *http.Request
	wrote bool
}

func (f *fallbackWriter) Header() http.Header { return f.w.Header() }

func (f *fallbackWriter) WriteHeader(code int) {
	if f.wrote {
		return
	}
	f.wrote = true
	msg := strings.ToLower(http.StatusText(code))
	switch code {
	case http.StatusNotFound:
		msg = "no such endpoint: " + f.r.URL.Path
	case http.StatusMethodNotAllowed:
		msg = fmt.Sprintf("method %s not allowed on %s; allow: %s", f.r.Method, f.r.URL.Path, f.w.Header().Get("Allow"))
	}
	writeError(f.w, code, msg)
}

func (f *fallbackWriter) Write(b []byte) (int, error) {
	if !f.wrote {
		f.WriteHeader(http.StatusOK)
	}
	return len(b), nil
}

// errorBody is the body of every failed request.
type errorBody struct {
	OK    bool   `json:"ok"`
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	h := w.Header()
	h.Del("Content-Length")
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	// The only error left is the client's connection, and it has gone.
	_ = json.NewEncoder(w).Encode(v)
}

// ShutdownTimeout bounds how long Serve waits for requests in flight once
// its context is done; then it closes their connections, which cancels
// their control calls.
const ShutdownTimeout = 5 * time.Second

// Serve serves h on ln until ctx is done, then shuts down within
// ShutdownTimeout. It returns nil on a clean stop, and the error if the
// server fails first or requests outlive the shutdown bound. ln is closed
// on return.
func Serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 5 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()

	select {
	case err := <-errc:
		return fmt.Errorf("admin: serve %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownTimeout)
	defer cancel()
	err := srv.Shutdown(sctx)
	if err != nil {
		srv.Close()
		err = fmt.Errorf("admin: shutdown %s: %w", ln.Addr(), err)
	}
	// Serve returns ErrServerClosed as soon as Shutdown starts.
	if serr := <-errc; serr != nil && !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = fmt.Errorf("admin: serve %s: %w", ln.Addr(), serr)
	}
	return err
}

// orNotFound returns h, or a handler answering 404 with msg when h is nil.
func orNotFound(h http.Handler, msg string) http.Handler {
	if h != nil {
		return h
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, msg)
	})
}
