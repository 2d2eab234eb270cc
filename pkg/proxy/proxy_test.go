package proxy

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/valyala/fasthttp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// fasthttp's process-wide helpers: the Date header updater and
		// the dialer's address cache cleaner live as long as the process.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.updateServerDate.func1"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*TCPDialer).tcpAddrsClean"),
		// These end on their own, after sleeping out their period (up to
		// 10 s for the server's worker pool, MaxIdleConnDuration for the
		// client's connection cleaner), which no test should wait for.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*workerPool).Start.func2"),
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*HostClient).connsCleaner"),
		// The benchmarks' fasthttp.Client cleans its host clients alike.
		goleak.IgnoreAnyFunction("github.com/valyala/fasthttp.(*Client).mCleaner"),
	)
}

// backend is a real HTTP server that records what it received.
type backend struct {
	srv  *httptest.Server
	hits atomic.Int64
	last atomic.Pointer[http.Request]
	body atomic.Pointer[string]
}

func newBackend(t *testing.T, name string, h http.HandlerFunc) *backend {
	t.Helper()
	b := &backend{}
	b.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b.hits.Add(1)
		data, _ := io.ReadAll(r.Body)
		s := string(data)
		b.body.Store(&s)
		b.last.Store(r)
		if h != nil {
			h(w, r)
			return
		}
		io.WriteString(w, name)
	}))
	t.Cleanup(b.srv.Close)
	return b
}

// deadAddr returns a loopback address where nothing listens.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// newPool returns a round-robin pool with one up worker per address.
func newPool(addrs ...string) *pool.Pool {
	p := pool.New(new(pool.RoundRobin))
	for i, a := range addrs {
		w := pool.NewWorker(i + 1)
		w.SetProcess(pool.NewProcess(100+i, a, time.Now()), pool.Up)
		p.Add(w)
	}
	return p
}

func serve(t *testing.T, px *Proxy) *httptest.Server {
	t.Helper()
	return serveHandler(t, px, px)
}

// serveSync is serve, and also says on done each time the proxy is
// through with a request: the counts that end when it closes the worker's
// response body may lag the client's read of that body.
func serveSync(t *testing.T, px *Proxy) (front *httptest.Server, done <-chan struct{}) {
	t.Helper()
	ch := make(chan struct{}, 16)
	front = serveHandler(t, px, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Deferred: a request whose client left ends in a panic
		// (http.ErrAbortHandler).
		defer func() { ch <- struct{}{} }()
		px.ServeHTTP(w, r)
	}))
	return front, ch
}

func serveHandler(t *testing.T, px *Proxy, h http.Handler) *httptest.Server {
	t.Helper()
	front := httptest.NewServer(h)
	t.Cleanup(func() { front.Close(); px.CloseIdleConnections() })
	return front
}

// serveFast serves fx's fasthttp server on a loopback port until the
// test ends, and returns its URL.
func serveFast(t *testing.T, fx *Fast) string {
	t.Helper()
	return serveFastWith(t, fx, ServerOptions{MaxHeaderBytes: 8 << 10})
}

// serveFastWith is serveFast with the server's options so.
func serveFastWith(t *testing.T, fx *Fast, so ServerOptions) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := fx.Server(so, nil, nil)
	go fs.Serve(ln)
	t.Cleanup(func() { fs.Shutdown(); fx.CloseIdleConnections() })
	return "http://" + ln.Addr().String()
}

// serveEngine serves the named engine ("httputil" or "fasthttp") over p
// until the test ends, and returns its URL.
func serveEngine(t *testing.T, engine string, p *pool.Pool, o Options) string {
	t.Helper()
	if engine == "fasthttp" {
		return serveFast(t, NewFast(p, o))
	}
	return serve(t, New(p, o)).URL
}

func get(t *testing.T, c *http.Client, url string, hdr map[string]string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(data)
}

func TestSpreadAndHeaders(t *testing.T) {
	a := newBackend(t, "a", nil)
	b := newBackend(t, "b", nil)
	p := newPool(a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String())
	front, done := serveSync(t, New(p, Options{}))
	c := front.Client()

	var got []string
	for range 4 {
		_, body := get(t, c, front.URL+"/x?q=1", map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"})
		<-done
		got = append(got, body)
	}
	if strings.Join(got, "") != "abab" {
		t.Errorf("got answers %q; want %q", strings.Join(got, ""), "abab")
	}
	r := a.last.Load()
	if xff := r.Header.Get("X-Forwarded-For"); xff != "127.0.0.1" {
		t.Errorf("got X-Forwarded-For %q; want %q (the client's must not be trusted)", xff, "127.0.0.1")
	}
	if xfh := r.Header.Get("X-Forwarded-Host"); xfh != strings.TrimPrefix(front.URL, "http://") {
		t.Errorf("got X-Forwarded-Host %q; want %q", xfh, strings.TrimPrefix(front.URL, "http://"))
	}
	if r.URL.RequestURI() != "/x?q=1" {
		t.Errorf("got URI %q; want %q", r.URL.RequestURI(), "/x?q=1")
	}
	if r.Host != strings.TrimPrefix(front.URL, "http://") {
		t.Errorf("got Host %q; want the client's %q", r.Host, strings.TrimPrefix(front.URL, "http://"))
	}
	for _, w := range p.Workers() {
		if w.Requests() != 2 || w.InFlight() != 0 {
			t.Errorf("worker %d: got requests=%d in_flight=%d; want 2 and 0", w.ID(), w.Requests(), w.InFlight())
		}
	}
	for _, w := range p.Workers() {
		if n, _ := w.Latency().Cumulative(nil); n != 2 {
			t.Errorf("worker %d: got %d response times; want 2", w.ID(), n)
		}
	}
	if p.Requests() != 4 || p.Errors() != 0 {
		t.Errorf("got pool requests=%d errors=%d; want 4 and 0", p.Requests(), p.Errors())
	}
}

// TestFastHeaders: the fasthttp engine, too, replaces the client's
// X-Forwarded-* headers and drops the hop-by-hop ones.
func TestFastHeaders(t *testing.T) {
	a := newBackend(t, "a", nil)
	url := serveFast(t, NewFast(newPool(a.srv.Listener.Addr().String()), Options{}))
	_, body := get(t, http.DefaultClient, url+"/x?q=1", map[string]string{
		"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil", "X-Forwarded-Proto": "https",
		"Forwarded": "for=6.6.6.6", "Keep-Alive": "timeout=5", "Te": "trailers",
	})
	if body != "a" {
		t.Fatalf("got %q; want %q", body, "a")
	}
	r := a.last.Load()
	host := strings.TrimPrefix(url, "http://")
	for _, h := range []struct{ name, want string }{
		{"X-Forwarded-For", "127.0.0.1"},
		{"X-Forwarded-Host", host},
		{"X-Forwarded-Proto", "http"},
		{"Forwarded", ""},
		{"Keep-Alive", ""},
		{"Te", "trailers"}, // as the ReverseProxy passes it
	} {
		if got := r.Header.Get(h.name); got != h.want {
			t.Errorf("got %s %q; want %q", h.name, got, h.want)
		}
	}
	if r.Host != host || r.URL.RequestURI() != "/x?q=1" {
		t.Errorf("got Host %q URI %q; want %q %q", r.Host, r.URL.RequestURI(), host, "/x?q=1")
	}
}

// TestForwardedGivenTwiceReplaced: a client that sends each
// X-Forwarded-* field twice gets neither copy to the worker, in either
// engine: fasthttp's Set replaces only the first field of a name, and a
// worker that joins the lines ("127.0.0.1, 6.6.6.6") and trusts the last
// hop would take the client's word for its address.
func TestForwardedGivenTwiceReplaced(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			a := newBackend(t, "a", nil)
			url := serveEngine(t, engine, newPool(a.srv.Listener.Addr().String()), Options{})
			req, _ := http.NewRequest("GET", url+"/x", nil)
			for _, kv := range [][2]string{
				{"X-Forwarded-For", "1.1.1.1"}, {"X-Forwarded-For", "6.6.6.6"},
				{"X-Forwarded-Host", "a"}, {"X-Forwarded-Host", "evil"},
				{"X-Forwarded-Proto", "http"}, {"X-Forwarded-Proto", "https"},
			} {
				req.Header.Add(kv[0], kv[1])
			}
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			r := a.last.Load()
			host := strings.TrimPrefix(url, "http://")
			for _, h := range []struct{ name, want string }{
				{"X-Forwarded-For", "127.0.0.1"},
				{"X-Forwarded-Host", host},
				{"X-Forwarded-Proto", "http"},
			} {
				if got := r.Header.Values(h.name); len(got) != 1 || got[0] != h.want {
					t.Errorf("got %s %q at the worker; want only %q", h.name, got, h.want)
				}
			}
		})
	}
}

