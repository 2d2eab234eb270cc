package proxy

import (
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Options tunes the proxy. The zero value of each field means its default.
type Options struct {
	// UpstreamTimeout bounds the wait for a worker's response headers;
	// 0 means 60s.
	UpstreamTimeout time.Duration
	// MaxRetries bounds the retries of one request on other workers;
	// 0 means one less than the number of workers (each worker is tried
	// at most once), negative means none.
	MaxRetries int
	// Log receives failures; nil discards them.
	Log *slog.Logger
}

// Proxy forwards requests to the pool's workers. It is an http.Handler.
type Proxy struct {
	pool      *pool.Pool
	opts      Options
	log       *slog.Logger
	transport *http.Transport
	rp        *httputil.ReverseProxy
}

// New returns a proxy over p.
func New(p *pool.Pool, o Options) *Proxy {
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 60 * time.Second
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	px := &Proxy{pool: p, opts: o, log: o.Log}
	px.transport = &http.Transport{
		Proxy: nil, // workers are on loopback: never through HTTP_PROXY
		DialContext: (&net.Dialer{
			Timeout:   2 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		// The default of 2 idle connections per host makes every
		// request past the second open a new connection under load,
		// and the closed ones pile up in TIME_WAIT.
		MaxIdleConns:          0,
		MaxIdleConnsPerHost:   1024,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: o.UpstreamTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass bodies through as the worker sent them
		ReadBufferSize:        32 << 10,
		WriteBufferSize:       32 << 10,
	}
	px.rp = &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.Out.URL.Scheme = "http"
			// The host is set per attempt by the round tripper, which
			// picks the worker. Out.Host keeps the client's Host.
			pr.Out.URL.Host = "worker"
			pr.SetXForwarded()
		},
		Transport:     &roundTripper{px: px},
		FlushInterval: -1, // server-sent events and streams pass at once
		ErrorHandler:  px.handleError,
		ErrorLog:      log.New(&slogWriter{o.Log}, "", 0),
		BufferPool:    newBufferPool(),
	}
	return px
}

// ServeHTTP forwards r to a worker.
func (px *Proxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	px.rp.ServeHTTP(w, r)
}

// CloseIdleConnections closes the idle connections to the workers.
func (px *Proxy) CloseIdleConnections() { px.transport.CloseIdleConnections() }

// handleError answers a request that got no response from any worker.
func (px *Proxy) handleError(w http.ResponseWriter, r *http.Request, err error) {
	status, msg := Status(r, err)
	if status == StatusClientClosed {
		// Not the worker's fault, and not worth a log line each.
		px.pool.CountRequest(true)
		return
	}
	px.pool.CountRequest(false)
	if status != http.StatusServiceUnavailable {
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
	var body *trackedBody
	if req.Body != nil && req.Body != http.NoBody {
		// The transport closes the body after a failed attempt; keep it
		// open for the next one, and learn whether any of it was sent.
		body = &trackedBody{rc: req.Body}
		req.Body = body
	}
	maxRetries := px.opts.MaxRetries
	if maxRetries == 0 {
		maxRetries = len(px.pool.Workers()) - 1
	}
	var triedBuf [8]*pool.Worker
	tried := triedBuf[:0]
	w := px.pool.Pick()
	for {
		if w == nil {
			if body != nil {
				body.rc.Close()
			}
			return nil, ErrNoWorker
		}
		addr := w.Addr()
		// req is the ReverseProxy's own clone of the inbound request,
		// with a URL of its own, so setting the host per attempt is safe.
		req.URL.Host = addr
		w.Begin()
		resp, err := px.transport.RoundTrip(req)
		if err == nil {
			px.pool.CountRequest(true)
			resp.Body = &countedBody{rc: resp.Body, w: w}
			return resp, nil
		}
		if isRefused(err) && w.Addr() == addr && w.CompareAndSwapState(pool.Up, pool.Down) {
			px.log.Warn("worker down", "worker", w.ID(), "pid", w.Pid(), "addr", addr, "reason", "connection refused")
		}
		tried = append(tried, w)
		retry := len(tried) <= maxRetries && retryable(req, err, body != nil, body != nil && body.read.Load())
		if !retry {
			w.End(false, false)
			if body != nil {
				body.rc.Close()
			}
			return nil, err
		}
		w.End(false, true)
		px.pool.CountRetry()
		px.log.Debug("retrying on another worker", "worker", w.ID(), "err", err)
		w = px.pool.PickExcept(tried)
	}
}

// trackedBody passes reads through, records that one happened, and ignores
// Close so a failed attempt leaves the body usable for the next.
type trackedBody struct {
	rc   io.ReadCloser
	read atomic.Bool
}

func (b *trackedBody) Read(p []byte) (int, error) {
	b.read.Store(true)
	return b.rc.Read(p)
}

func (b *trackedBody) Close() error { return nil }

// countedBody ends the worker's in-flight count when the response body is
// done, so least-conn sees requests that are still streaming.
type countedBody struct {
	rc   io.ReadCloser
	w    *pool.Worker
	done atomic.Bool
}

func (b *countedBody) Read(p []byte) (int, error) { return b.rc.Read(p) }

func (b *countedBody) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.w.End(true, false)
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
