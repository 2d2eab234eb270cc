package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"iter"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
	"golang.org/x/net/http/httpguts"
)

// Options tunes the proxy. The zero value of each field means its default.
type Options struct {
	// UpstreamTimeout bounds the wait for a worker's response headers
	// (under the fasthttp engine, which holds an answer whole, each wait
	// for its bytes, the body's too), and a request's wait for the gate
	// to let a connection to the worker open; 0 means 60s.
	UpstreamTimeout time.Duration
	// MaxRetries bounds the retries of one request on other workers;
	// 0 means one less than the number of workers (each worker is tried
	// at most once), negative means none.
	MaxRetries int
	// RetryBufferBytes is the largest request body held in memory so that
	// the request can be replayed on another worker if its worker dies;
	// a larger body is streamed, and can be replayed only while no byte
	// of it was sent. 0 means DefaultRetryBufferBytes (1 MiB), negative
	// means never buffer.
	RetryBufferBytes int64
	// BodyTimeout is the longest a request body may stall, each read
	// waiting at most this long for the client's next bytes; then the
	// client gets 408. 0 means 60s. (The fasthttp engine's server takes
	// its own, ServerOptions.BodyTimeout.)
	BodyTimeout time.Duration
	// MaxResponseBytes bounds the body of a worker's answer in the
	// fasthttp engine, which holds each one whole in memory: a larger one
	// is a 502. 0 means DefaultMaxResponseBytes (64 MiB). The httputil
	// engine streams answers and needs no bound.
	MaxResponseBytes int64
	// Log receives failures; nil discards them.
	Log *slog.Logger
	// AccessLog, if not nil, gets one record per request.
	AccessLog *slog.Logger
}

// How the proxy's clients connect to the workers. The dialer and the idle
// timeout serve all three (h1, the http.Transport, and the fasthttp
// engine's HostClients); the idle cap, h1 and the Transport (a HostClient
// caps its connections with MaxConns instead).
const (
	workerDialTimeout = 2 * time.Second
	workerKeepAlive   = 30 * time.Second // TCP keep-alive probes
	// workerIdleTimeout closes a connection idle this long rather than
	// reuse it: below Node's 5 s keepAliveTimeout, so a connection the
	// worker is about to close is rarely reused.
	workerIdleTimeout = 4 * time.Second
	// maxIdlePerWorker is the idle connections kept per worker. With
	// net/http's default of 2, every request past the second under load
	// opened a new connection, and the closed ones piled up in TIME_WAIT.
	maxIdlePerWorker = 1024
)

func workerDialer() net.Dialer {
	return net.Dialer{Timeout: workerDialTimeout, KeepAlive: workerKeepAlive}
}

// Proxy forwards requests to the pool's workers. It is an http.Handler.
type Proxy struct {
	pool      *pool.Pool
	opts      Options
	log       *slog.Logger
	h1        *h1             // the common case
	transport *http.Transport // upgrades, and large or streamed bodies
	rp        *httputil.ReverseProxy
}