// TestForwardedAliasesDropped: X-Forwarded-* written with underscores,
// which CGI-style workers read as the real ones, never reach a worker, in
// either engine; other names with an underscore do.
func TestForwardedAliasesDropped(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			a := newBackend(t, "a", nil)
			url := serveEngine(t, engine, newPool(a.srv.Listener.Addr().String()), Options{})
			_, body := get(t, http.DefaultClient, url+"/x", map[string]string{
				"X_Forwarded_For": "6.6.6.6", "x_forwarded-host": "evil", "X-Forwarded_Proto": "https",
				"X_Request_Id": "kept",
			})
			if body != "a" {
				t.Fatalf("got %q; want %q", body, "a")
			}
			r := a.last.Load()
			for k, v := range r.Header {
				switch strings.ToLower(strings.ReplaceAll(k, "_", "-")) {
				case "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto":
					if strings.Contains(k, "_") {
						t.Errorf("got %s: %q at the worker; want it dropped", k, v)
					}
				}
			}
			if got := r.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("got X-Forwarded-For %q; want 127.0.0.1", got)
			}
			if got := r.Header.Get("X_request_id"); got != "kept" {
				t.Errorf("got X_Request_Id %q; want it passed on as %q", got, "kept")
			}
		})
	}
}

func TestErrorStatuses(t *testing.T) {
	slow := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-time.After(2 * time.Second):
		case <-r.Context().Done():
		}
	})
	tests := []struct {
		name   string
		pool   *pool.Pool
		status int
		msg    string
	}{
		{"no worker up", newPool(), 503, "no worker available"},
		{"every worker refuses", newPool(deadAddr(t), deadAddr(t)), 502, "worker failed"},
		{"worker too slow", newPool(slow.srv.Listener.Addr().String()), 504, "worker timed out"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			front := serve(t, New(tt.pool, Options{UpstreamTimeout: 100 * time.Millisecond}))
			resp, err := front.Client().Get(front.URL + "/")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var body struct{ Error string }
			if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
				t.Fatalf("body is not JSON: %v", err)
			}
			if resp.StatusCode != tt.status || body.Error != tt.msg {
				t.Errorf("got %d %q; want %d %q", resp.StatusCode, body.Error, tt.status, tt.msg)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
				t.Errorf("got Content-Type %q; want application/json", ct)
			}
			if tt.pool.Errors() != 1 {
				t.Errorf("got %d errors counted; want 1", tt.pool.Errors())
			}
		})
	}
}

// send sends a request with the given body through front and returns
// the status and the body of the answer. chunked hides the body's length,
// so that it goes out chunked.
func send(t *testing.T, front *httptest.Server, method, body string, chunked bool) (int, string) {
	t.Helper()
	return sendHeader(t, front, method, body, chunked, nil)
}

// sendHeader is send with header fields of its own.
func sendHeader(t *testing.T, front *httptest.Server, method, body string, chunked bool, h http.Header) (int, string) {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
		if chunked {
			r = struct{ io.Reader }{r}
		}
	}
	req, err := http.NewRequest(method, front.URL+"/", r)
	if err != nil {
		t.Fatal(err)
	}
	maps.Copy(req.Header, h)
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatalf("%s: %v", method, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s: read answer: %v", method, err)
	}
	return resp.StatusCode, string(data)
}

const workerFailed = `{"error":"worker failed"}` + "\n"

func TestRetryOnRefused(t *testing.T) {
	large := strings.Repeat("L", 64<<10)
	tests := []struct {
		name    string
		method  string
		body    string
		chunked bool
		opts    Options
	}{
		{"GET", http.MethodGet, "", false, Options{}},
		{"POST with a body is safe to resend when nothing was sent", http.MethodPost, "payload", false, Options{}},
		{"PUT larger than the buffer was not read, so it is resent", http.MethodPut, large, false, Options{RetryBufferBytes: 1 << 10}},
		{"POST larger than the buffer was not read, so it is resent", http.MethodPost, large, false, Options{RetryBufferBytes: 1 << 10}},
		{"chunked POST larger than the buffer is resent whole", http.MethodPost, large, true, Options{RetryBufferBytes: 1 << 10}},
		{"POST never buffered was not read, so it is resent", http.MethodPost, "payload", false, Options{RetryBufferBytes: -1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := newBackend(t, "live", nil)
			p := newPool(deadAddr(t), live.srv.Listener.Addr().String())
			front := serve(t, New(p, tt.opts))
			status, _ := send(t, front, tt.method, tt.body, tt.chunked)
			if status != 200 {
				t.Fatalf("got status %d; want 200 from the live worker", status)
			}
			if got := *live.body.Load(); got != tt.body {
				t.Errorf("live worker got body of %d bytes; want %d", len(got), len(tt.body))
			}
			if live.hits.Load() != 1 {
				t.Errorf("live worker got %d requests; want 1", live.hits.Load())
			}
			dead := p.Get(1)
			if dead.State() != pool.Down {
				t.Errorf("refusing worker is %v; want down at once", dead.State())
			}
			if p.Retries() != 1 || dead.Retries() != 1 || p.Errors() != 0 {
				t.Errorf("got retries=%d worker retries=%d errors=%d; want 1 1 0", p.Retries(), dead.Retries(), p.Errors())
			}
		})
	}
}

// unanswered returns the address of a listener whose accept queue is
// full and never drained: a connect to it gets no answer (Linux drops
// the SYN), as to a host cut off from the network, and times out.
func unanswered(t *testing.T) string {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	syscall.CloseOnExec(fd)
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
	// Fill the queue: connects complete until it is full, then hang.
	for i := 0; ; i++ {
		c, err := net.DialTimeout("tcp", addr, 300*time.Millisecond)
		if err != nil {
			if isTimeout(err) {
				return addr
			}
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if i == 16 {
			t.Skip("the listener's accept queue never filled: connects to it do not hang here")
		}
	}
}

// TestRetryOnConnectTimeout: a worker that does not answer the connect
// (a host cut off, an accept queue full) never got the request, so the
// request goes to another worker whatever its method, after the connect
// timeout, and the worker is marked down.
func TestRetryOnConnectTimeout(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, method := range []string{http.MethodGet, http.MethodPost} {
			t.Run(engine+"/"+method, func(t *testing.T) {
				t.Parallel()
				live := newBackend(t, "live", nil)
				p := newPool(unanswered(t), live.srv.Listener.Addr().String())
				url := serveEngine(t, engine, p, Options{})
				c := &http.Client{Timeout: 4 * workerDialTimeout}
				defer c.CloseIdleConnections()
				req, _ := http.NewRequest(method, url+"/", strings.NewReader("pay 10"))
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("got %d %q; want 200 from the live worker", resp.StatusCode, data)
				}
				if got := *live.body.Load(); got != "pay 10" {
					t.Errorf("live worker got body %q; want %q", got, "pay 10")
				}
				cut := p.Get(1)
				if cut.State() != pool.Down {
					t.Errorf("the worker that never answered is %v; want down", cut.State())
				}
				if p.Retries() != 1 || cut.Retries() != 1 || p.Errors() != 0 {
					t.Errorf("got retries=%d worker retries=%d errors=%d; want 1 1 0", p.Retries(), cut.Retries(), p.Errors())
				}
			})
		}
	}
}

// resetter accepts connections, reads the start of a request, and closes
// the connection without answering: a worker that dies mid-request. hits
// counts the requests it got.
func resetter(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	hits = new(atomic.Int64)
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 4096)
			if n, _ := c.Read(buf); n > 0 {
				hits.Add(1)
			}
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, as from a killed process
			}
			c.Close()
		}
	}()
	return l.Addr().String(), hits
}

// TestResetBeforeResponse: a worker that reads a request and dies before
// it answers. The request goes to another worker if it may be sent twice
// and its body is still whole; a POST or PATCH, which the worker may have
// acted on, only with an Idempotency-Key.
func TestResetBeforeResponse(t *testing.T) {
	small := strings.Repeat("s", 10<<10)
	large := strings.Repeat("L", 64<<10)
	tests := []struct {
		name    string
		method  string
		body    string
		chunked bool
		key     bool // sent with an Idempotency-Key
		opts    Options
		status  int
	}{
		{"GET without a body is replayed", http.MethodGet, "", false, false, Options{}, 200},
		{"DELETE is replayed", http.MethodDelete, "", false, false, Options{}, 200},
		{"buffered PUT is replayed", http.MethodPut, small, false, false, Options{}, 200},
		{"chunked PUT that fits is buffered and replayed", http.MethodPut, small, true, false, Options{}, 200},
		{"PUT of exactly the buffer size is replayed", http.MethodPut, small, false, false, Options{RetryBufferBytes: int64(len(small))}, 200},
		{"POST without a body is not replayed", http.MethodPost, "", false, false, Options{}, 502},
		{"buffered POST is not replayed", http.MethodPost, small, false, false, Options{}, 502},
		{"buffered PATCH is not replayed", http.MethodPatch, small, false, false, Options{}, 502},
		{"buffered POST with an Idempotency-Key is replayed", http.MethodPost, small, false, true, Options{}, 200},
		{"chunked POST with an Idempotency-Key that fits is replayed", http.MethodPost, small, true, true, Options{}, 200},
		{"POST with an Idempotency-Key larger than the buffer is not replayed", http.MethodPost, large, false, true, Options{RetryBufferBytes: 1 << 10}, 502},
		{"PUT larger than the buffer is not replayed once read", http.MethodPut, large, false, false, Options{RetryBufferBytes: 1 << 10}, 502},
		{"chunked PUT larger than the buffer is not replayed", http.MethodPut, large, true, false, Options{RetryBufferBytes: 1 << 10}, 502},
		{"PUT is not replayed when buffering is off", http.MethodPut, small, false, false, Options{RetryBufferBytes: -1}, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			live := newBackend(t, "live", nil)
			reset, resets := resetter(t)
			p := newPool(reset, live.srv.Listener.Addr().String())
			front, done := serveSync(t, New(p, tt.opts))
			var h http.Header
			if tt.key {
				h = http.Header{"Idempotency-Key": {"k1"}}
			}
			status, answer := sendHeader(t, front, tt.method, tt.body, tt.chunked, h)
			<-done
			if status != tt.status {
				t.Fatalf("got status %d %q; want %d", status, answer, tt.status)
			}
			if resets.Load() != 1 {
				t.Errorf("dying worker got %d requests; want 1", resets.Load())
			}
			dying, alive := p.Get(1), p.Get(2)
			if tt.status != 200 {
				if answer != workerFailed {
					t.Errorf("got answer %q; want %q", answer, workerFailed)
				}
				if live.hits.Load() != 0 {
					t.Errorf("live worker got %d requests; want none, the body must not be sent twice", live.hits.Load())
				}
				if p.Retries() != 0 || dying.Retries() != 0 || dying.Errors() != 1 || p.Errors() != 1 {
					t.Errorf("got retries=%d worker retries=%d worker errors=%d errors=%d; want 0 0 1 1",
						p.Retries(), dying.Retries(), dying.Errors(), p.Errors())
				}
				return
			}
			if answer != "live" {
				t.Errorf("got answer %q; want %q", answer, "live")
			}
			if live.hits.Load() != 1 {
				t.Errorf("live worker got %d requests; want exactly 1", live.hits.Load())
			}
			if got := *live.body.Load(); got != tt.body {
				t.Errorf("live worker got a body of %d bytes; want the %d sent", len(got), len(tt.body))
			}
			if got := live.last.Load().ContentLength; got != int64(len(tt.body)) {
				t.Errorf("live worker got Content-Length %d; want %d", got, len(tt.body))
			}
			if p.Retries() != 1 || dying.Retries() != 1 || dying.Errors() != 1 || p.Errors() != 0 {
				t.Errorf("got retries=%d worker retries=%d worker errors=%d errors=%d; want 1 1 1 0",
					p.Retries(), dying.Retries(), dying.Errors(), p.Errors())
			}
			if alive.Requests() != 1 || alive.Errors() != 0 {
				t.Errorf("live worker counted requests=%d errors=%d; want 1 0", alive.Requests(), alive.Errors())
			}
			if dying.State() != pool.Up {
				t.Errorf("reset worker is %v; want still up (only a refusal marks it down)", dying.State())
			}
		})
	}
}