// New returns a proxy over p.
func New(p *pool.Pool, o Options) *Proxy {
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 60 * time.Second
	}
	if o.RetryBufferBytes == 0 {
		o.RetryBufferBytes = DefaultRetryBufferBytes
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	px := &Proxy{pool: p, opts: o, log: o.Log, h1: newH1(o.UpstreamTimeout)}
	dialer := workerDialer()
	px.transport = &http.Transport{
		Proxy: nil, // workers are on loopback: never through HTTP_PROXY
		DialContext: dialHead(func(ctx context.Context, _, addr string) (net.Conn, error) {
			// The Transport dials with the request's context without its
			// cancel (the connection outlives the request); the worker's
			// UpContext comes as a value, to end a wait in the gate.
			up, _ := ctx.Value(upKey{}).(context.Context)
			return dialWorker(ctx, up, &dialer, addr, o.UpstreamTimeout)
		}),
		MaxIdleConns:           0,
		MaxIdleConnsPerHost:    maxIdlePerWorker,
		IdleConnTimeout:        workerIdleTimeout,
		ResponseHeaderTimeout:  o.UpstreamTimeout,
		ExpectContinueTimeout:  time.Second,
		DisableCompression:     true, // pass bodies through as the worker sent them
		MaxResponseHeaderBytes: maxWorkerHeader,
	}
	px.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// The host is set per attempt by the round tripper, which
			// picks the worker. Out.Host keeps the client's Host.
			pr.Out.URL.Host = "worker"
			// The query as the client sent it. The ReverseProxy re-encodes
			// one that net/url cannot parse (a ';', a bad escape), which
			// sorts it and drops what it could not read: a guard for a
			// proxy that reads the query itself and must not read it
			// otherwise than the worker. The balancer reads none.
			pr.Out.URL.RawQuery = pr.In.URL.RawQuery
			// So is the path, from an HTTP/1 client (whose server
			// refused a malformed one): net/url escapes on output the
			// bytes it would not have written ('\', '{', '|', a byte
			// over 0x7F), which a worker may route otherwise. RawPath
			// keeps the path as sent when it differs from net/url's
			// spelling; as Opaque it is written as is. (One that begins
			// with "//" would be read as an authority there: it goes
			// escaped.)
			if raw := pr.In.URL.RawPath; raw != "" && pr.In.ProtoMajor == 1 && !strings.HasPrefix(raw, "//") {
				pr.Out.URL.Opaque = raw
			}
			pr.SetXForwarded()
			for k := range pr.Out.Header {
				if forwardedAlias(k) {
					delete(pr.Out.Header, k)
				}
			}
			if pr.In.Trailer != nil && pr.Out.Body != nil {
				// The client's trailer values arrive in In.Trailer when
				// its body ends; Out's is a copy made before, which
				// would send the trailer names without their values.
				// Sharing the map sends what came, cleaned of the
				// hop-by-hop fields once the body's last read filled it,
				// before the transport writes the trailers.
				pr.Out.Trailer = pr.In.Trailer
				pr.Out.Body = &trailerScrub{ReadCloser: pr.Out.Body, trailer: pr.In.Trailer, connection: pr.In.Header["Connection"]}
			}
		},
		Transport: &roundTripper{px: px},
		// No timed flushing: net/http already flushes at once every
		// response it sees as streaming (Content-Length -1, or
		// text/event-stream), so server-sent events pass through
		// immediately; flushing after every write (-1) would cost a
		// write syscall per chunk of every ordinary response too.
		FlushInterval: 0,
		ErrorHandler:  px.handleError,
		ErrorLog:      log.New(&slogWriter{o.Log}, "", 0),
		BufferPool:    newBufferPool(),
	}
	return px
}

// ServeHTTP forwards r to a worker.
func (px *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w = &answerWriter{ResponseWriter: w, noInterim: !r.ProtoAtLeast(1, 1) || continueArmed(r)}
	if r.Body != nil && r.Body != http.NoBody && r.ContentLength != 0 {
		// net/http's server bounds the header's time only: a client that
		// stalls in its body would hold the connection, and the buffer
		// readBody grows for it, for ever. On a copy of the request: the
		// server looks at its own request's body when the answer starts
		// (to skip a 100 Continue body the worker never asked for), and
		// must find it as it made it.
		r2 := new(http.Request)
		*r2 = *r
		r2.Body = &stallGuard{ReadCloser: r.Body, rc: http.NewResponseController(w), d: px.opts.BodyTimeout, h2: r.ProtoMajor == 2}
		r = r2
	}
	if px.opts.AccessLog == nil {
		px.serve(w, r)
		return
	}
	start := time.Now()
	rec := &accessRecorder{ResponseWriter: w}
	// Deferred: a request whose client left ends in a panic (handleError).
	defer func() {
		logAccess(px.opts.AccessLog, r.RemoteAddr, r.Method, r.RequestURI, rec.status, rec.bytes, time.Since(start))
	}()
	px.serve(rec, r)
}