// secondDies is a worker that answers the first request on each
// connection, keeps the connection, and dies on the second: it reads it
// whole and resets the connection, as a worker killed while it works.
// hits counts the requests it read.
func secondDies(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	addr = acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for n := 1; ; n++ {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			hits.Add(1)
			if n == 2 {
				c.(*net.TCPConn).SetLinger(0)
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	return addr, hits
}

// TestFastPeekOnlyBeforeARequest: the look at a rested connection comes
// before a request's first write only. A later write of the same request
// (a large body, trailers) may find the worker's early answer waiting,
// which is no sign that nothing was sent.
func TestFastPeekOnlyBeforeARequest(t *testing.T) {
	read, done := make(chan struct{}), make(chan struct{})
	t.Cleanup(func() { close(done) })
	addr := acceptLoop(t, func(c net.Conn) {
		buf := make([]byte, 100)
		c.Read(buf)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		close(read)
		<-done // the connection stays open until the test is through
	})
	fw := &fastWorker{conns: map[*fastConn]struct{}{}, dialer: workerDialer()}
	fw.hc = &fasthttp.HostClient{Addr: addr}
	nc, err := fw.dial(addr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := nc.Write([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nab")); err != nil {
		t.Fatal(err)
	}
	<-read
	time.Sleep(2 * peekAfter)
	if _, err := nc.Write([]byte("cd")); err != nil {
		t.Errorf("the rest of a request the worker has begun to answer: got %v; want it written", err)
	}
}

// TestWorkerDiesWithPost: a POST that reached a worker which then died is
// not sent again, by either engine, not even on the same worker over a new
// connection: the worker may have acted on it. With an Idempotency-Key it
// is; and a GET always is.
func TestWorkerDiesWithPost(t *testing.T) {
	tests := []struct {
		method   string
		key      string // the Idempotency-Key; "none" for no header
		status   int
		wantHits int64 // requests the worker read, the first GET's included
	}{
		{http.MethodPost, "none", 502, 2},
		{http.MethodPatch, "none", 502, 2},
		{http.MethodPost, "", 502, 2}, // an empty key is no key, in both engines
		{http.MethodPost, "k1", 200, 3},
		{http.MethodGet, "none", 200, 3},
	}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, tt := range tests {
			t.Run(fmt.Sprintf("%s/%s/key=%q", engine, tt.method, tt.key), func(t *testing.T) {
				addr, hits := secondDies(t)
				p := newPool(addr)
				url := serveEngine(t, engine, p, Options{MaxRetries: -1})
				c := &http.Client{}
				defer c.CloseIdleConnections()
				// The first request leaves a kept-alive connection to
				// the worker, which the second reuses.
				do := func(method string, h http.Header) (int, string) {
					req, _ := http.NewRequest(method, url+"/", strings.NewReader("pay 10"))
					maps.Copy(req.Header, h)
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					data, _ := io.ReadAll(resp.Body)
					return resp.StatusCode, string(data)
				}
				if status, _ := do(http.MethodGet, nil); status != 200 {
					t.Fatalf("first request: got %d; want 200", status)
				}
				var h http.Header
				if tt.key != "none" {
					h = http.Header{"Idempotency-Key": {tt.key}}
				}
				status, answer := do(tt.method, h)
				if status != tt.status {
					t.Errorf("got %d %q; want %d", status, answer, tt.status)
				}
				if got := hits.Load(); got != tt.wantHits {
					t.Errorf("the worker read %d requests; want %d", got, tt.wantHits)
				}
			})
		}
	}
}

// TestNoRetryWithoutAnotherWorker: a retryable failure with no other
// worker up, nor coming (in backoff), answers the failure (502), and
// counts no retry.
func TestNoRetryWithoutAnotherWorker(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			reset, resets := resetter(t)
			p := newPool(reset, deadAddr(t))
			p.Get(2).SetState(pool.Backoff)
			url := serveEngine(t, engine, p, Options{})
			resp, err := http.Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			// fasthttp's client tries a GET on a failed connection once
			// more on the same worker; that is no retry on another.
			if resp.StatusCode != 502 || resets.Load() < 1 || resets.Load() > 2 {
				t.Errorf("got %d after %d attempts; want 502 after 1 (or 2, fasthttp)", resp.StatusCode, resets.Load())
			}
			if p.Retries() != 0 || p.Get(1).Retries() != 0 || p.Errors() != 1 {
				t.Errorf("got retries=%d worker retries=%d errors=%d; want 0 0 1", p.Retries(), p.Get(1).Retries(), p.Errors())
			}
		})
	}
}

// TestRetryWaitsForAWorkerComingUp: a request that failed on its worker
// in a way that may be retried, while no other worker is up, waits for
// one on its way up and gets its answer there, in both engines, instead
// of the 502 of a retry with nowhere to go: the other worker, starting
// (every worker died at once, and this one is back first), or, for a
// request the worker never got (refused), the lone worker's own next
// process.
func TestRetryWaitsForAWorkerComingUp(t *testing.T) {
	for _, lone := range []bool{false, true} {
		for _, engine := range []string{"httputil", "fasthttp"} {
			t.Run(fmt.Sprintf("%s, lone worker %v", engine, lone), func(t *testing.T) {
				b := newBackend(t, "b", nil)
				p := newPool(deadAddr(t), b.srv.Listener.Addr().String())
				comeUp := func() { p.Get(2).SetState(pool.Up) }
				if lone {
					p.Remove(2)
					comeUp = func() {
						p.Get(1).SetProcess(pool.NewProcess(200, b.srv.Listener.Addr().String(), time.Now()), pool.Up)
					}
				} else {
					p.Get(2).SetState(pool.Starting)
				}
				url := serveEngine(t, engine, p, Options{})
				go func() {
					// The first attempt has failed once its worker is
					// down (the refused connection marks it so).
					for p.Get(1).State() != pool.Down {
						time.Sleep(time.Millisecond)
					}
					time.Sleep(50 * time.Millisecond)
					comeUp()
				}()
				status, body := get(t, http.DefaultClient, url+"/", nil)
				if status != http.StatusOK || body != "b" {
					t.Errorf("got %d %q; want 200 %q", status, body, "b")
				}
				if p.Retries() != 1 || b.hits.Load() != 1 {
					t.Errorf("got retries=%d, %d at the worker that came up; want 1 and 1", p.Retries(), b.hits.Load())
				}
			})
		}
	}
}

// TestLoneWorkerDyingWithTheRequest: the balancer's only worker dies
// with a request in hand (it read it, stopped listening and closed the
// connection without an answer, as a process killed does). A GET goes
// once more, to its next process, and gets that one's answer, in both
// engines; a POST, which the dead process may have acted on, gets the
// 502. A request that kills each process it reaches kills two at most.
func TestLoneWorkerDyingWithTheRequest(t *testing.T) {
	for _, method := range []string{"GET", "POST"} {
		for _, engine := range []string{"httputil", "fasthttp"} {
			t.Run(method+"/"+engine, func(t *testing.T) {
				l, err := net.Listen("tcp", "127.0.0.1:0")
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
				died := make(chan struct{})
				go func() {
					c, err := l.Accept()
					if err != nil {
						return
					}
					http.ReadRequest(bufio.NewReader(c))
					l.Close()
					c.Close()
					close(died)
				}()
				next := newBackend(t, "next process", nil)
				p := newPool(l.Addr().String())
				url := serveEngine(t, engine, p, Options{})
				go func() {
					<-died
					time.Sleep(20 * time.Millisecond) // the supervisor's notice of the exit
					p.Get(1).ClearProcess(pool.Down)
					time.Sleep(50 * time.Millisecond) // its restart
					p.Get(1).SetProcess(pool.NewProcess(200, next.srv.Listener.Addr().String(), time.Now()), pool.Up)
				}()
				req, _ := http.NewRequest(method, url+"/", nil)
				resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				want, wantHits := "200 next process", int64(1)
				if method == "POST" {
					want, wantHits = "502 "+strings.TrimSpace(workerFailed), 0
				}
				if got := fmt.Sprintf("%d %s", resp.StatusCode, strings.TrimSpace(string(body))); got != want {
					t.Errorf("got %q; want %q", got, want)
				}
				if next.hits.Load() != wantHits {
					t.Errorf("the next process got %d requests; want %d", next.hits.Load(), wantHits)
				}
			})
		}
	}
}

func TestRetriesBounded(t *testing.T) {
	tests := []struct {
		name       string
		maxRetries int
		attempts   int64
	}{
		{"MaxRetries 1 makes two attempts", 1, 2},
		{"MaxRetries 0 tries each worker once", 0, 3},
		{"negative MaxRetries means no retry", -1, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var addrs []string
			var hits []*atomic.Int64
			for range 3 {
				a, h := resetter(t)
				addrs = append(addrs, a)
				hits = append(hits, h)
			}
			p := newPool(addrs...)
			front := serve(t, New(p, Options{MaxRetries: tt.maxRetries}))
			status, answer := send(t, front, http.MethodGet, "", false)
			if status != 502 || answer != workerFailed {
				t.Errorf("got %d %q; want %d %q", status, answer, 502, workerFailed)
			}
			var attempts, retries, errs int64
			for i, w := range p.Workers() {
				attempts += hits[i].Load()
				retries += w.Retries()
				errs += w.Errors()
			}
			if attempts != tt.attempts {
				t.Errorf("got %d attempts; want %d", attempts, tt.attempts)
			}
			if retries != tt.attempts-1 || p.Retries() != tt.attempts-1 {
				t.Errorf("got worker retries=%d pool retries=%d; want %d", retries, p.Retries(), tt.attempts-1)
			}
			if errs != tt.attempts || p.Errors() != 1 {
				t.Errorf("got worker errors=%d pool errors=%d; want %d and 1", errs, p.Errors(), tt.attempts)
			}
		})
	}
}

func TestRetryable(t *testing.T) {
	reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	stale := fmt.Errorf("write: %w", errStaleConn)
	dialTimeout := &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}
	const (
		resend = true  // an idempotent method, or an Idempotency-Key
		once   = false // POST, PATCH without a key
	)
	tests := []struct {
		name       string
		resendable bool
		err        error
		replayable bool
		bodyRead   bool
		want       bool
	}{
		{"GET reset", resend, reset, true, false, true},
		{"GET at EOF", resend, io.EOF, true, false, true},
		{"buffered POST reset: the worker may have acted on it", once, reset, true, false, false},
		{"buffered POST at EOF", once, io.EOF, true, true, false},
		{"buffered POST refused: never sent", once, refused, true, false, true},
		{"buffered POST on a connection found closed: never sent", once, stale, true, false, true},
		{"buffered POST with an Idempotency-Key reset", resend, reset, true, true, true},
		{"streamed POST reset before it was read", once, reset, false, false, false},
		{"streamed POST refused", once, refused, false, false, true},
		{"streamed PUT reset before it was read", resend, reset, false, false, true},
		{"streamed PUT reset after it was read", resend, reset, false, true, false},
		{"streamed PUT refused after it was read", resend, refused, false, true, false},
		{"refusal as a bare errno", once, syscall.ECONNREFUSED, false, false, true},
		{"buffered POST whose connect timed out: never sent", once, dialTimeout, true, false, true},
		{"streamed POST whose connect timed out", once, dialTimeout, false, false, true},
		{"timeout", resend, &net.OpError{Op: "read", Err: timeoutErr{}}, true, false, false},
		{"deadline", resend, context.DeadlineExceeded, true, false, false},
		{"client gone", resend, fmt.Errorf("%w: %w", context.Canceled, reset), true, false, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := retryable(tt.resendable, tt.err, tt.replayable, tt.bodyRead); got != tt.want {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestTrackedBodyRevoke(t *testing.T) {
	tests := []struct {
		name       string
		readFirst  bool
		wantRevoke bool
	}{
		{"unread body is taken back", false, true},
		{"read body stays with its attempt", true, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := &trackedBody{r: strings.NewReader("abc")}
			if tt.readFirst {
				b.Read(make([]byte, 1))
			}
			if got := b.revoke(); got != tt.wantRevoke {
				t.Fatalf("got revoke %v; want %v", got, tt.wantRevoke)
			}
			if !tt.wantRevoke {
				return
			}
			if _, err := b.Read(make([]byte, 1)); !errors.Is(err, errBodyRevoked) {
				t.Errorf("read after revoke: got %v; want %v", err, errBodyRevoked)
			}
			if !b.revoke() {
				t.Errorf("got a second revoke false; want true")
			}
		})
	}
}

func TestStatusMapping(t *testing.T) {
	req := httptest.NewRequest("GET", "/", nil)
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"no worker", ErrNoWorker, 503},
		{"timeout", &net.OpError{Op: "read", Err: timeoutErr{}}, 504},
		{"refused", &net.OpError{Op: "dial", Err: io.EOF}, 502},
		{"balancer out of descriptors", &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.EMFILE)}, 503},
		{"other", io.ErrUnexpectedEOF, 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got, _ := Status(req, tt.err); got != tt.want {
				t.Errorf("got %d; want %d", got, tt.want)
			}
		})
	}
}