// answerWriter is what the ReverseProxy writes the answer to. It lets an
// answer without a Content-Type go on without one, as nginx and the
// fasthttp engine pass it: net/http would guess one from the body
// (text/html for what looks like HTML, past a worker's nosniff). A nil
// value stops the guess and writes nothing; it is set as the final answer
// starts, not once before, as the ReverseProxy clears the header map
// after each 1xx it passes on. Of those it takes out the hop-by-hop
// fields (net/http drops a Content-Length itself), and drops a 100
// Continue (the balancer's own server answers the client's Expect) and,
// where noInterim is set, every one.
type answerWriter struct {
	http.ResponseWriter
	// noInterim drops every 1xx: an HTTP/1.0 client may not get one
	// (RFC 9110, section 15.2), and one whose 100 Continue net/http
	// may still write (see continueArmed) must not get one written at
	// the same time.
	noInterim bool
	started   bool
}

// continueArmed reports whether net/http's HTTP/1 server writes a 100
// Continue by itself when r's body is first read: an HTTP/1.1 client
// sent Expect: 100-continue with a body. It writes it from the goroutine
// that reads the body (the transport's, once the worker asked for it),
// under a lock that a 1xx written through the ResponseWriter does not
// take, except a 100; a 103 that the transport's read loop passed on
// could be written to the connection's buffer at the same moment. Such a
// request gets no 1xx from the worker: its 100 comes from the server, as
// soon as the body is read. (An HTTP/2 server writes both from one
// goroutine.) Any value naming 100-continue counts: a false match only
// drops a 1xx.
func continueArmed(r *http.Request) bool {
	if r.ProtoMajor != 1 || r.ContentLength == 0 {
		return false
	}
	for _, v := range r.Header["Expect"] {
		if strings.Contains(strings.ToLower(v), "100-continue") {
			return true
		}
	}
	return false
}