type timeoutErr struct{}

func (timeoutErr) Error() string   { return "timeout" }
func (timeoutErr) Timeout() bool   { return true }
func (timeoutErr) Temporary() bool { return true }

// TestServerSentEventsPassAtOnce: each event must reach the client while
// the worker still holds the stream open, before it sends the next one.
func TestServerSentEventsPassAtOnce(t *testing.T) {
	next := make(chan struct{})
	sse := newBackend(t, "sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 3 {
			fmt.Fprintf(w, "data: %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-next: // the client saw event i
			case <-time.After(10 * time.Second):
				t.Errorf("event %d did not reach the client while the stream was open", i)
				return
			}
		}
	})
	front := serve(t, New(newPool(sse.srv.Listener.Addr().String()), Options{}))
	resp, err := front.Client().Get(front.URL + "/events")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	rd := bufio.NewReader(resp.Body)
	for i := range 3 {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("event %d: %v", i, err)
		}
		if want := fmt.Sprintf("data: %d\n", i); line != want {
			t.Fatalf("got %q; want %q", line, want)
		}
		rd.ReadString('\n') // the blank line closing the event
		next <- struct{}{}
	}
}

func TestAccessLog(t *testing.T) {
	a := newBackend(t, "hello", nil)
	var buf testutil.SyncBuffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	front := serve(t, New(newPool(a.srv.Listener.Addr().String()), Options{AccessLog: log}))
	get(t, front.Client(), front.URL+"/path?q=1", nil)
	// The record is written after the answer went out.
	for deadline := time.Now().Add(5 * time.Second); buf.String() == "" && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var rec struct {
		Msg, Method, URI string
		Status           int
		Bytes            int64
	}
	if err := json.Unmarshal([]byte(buf.String()), &rec); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	if rec.Msg != "access" || rec.Method != "GET" || rec.URI != "/path?q=1" || rec.Status != 200 || rec.Bytes != 5 {
		t.Errorf("got %+v; want access GET /path?q=1 200 5 bytes", rec)
	}
}

// TestAccessLogSkipsInterimAnswers: the status logged is the final
// answer's, not a 103 Early Hints the client got before it (passed on by
// the transport, which carries bodies past 64 KiB).
func TestAccessLogSkipsInterimAnswers(t *testing.T) {
	addr, _ := scriptedWorker(t, "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok")
	var buf testutil.SyncBuffer
	front := serve(t, New(newPool(addr), Options{AccessLog: slog.New(slog.NewJSONHandler(&buf, nil))}))
	req, _ := http.NewRequest("PUT", front.URL+"/up", strings.NewReader(strings.Repeat("x", 100<<10)))
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	for deadline := time.Now().Add(5 * time.Second); buf.String() == "" && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	var rec struct{ Status int }
	if err := json.Unmarshal([]byte(buf.String()), &rec); err != nil {
		t.Fatalf("access log %q: %v", buf.String(), err)
	}
	if resp.StatusCode != 201 || rec.Status != 201 {
		t.Errorf("got %d, logged %d; want 201 both", resp.StatusCode, rec.Status)
	}
}

// TestWorkerMarkedDownReleasesStuckRequests: on either engine, a request
// stuck in a worker that is then marked down (a hung or cut-off backend)
// is sent to another worker at once, not after the upstream timeout; and
// again after the worker came back up and hung once more, a new up
// stretch that the engine must watch anew.
func TestWorkerMarkedDownReleasesStuckRequests(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			arrived := make(chan struct{}, 16)
			hung := newBackend(t, "hung", func(w http.ResponseWriter, r *http.Request) {
				arrived <- struct{}{}
				<-r.Context().Done() // never answers
			})
			live := newBackend(t, "live", nil)
			p := newPool(hung.srv.Listener.Addr().String(), live.srv.Listener.Addr().String())
			url := serveEngine(t, engine, p, Options{UpstreamTimeout: time.Minute})
			for stretch := 1; stretch <= 2; stretch++ {
				// Requests until one is stuck on the hung worker (the
				// others are the live one's).
				done := make(chan string, 1)
				for stuck := false; !stuck; {
					go func() {
						_, body := get(t, http.DefaultClient, url+"/", nil)
						done <- body
					}()
					select {
					case <-arrived:
						stuck = true
					case body := <-done:
						if body != "live" {
							t.Fatalf("stretch %d: got %q; want the live worker's answer", stretch, body)
						}
					}
				}
				p.Get(1).CompareAndSwapState(pool.Up, pool.Down) // what the health check does
				select {
				case body := <-done:
					if body != "live" {
						t.Errorf("stretch %d: got %q; want the live worker's answer", stretch, body)
					}
				case <-time.After(20 * time.Second):
					t.Fatalf("stretch %d: the request stayed stuck on the worker marked down", stretch)
				}
				if p.Retries() != int64(stretch) {
					t.Errorf("stretch %d: got %d retries; want %d", stretch, p.Retries(), stretch)
				}
				p.Get(1).CompareAndSwapState(pool.Down, pool.Up) // back, as after a passed check
			}
		})
	}
}

// TestStaleKeepAlive: a worker that closes idle keep-alive connections
// (Node closes them after 5 s) must not cost a request when an engine
// reuses one it had just closed: not a failure, not even a retry on
// another worker (there is none here).
func TestStaleKeepAlive(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	srv.Config.IdleTimeout = 20 * time.Millisecond
	srv.Start()
	defer srv.Close()
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			p := newPool(srv.Listener.Addr().String())
			url := serveEngine(t, engine, p, Options{})
			c := &http.Client{}
			defer c.CloseIdleConnections()
			for i := range 5 {
				for _, method := range []string{"GET", "POST"} {
					req, _ := http.NewRequest(method, url+"/", strings.NewReader("body"))
					resp, err := c.Do(req)
					if err != nil {
						t.Fatalf("%s %d: %v", method, i, err)
					}
					data, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(data) != "ok" {
						t.Fatalf("%s %d: got %d %q; want 200 %q", method, i, resp.StatusCode, data, "ok")
					}
					time.Sleep(40 * time.Millisecond) // the worker closes the idle connection meanwhile
				}
			}
			if p.Errors() != 0 || p.Retries() != 0 {
				t.Errorf("got errors=%d retries=%d; want 0 and 0", p.Errors(), p.Retries())
			}
		})
	}
}

// TestUpgradePassesThrough: a protocol upgrade (as WebSocket does) is
// proxied, and bytes then flow both ways over the upgraded connection.
// Bytes a client sends right behind its upgrade request, before the 101,
// reach the worker too: net/http's server has them in its reader by
// then, and the ReverseProxy copies from the connection alone
// (golang/go#80875), so they had been dropped.
func TestUpgradePassesThrough(t *testing.T) {
	echo := newBackend(t, "echo", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Upgrade") != "echo" {
			http.Error(w, "want an upgrade", 400)
			return
		}
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
		line, _ := brw.ReadString('\n')
		brw.WriteString("echo: " + line)
		brw.Flush()
	})
	for name, early := range map[string]bool{"bytes after the 101": false, "bytes with the request": true} {
		t.Run(name, func(t *testing.T) {
			p := newPool(echo.srv.Listener.Addr().String())
			front := serve(t, New(p, Options{}))
			var conn net.Conn
			var br *bufio.Reader
			if early {
				conn, br = upgradeWith(t, front.URL, "hello\n")
			} else {
				conn, br = upgradeTo(t, front.URL)
				io.WriteString(conn, "hello\n")
			}
			got, err := br.ReadString('\n')
			if err != nil || got != "echo: hello\n" {
				t.Errorf("got %q %v; want %q", got, err, "echo: hello\n")
			}
			if w := p.Get(1); w.Requests() != 1 || w.InFlight() != 0 {
				t.Errorf("got requests=%d in_flight=%d; want 1 and 0", w.Requests(), w.InFlight())
			}
		})
	}
}

// TestH2CUpgradeNotPassedOn: an upgrade to HTTP/2 over cleartext would
// make the client's connection an HTTP/2 one to one worker, out of the
// balancer's sight (golang/go#80416). Both engines serve it as the
// plain HTTP/1.1 request it also is: the worker sees no Upgrade and no
// HTTP2-Settings, and answers as usual.
func TestH2CUpgradeNotPassedOn(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			a := newBackend(t, "a", nil)
			url := serveEngine(t, engine, newPool(a.srv.Listener.Addr().String()), Options{})
			got := rawExchange(t, strings.TrimPrefix(url, "http://"), "GET /x HTTP/1.1\r\nHost: x\r\n"+
				"Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\nConnection: close\r\n\r\n", false)
			if got != "HTTP/1.1 200 OK" {
				t.Fatalf("got %q; want the worker's 200", got)
			}
			r := a.last.Load()
			if v := r.Header.Get("Upgrade") + r.Header.Get("Http2-Settings"); v != "" {
				t.Errorf("the worker got Upgrade %q and HTTP2-Settings %q; want neither", r.Header.Get("Upgrade"), r.Header.Get("Http2-Settings"))
			}
		})
	}
}

// TestUpgradeKeepsHalfClose: a client that half-closes an upgraded
// connection still gets what the worker sends after it read to the end:
// the half-close reaches the worker as one. (The worker's connection,
// wrapped to keep its answer's header block, had lost CloseWrite, so the
// ReverseProxy closed both ends at the client's half-close.)
func TestUpgradeKeepsHalfClose(t *testing.T) {
	addr := acceptLoop(t, func(c net.Conn) {
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n")
		got, _ := io.ReadAll(br) // to the client's half-close
		io.WriteString(c, "worker saw "+string(got))
	})
	url := serveEngine(t, "httputil", newPool(addr), Options{})
	for _, early := range []string{"", "early "} { // bytes sent with the request, or none
		conn, br := upgradeWith(t, url, early)
		io.WriteString(conn, "ping")
		conn.(*net.TCPConn).CloseWrite()
		got, _ := io.ReadAll(br)
		if want := "worker saw " + early + "ping"; string(got) != want {
			t.Errorf("got %q after the half-close; want %q", got, want)
		}
	}
}

// upgradeTo asks url for an upgrade to the protocol "echo" and fails the
// test unless the answer is a 101; it returns the connection, and its
// reader past the answer.
func upgradeTo(t *testing.T, url string) (net.Conn, *bufio.Reader) {
	t.Helper()
	return upgradeWith(t, url, "")
}

// upgradeWith is upgradeTo, with early sent in the same write as the
// request, before the 101.
func upgradeWith(t *testing.T, url, early string) (net.Conn, *bufio.Reader) {
	t.Helper()
	conn := sendRaw(t, url, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n"+early, 10*time.Second)
	br := bufio.NewReader(conn)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("got %d; want 101", resp.StatusCode)
	}
	return conn, br
}

// TestWrongUpgradeCountedOnce: a worker that switches to a protocol the
// client did not ask for fails the request once: 502, one request and
// one error for the balancer, one error for the worker, no retry.
func TestWrongUpgradeCountedOnce(t *testing.T) {
	var hits atomic.Int64
	bad := newBackend(t, "bad", func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		conn, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer conn.Close()
		brw.WriteString("HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\n")
		brw.Flush()
	})
	p := newPool(bad.srv.Listener.Addr().String(), deadAddr(t))
	front := serve(t, New(p, Options{}))
	resp := rawAnswer(t, front.URL, "GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Errorf("got %d; want 502", resp.StatusCode)
	}
	w := p.Get(1)
	if p.Requests() != 1 || p.Errors() != 1 || p.Retries() != 0 || w.Errors() != 1 || hits.Load() != 1 {
		t.Errorf("got requests=%d errors=%d retries=%d worker errors=%d worker hits=%d; want 1 1 0 1 1",
			p.Requests(), p.Errors(), p.Retries(), w.Errors(), hits.Load())
	}
}