func (w *answerWriter) WriteHeader(code int) {
	if code < 200 && code != http.StatusSwitchingProtocols {
		h := w.ResponseWriter.Header()
		if code == http.StatusContinue || w.noInterim {
			clear(h) // as the ReverseProxy does after a 1xx
			return
		}
		// The ReverseProxy copies a 1xx's fields as they came: its
		// hop-by-hop ones would reach the client (and make a malformed
		// HTTP/2 frame).
		scrubTrailer(h, h["Connection"])
	} else if !w.started {
		w.started = true
		h := w.ResponseWriter.Header()
		if _, ok := h["Content-Type"]; !ok {
			h["Content-Type"] = nil
		}
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *answerWriter) Write(p []byte) (int, error) {
	if !w.started {
		// A Write with no WriteHeader before it starts a 200.
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(p)
}

// Flush is here for writers that look for http.Flusher rather than
// going through http.ResponseController (the access log's recorder).
func (w *answerWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

// Unwrap lets http.ResponseController reach the real writer (Flush,
// deadlines).
func (w *answerWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Hijack hands the ReverseProxy the client's connection for an upgrade.
// What the client sent right behind its request, which the server's
// reader holds already, is read first: the ReverseProxy copies from the
// connection alone, and dropped those bytes (golang/go#80875). They are
// copied out once, and the connection read directly after them: read
// through the server's reader, a client's half-close would end the
// request's context, and the ReverseProxy the whole exchange with it.
func (w *answerWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	conn, brw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err != nil || brw == nil || brw.Reader.Buffered() == 0 {
		return conn, brw, err
	}
	early, _ := brw.Reader.Peek(brw.Reader.Buffered())
	return &readFirst{Conn: conn, early: bytes.Clone(early)}, brw, nil
}

// readFirst is a hijacked connection that reads early first.
type readFirst struct {
	net.Conn
	early []byte
}

func (c *readFirst) Read(p []byte) (int, error) {
	if len(c.early) > 0 {
		n := copy(p, c.early)
		c.early = c.early[n:]
		return n, nil
	}
	return c.Conn.Read(p)
}

// CloseWrite passes a half-close on, as the connection under it would.
// Under one that has none, the error ends the upgraded exchange, as the
// ReverseProxy ends it for such a connection.
func (c *readFirst) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// serve hands r to the ReverseProxy, unless it asks to switch to a
// protocol the ReverseProxy refuses to ask for, which it would answer
// through handleError as a 502, the balancer's error: the client's. An
// HTTP/2 request whose head cannot be written in HTTP/1.1 as it came is
// the client's too, and so is a CONNECT, after which the connection
// closes: the client may have sent its tunnel's first bytes already.
func (px *Proxy) serve(w http.ResponseWriter, r *http.Request) {
	if r.RequestURI == "*" && r.Method != http.MethodOptions {
		// The asterisk-form is OPTIONS' alone (RFC 9112 3.2.4).
		// net/http's server takes it with any method; the fasthttp
		// engine's server refuses it before any handler, uncounted:
		// so here.
		WriteError(w, http.StatusBadRequest, string(errBadTarget))
		return
	}
	if strings.IndexByte(r.RequestURI, '#') >= 0 {
		// No form of request target has a fragment (RFC 9112 3.2).
		// net/http's server keeps it in the path, which went to the
		// worker escaped as %23; fasthttp's cuts it off. Neither is
		// what the client meant, so neither engine guesses.
		WriteError(w, http.StatusBadRequest, string(errBadTarget))
		return
	}
	if badAuthority(r.RequestURI) {
		WriteError(w, http.StatusBadRequest, string(errBadTarget))
		return
	}
	if r.Host == "" && (r.ProtoMajor == 2 || r.ProtoMinor >= 1) || badHost(r.Host) {
		// An HTTP/1.1 Host field left empty (net/http's server answers
		// one missing itself), or an HTTP/2 request with neither
		// :authority nor Host. RFC 9112 3.2 allows it for a target
		// without authority, which an http URI is not (RFC 9110 4.2.1);
		// the worker would have got its own address as the Host. The
		// fasthttp engine's server refuses it before any handler, and
		// most of what badHost refuses too.
		WriteError(w, http.StatusBadRequest, string(errBadHost))
		return
	}
	if r.Method == http.MethodConnect {
		if r.ProtoMajor == 1 {
			w.Header().Set("Connection", "close")
		}
		px.handleError(w, r, errConnect)
		return
	}
	if r.ProtoMajor == 2 {
		if err := checkH2Head(r); err != nil {
			px.handleError(w, r, err)
			return
		}
		if e := r.Header["Expect"]; len(e) > 0 && !httpguts.HeaderValuesContainsToken(e, "100-continue") {
			// An expectation the balancer does not know (RFC 9110
			// 10.1.1): 417, uncounted, as net/http's HTTP/1 server and
			// the fasthttp engine answer it; the HTTP/2 server passes
			// it on.
			WriteError(w, http.StatusExpectationFailed, "unsupported expectation")
			return
		}
	}
	if t := upgradeType(r.Header); t != "" {
		if !printable(t) {
			px.handleError(w, r, errBadUpgrade)
			return
		}
		if httpguts.HeaderValuesContainsToken([]string{t}, "h2c") {
			// An upgrade to HTTP/2 over cleartext (RFC 7540 3.2, gone
			// from RFC 9113) would make the connection an HTTP/2 one
			// between the client and one worker, whose requests the
			// balancer then neither sees, spreads nor counts
			// (golang/go#80416). Served as the HTTP/1.1 request it
			// also is, as the fasthttp engine serves any upgrade
			// request; HTTP2-Settings goes as the hop's, listed in
			// Connection.
			r.Header.Del("Upgrade")
		}
	}
	px.rp.ServeHTTP(w, r)
}

// checkH2Head refuses an HTTP/2 request that would reach the worker as a
// broken HTTP/1.1 request: a method that is no token ("GE T"), a space in
// the query (the path is escaped on the way, the query is sent as it
// came), or a host net/http's HTTP/1 server would refuse ("a b", which
// Request.Write would send as an empty Host). The HTTP/2 server checks
// only that no field holds a control byte; net/http's HTTP/1 server
// refuses all three of these with its own 400 before any handler runs,
// and so does the fasthttp engine's server, which speaks HTTP/1 only.
func checkH2Head(r *http.Request) error {
	switch {
	case !validName(r.Method):
		return errBadMethod
	case strings.IndexByte(r.URL.RawQuery, ' ') >= 0:
		return errBadTarget
	case !httpguts.ValidHostHeader(r.Host):
		return errBadHost
	}
	return nil
}

// CloseIdleConnections closes the idle connections to the workers.
func (px *Proxy) CloseIdleConnections() {
	px.h1.closeIdle()
	px.transport.CloseIdleConnections()
}

// handleError answers a request that got no response from any worker.
func (px *Proxy) handleError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := Status(r, err)
	// A 4xx is the client's doing (it left, or its body broke or
	// stalled): answered, but no error of the balancer's, and not worth
	// a log line each.
	px.pool.CountRequest(status < 500)
	if status == StatusClientClosed {
		if rec, ok := w.(*accessRecorder); ok {
			rec.status = StatusClientClosed
		}
		// Returning would make net/http send an empty 200 OK, which a
		// client that only half-closed its side would read as the
		// answer. Abort instead: the connection closes, no status sent.
		panic(http.ErrAbortHandler)
	}
	if status >= 500 && status != http.StatusServiceUnavailable {
		px.log.Warn("proxy error", "method", r.Method, "path", r.URL.Path, "status", status, "err", err)
	}
	WriteError(w, status, msg)
}

// WriteError writes {"error": msg} with the given status.
func WriteError(w http.ResponseWriter, status int, msg string) {
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	if status == http.StatusServiceUnavailable {
		h.Set("Retry-After", "1")
	}
	w.WriteHeader(status)
	io.WriteString(w, `{"error":`+strconv.Quote(msg)+"}\n")
}

// roundTripper picks the worker for each attempt and retries on the next
// one when the attempt failed in a way that is safe to replay.
type roundTripper struct{ px *Proxy }

func (rt *roundTripper) RoundTrip(req *http.Request) (*http.Response, error) {
	px := rt.px
	b, err := readBody(req, px.opts.RetryBufferBytes)
	if err != nil {
		return nil, err
	}
	if b.replayable() {
		// The body is here whole (or there is none): a worker asked to
		// wait for it would send a 100 Continue for nothing, or, if it
		// never does, the transport would wait ExpectContinueTimeout.
		// A streamed body keeps it: the worker may refuse it before the
		// client sends it.
		delete(req.Header, "Expect")
	}
	var resp *http.Response
	var stopAttempt func() // ends the last attempt's context
	w, proc, err := forward(req.Context(), px.opts.UpstreamTimeout, px.pool, px.opts.MaxRetries, px.log, resendable(req), &b,
		func(err error) error { return withClientGone(req.Context(), err) },
		func(proc *pool.Process, retry bool) error {
			// req is the ReverseProxy's own clone of the inbound
			// request, with a URL of its own, so the first attempt may
			// set its host and body.
			out := req
			if retry {
				// Callers "should not mutate or reuse the request" they
				// gave a RoundTripper (net/http), and the transport's
				// goroutines may still hold the failed attempt's, so
				// each retry gets a copy of its own; the hot path never
				// gets here.
				out = new(http.Request)
				*out = *req
				u := *req.URL
				out.URL = &u
			}
			out.URL.Host = proc.Addr()
			b.attach(out)
			var err error
			if px.h1.takes(out) {
				stopAttempt = func() {}
				resp, err = px.h1.roundTrip(out, proc.UpContext())
				return err
			}
			// The attempt ends early, with pool.ErrWorkerDown, when the
			// worker is marked down meanwhile (hung, cut off): the
			// request then goes to another worker at once instead of
			// waiting for upstream_timeout. Not when it is gone (its
			// process exited, or it refused a connection): what it sent
			// first is still to be read, and the kernel ends the rest.
			actx, cancel := context.WithCancelCause(req.Context())
			up := proc.UpContext()
			stopWatch := context.AfterFunc(up, func() {
				if !pool.Gone(up) {
					cancel(pool.ErrWorkerDown)
				}
			})
			stopAttempt = func() { stopWatch(); cancel(nil) }
			tctx, connection, gotConn := traceHead(context.WithValue(actx, upKey{}, proc.UpContext()))
			out = out.WithContext(tctx)
			resp, err = px.transport.RoundTrip(out)
			if err != nil && strings.Contains(err.Error(), "server response headers exceeded") {
				// net/http's MaxResponseHeaderBytes error, which has no
				// sentinel: an answer, as on h1.
				err = fmt.Errorf("%w (%v)", errHeaderTooLarge, err)
			}
			if err != nil {
				stopAttempt()
				if req.Context().Err() == nil && errors.Is(context.Cause(actx), pool.ErrWorkerDown) {
					if gotConn() {
						err = workerDown(err)
					} else {
						// Still waiting for a connection (the gate):
						// nothing of the request went out.
						err = fmt.Errorf("%w (%v)", errDownBeforeDial, err)
					}
				}
				return err
			}
			restoreConnection(resp, connection)
			// Checked here, not left to the ReverseProxy (which panics
			// on a status under 100, and would take a wrong switch of
			// protocols for a failure after this one's count): an
			// answer that cannot be passed on is the worker's failure,
			// counted once, as one.
			if err = badAnswer(out, resp); err != nil {
				resp.Body.Close()
				stopAttempt()
			}
			return err
		})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		// An upgrade (WebSocket): the ReverseProxy needs the body as
		// the writable connection it is, so it is not wrapped. The
		// request counts as answered now; the attempt's context lives as
		// long as the client's request.
		w.End(proc, true, false)
		context.AfterFunc(req.Context(), stopAttempt)
		return resp, nil
	}
	resp.Body = &countedBody{rc: resp.Body, p: px.pool, w: w, proc: proc, stop: stopAttempt, resp: resp, connection: resp.Header["Connection"]}
	return resp, nil
}

// upgradeType is the protocol h asks for or switches to, "" if none. It
// finds what the ReverseProxy finds (httpguts.HeaderValuesContainsToken):
// tokens trimmed of spaces and tabs only, compared in ASCII; with
// strings.TrimSpace a no-break space around "upgrade" made a switch the
// ReverseProxy then refused on its own.
func upgradeType(h http.Header) string {
	for _, v := range h["Connection"] {
		for tok := range strings.SplitSeq(v, ",") {
			if asciiEqualFold(strings.Trim(tok, " \t"), "upgrade") {
				return h.Get("Upgrade")
			}
		}
	}
	return ""
}

// connectionTokens yields the names the values of a Connection header
// list.
func connectionTokens(vals []string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for _, v := range vals {
			for tok := range strings.SplitSeq(v, ",") {
				if tok = strings.TrimSpace(tok); tok != "" && !yield(tok) {
					return
				}
			}
		}
	}
}

// withClientGone adds the cancel of the client's request to err, for the
// retry rule: when the client leaves as the worker fails, the transport
// may report the broken connection rather than the cancel.
func withClientGone(ctx context.Context, err error) error {
	if cerr := ctx.Err(); cerr != nil && !errors.Is(err, cerr) {
		return fmt.Errorf("%w: %w", cerr, err)
	}
	return err
}

// countedBody ends the worker's in-flight count when the response body is
// done, so least-conn sees requests that are still streaming; a body the
// worker broke off (a reset, fewer bytes than its Content-Length, a bad
// chunk) is the worker's failure, though its header went out as an
// answer.
type countedBody struct {
	rc     io.ReadCloser
	p      *pool.Pool
	w      *pool.Worker
	proc   *pool.Process
	stop   func() // ends the attempt's context, once the body is done
	broken bool   // set by the ReverseProxy's goroutine, which also closes
	done   atomic.Bool

	// At the body's end, the trailers that came with it are cleaned of
	// hop-by-hop fields before the ReverseProxy passes them on: it
	// cleans the header section only. (resp.Trailer, not a copy: the
	// transport may make the map when the trailers come.)
	resp       *http.Response
	connection []string // the response's Connection header
}

func (b *countedBody) Read(p []byte) (int, error) {
	n, err := b.rc.Read(p)
	if err == io.EOF {
		scrubTrailer(b.resp.Trailer, b.connection)
	} else if err != nil && !errors.Is(err, context.Canceled) {
		// (context.Canceled: the client left, and its request was
		// aborted.)
		b.broken = true
	}
	return n, err
}

func (b *countedBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.w.End(b.proc, !b.broken, false)
		if b.broken {
			b.p.CountBroken()
		}
		defer b.stop()
	}
	return b.rc.Close()
}

// slogWriter turns the ReverseProxy's log lines (errors while copying a
// body, mostly clients that left) into debug records.
type slogWriter struct{ log *slog.Logger }

func (s *slogWriter) Write(p []byte) (int, error) {
	s.log.Debug(string(p))
	return len(p), nil
}