// TestFastHopHeadersBothWays: the fasthttp engine drops hop-by-hop headers
// whatever their case on the way in (sent raw: Go's client would
// canonicalize them), and the worker's on the way out.
func TestFastHopHeadersBothWays(t *testing.T) {
	a := newBackend(t, "a", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Keep-Alive", "timeout=5")
		w.Header().Set("Proxy-Authenticate", "Basic")
		w.Header().Set("X-Kept", "yes")
		io.WriteString(w, "a")
	})
	url := serveFast(t, NewFast(newPool(a.srv.Listener.Addr().String()), Options{}))
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nkeep-alive: 1\r\nPROXY-AUTHORIZATION: secret\r\nte: gzip\r\nX-Kept: yes\r\n\r\n")
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	r := a.last.Load()
	for _, h := range []string{"Keep-Alive", "Proxy-Authorization", "Te"} {
		if v := r.Header.Get(h); v != "" {
			t.Errorf("worker got %s %q; want none", h, v)
		}
	}
	for _, h := range []string{"Keep-Alive", "Proxy-Authenticate"} {
		if v := resp.Header.Get(h); v != "" {
			t.Errorf("client got %s %q; want none", h, v)
		}
	}
	if r.Header.Get("X-Kept") != "yes" || resp.Header.Get("X-Kept") != "yes" {
		t.Errorf("X-Kept lost: worker %q, client %q; want yes", r.Header.Get("X-Kept"), resp.Header.Get("X-Kept"))
	}
}

func TestWorkerUnreachable(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"refused", &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.ECONNREFUSED}}, true},
		{"connect timed out", &net.OpError{Op: "dial", Net: "tcp", Err: timeoutErr{}}, true},
		{"out of descriptors here", &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "socket", Err: syscall.EMFILE}}, false},
		{"out of local ports", &net.OpError{Op: "dial", Net: "tcp", Err: &os.SyscallError{Syscall: "connect", Err: syscall.EADDRNOTAVAIL}}, false},
		{"reset after the connect", &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}, false},
	}
	for _, tt := range tests {
		if got := workerUnreachable(tt.err); got != tt.want {
			t.Errorf("%s: got %v; want %v", tt.name, got, tt.want)
		}
	}
}

func TestBadAuthorityAndPort(t *testing.T) {
	for _, tt := range []struct {
		target string
		want   bool
	}{
		{"/x", false},
		{"/x@y", false},
		{"*", false},
		{"http://x/y", false},
		{"http://x", false},
		{"http://x:80?q=a@b", false},
		{"http://x/a@b", false},
		{"http://user:pw@x/y", true},
		{"http://@x/", true},
		{"http:///y", true},
		{"http://", true},
		{"http://?q", true},
		{"example.com:443", false}, // authority-form: CONNECT's, answered apart
		{"http://:80/a", true},
		{"http://x:abc/", true},
		{"http://[::1]:80/", false},
		{"http://[::1/", true},
	} {
		if got := badAuthority(tt.target); got != tt.want {
			t.Errorf("badAuthority(%q) = %v; want %v", tt.target, got, tt.want)
		}
		if got := badAuthority([]byte(tt.target)); got != tt.want {
			t.Errorf("badAuthority([]byte(%q)) = %v; want %v", tt.target, got, tt.want)
		}
	}
	for _, tt := range []struct {
		host string
		want bool
	}{
		{"", false}, {"x", false}, {"x:80", false}, {"x:", false}, {"[::1]", false}, {"[::1]:80", false},
		{"127.0.0.1:8080", false},
		{"x:abc", true}, {"x:80:80", true}, {"[::1]x", true}, {"[::1]:8a", true}, {"::1", true},
		{":80", true}, {"[::1", true}, {"a]b", true}, {"[zz]:80", true}, {"[127.0.0.1]", true},
	} {
		if got := badHost(tt.host); got != tt.want {
			t.Errorf("badHost(%q) = %v; want %v", tt.host, got, tt.want)
		}
		if got := badHost([]byte(tt.host)); got != tt.want {
			t.Errorf("badHost([]byte(%q)) = %v; want %v", tt.host, got, tt.want)
		}
	}
}

// TestGoneWorkerFinishesItsAnswers: a worker that closes its listener
// while it finishes a request (a graceful stop; or a process on its way
// out) refuses the next connection, and is marked down for it; the
// request it holds still gets its answer, in both engines. Cutting its
// connections, as for a hung worker, lost that answer: a GET went again
// to another worker (and a /dead, which answers and then exits, killed
// that one too), a POST got a 502.
func TestGoneWorkerFinishesItsAnswers(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			closed := make(chan struct{})
			go func() {
				c, err := l.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
					return
				}
				l.Close() // stops listening, with the request in hand
				close(closed)
				time.Sleep(300 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nfrom A")
			}()
			t.Cleanup(func() { l.Close() })
			b := newBackend(t, "from B", nil)
			p := newPool(l.Addr().String(), b.srv.Listener.Addr().String())
			url := serveEngine(t, engine, p, Options{})
			got := make(chan string, 1)
			go func() {
				req, _ := http.NewRequest("POST", url+"/", strings.NewReader("x"))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					got <- err.Error()
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				got <- fmt.Sprintf("%d %s", resp.StatusCode, body)
			}()
			<-closed
			// Round-robin: B, then A again, which refuses, and B.
			for range 2 {
				if status, body := get(t, http.DefaultClient, url+"/", nil); status != 200 || body != "from B" {
					t.Errorf("got %d %q; want 200 from B", status, body)
				}
			}
			if p.Get(1).State() != pool.Down {
				t.Errorf("worker A is %v after refusing a connection; want down", p.Get(1).State())
			}
			if g := <-got; g != "200 from A" {
				t.Errorf("the request A held got %q; want its answer, 200 from A", g)
			}
		})
	}
}

// TestWorkerDownKeepsARefusal: an attempt cut short because its worker
// went down still says when the worker never got the request (a refused
// connection), so that the retry rule sends it on, with one worker too;
// other I/O errors of the cut stay text, so that a cancelled context in
// them does not read as the client's leaving.
func TestWorkerDownKeepsARefusal(t *testing.T) {
	refused := workerDown(&net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)})
	if !errors.Is(refused, pool.ErrWorkerDown) || !notSent(refused) || !retryable(false, refused, true, false) {
		t.Errorf("%v: want it down, not sent, and retryable for a POST", refused)
	}
	cut := workerDown(fmt.Errorf("read: %w", context.Canceled))
	if status, _ := statusOf(cut, false); status != http.StatusBadGateway || notSent(cut) {
		t.Errorf("%v: got status %d, not sent %v; want 502, sent", cut, status, notSent(cut))
	}
}
