package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// TestTimeoutNotRetried: a worker slower than upstream_timeout gets the
// request once, and the client gets 504, on both engines, with one worker
// or two, for GET and POST, and in the httputil engine on either round
// trip (h1 for a small body, http.Transport for a large one). (The
// fasthttp engine had retried fasthttp's ErrTimeout, which is no
// net.Error: a POST ran four times on two workers and the client got 502
// after four timeouts.)
func TestTimeoutNotRetried(t *testing.T) {
	type tc struct {
		engine, method string
		workers, body  int
	}
	var cases []tc
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, workers := range []int{1, 2} {
			for _, method := range []string{"GET", "POST"} {
				cases = append(cases, tc{engine, method, workers, 1})
			}
		}
	}
	cases = append(cases, tc{"httputil", "POST", 2, 100 << 10}, tc{"httputil", "POST", 2, 2 << 20})
	for _, c := range cases {
		t.Run(fmt.Sprintf("%s/%s/%d-workers/%d-byte-body", c.engine, c.method, c.workers, c.body), func(t *testing.T) {
			var hits atomic.Int64
			slow := func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				select {
				case <-time.After(3 * time.Second):
				case <-r.Context().Done():
				}
			}
			var addrs []string
			for range c.workers {
				addrs = append(addrs, newBackend(t, "slow", slow).srv.Listener.Addr().String())
			}
			p := newPool(addrs...)
			url := serveEngine(t, c.engine, p, Options{UpstreamTimeout: 300 * time.Millisecond})
			req, _ := http.NewRequest(c.method, url+"/", strings.NewReader(strings.Repeat("x", c.body)))
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			// No hit at all is a timeout too: on a loaded machine the
			// 2 MiB upload can outlast the 300 ms before the worker's
			// handler runs. Never more than one, and never a retry.
			if resp.StatusCode != 504 || hits.Load() > 1 || p.Retries() != 0 {
				t.Errorf("got %d after %d worker hits, %d retries; want 504 after at most 1, no retry", resp.StatusCode, hits.Load(), p.Retries())
			}
		})
	}
}

// rawWorker records the raw request bytes of each connection's first
// request and answers with resp.
func rawWorker(t *testing.T, resp string) (addr string, got chan string) {
	t.Helper()
	got = make(chan string, 16)
	addr = acceptLoop(t, func(c net.Conn) {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		var raw strings.Builder
		br := bufio.NewReader(io.TeeReader(c, &raw))
		req, err := http.ReadRequest(br)
		if err != nil {
			got <- "ERR " + err.Error() + " raw=" + raw.String()
			return
		}
		io.Copy(io.Discard, req.Body)
		got <- raw.String()
		io.WriteString(c, resp)
	})
	return addr, got
}

// acceptLoop serves each connection to a loopback listener with handle,
// which the connection is closed after, until the test ends.
func acceptLoop(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return l.Addr().String()
}

// TestConnectionNamedHeaders: headers named in Connection are
// hop-by-hop (RFC 9110 7.6.1) and must not reach the worker, nor the
// worker's reach the client.
func TestConnectionNamedHeaders(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nConnection: X-Resp-Hop\r\nX-Resp-Hop: leak\r\nContent-Length: 2\r\n\r\nok")
			url := serveEngine(t, engine, newPool(addr), Options{})
			resp := rawAnswer(t, url, "GET / HTTP/1.1\r\nHost: x\r\nConnection: X-Hop\r\nX-Hop: secret\r\nForwarded: for=6.6.6.6;host=evil\r\n\r\n")
			raw := <-got
			t.Logf("%s: worker got:\n%s\nclient got header %v", engine, raw, resp.Header)
			if strings.Contains(strings.ToLower(raw), "x-hop") {
				t.Errorf("worker got the header the client named in Connection")
			}
			if resp.Header.Get("X-Resp-Hop") != "" {
				t.Errorf("client got the header the worker named in Connection")
			}
			if strings.Contains(raw, "6.6.6.6") {
				t.Errorf("worker got the client's Forwarded header")
			}
		})
	}
}

// scriptedWorker answers the requests of each connection in turn with
// answers[i] (the i-th request overall), raw, whatever they are.
func scriptedWorker(t *testing.T, answers ...string) (addr string, seen *atomic.Int64) {
	t.Helper()
	seen = new(atomic.Int64)
	addr = acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			io.Copy(io.Discard, req.Body)
			i := int(seen.Add(1)) - 1
			if i >= len(answers) {
				return
			}
			io.WriteString(c, answers[i])
		}
	})
	return addr, seen
}

// TestBodyOnHeadNotGivenToNextClient: a worker that wrongly sends
// a body after a HEAD answer (or a 204/304) leaves bytes on the
// kept-alive connection. They must not be read as the answer to the next
// request, another client's: net/http's Transport closes such a
// connection ("Unsolicited response received on idle HTTP channel").
func TestBodyOnHeadNotGivenToNextClient(t *testing.T) {
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 8\r\nX-Evil: 1\r\n\r\nsmuggled"
	cases := []struct {
		name, method, first string
	}{
		{"HEAD with a body", "HEAD", "HTTP/1.1 200 OK\r\nContent-Length: " + fmt.Sprint(len(smuggled)) + "\r\n\r\n" + smuggled},
		{"204 with a body", "GET", "HTTP/1.1 204 No Content\r\n\r\n" + smuggled},
		{"304 with a body", "GET", "HTTP/1.1 304 Not Modified\r\n\r\n" + smuggled},
	}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, tc := range cases {
			t.Run(engine+"/"+tc.name, func(t *testing.T) {
				addr, _ := scriptedWorker(t, tc.first, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest", "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest")
				url := serveEngine(t, engine, newPool(addr), Options{})
				req, _ := http.NewRequest(tc.method, url+"/first", nil)
				c1 := &http.Client{Transport: &http.Transport{}}
				resp, err := c1.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.ReadAll(resp.Body)
				resp.Body.Close()
				time.Sleep(50 * time.Millisecond)                // the stray bytes arrive
				c2 := &http.Client{Transport: &http.Transport{}} // another client
				resp, err = c2.Get(url + "/second")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				t.Logf("%s %s: second client got %d %q X-Evil=%q", engine, tc.name, resp.StatusCode, body, resp.Header.Get("X-Evil"))
				if string(body) != "honest" {
					t.Errorf("second client got %d %q; want its own answer %q", resp.StatusCode, body, "honest")
				}
			})
		}
	}
}

// sendRaw dials addr (a host:port, or a test server's http:// URL),
// sets the connection's deadline d ahead, and writes raw. The connection
// is closed when the test ends.
func sendRaw(t *testing.T, addr, raw string, d time.Duration) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(addr, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(d))
	io.WriteString(c, raw)
	return c
}

// rawAnswer sends raw to addr and returns the answer's head (its body
// read and closed).
func rawAnswer(t *testing.T, addr, raw string) *http.Response {
	t.Helper()
	c := sendRaw(t, addr, raw, 10*time.Second)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp
}

// rawExchange sends raw to addr, half-closing after it when halfClose,
// and returns the first line of what comes back (or the read error).
func rawExchange(t *testing.T, addr, raw string, halfClose bool) string {
	t.Helper()
	c := sendRaw(t, addr, raw, 8*time.Second)
	defer c.Close()
	if halfClose {
		c.(*net.TCPConn).CloseWrite()
	}
	data, err := io.ReadAll(c)
	if len(data) == 0 {
		return fmt.Sprintf("<nothing: %v>", err)
	}
	line, _, _ := strings.Cut(string(data), "\r\n")
	if errors.Is(err, os.ErrDeadlineExceeded) {
		line += leftOpen
	}
	return line
}

// leftOpen ends what rawExchange returns when the balancer had not closed
// the connection by the deadline.
const leftOpen = " (left open)"

// TestHalfCloseNoFake200: a client that sends a whole request and then
// half-closes (printf ... | nc -N) looks gone to net/http's server, which
// cancels the request: 499. The connection must then close without an
// answer; returning from the handler would send an empty 200 OK that no
// worker wrote. The fasthttp engine, whose server cannot tell, looks at
// the client once the answer took over clientLook, and does the same.
func TestHalfCloseNoFake200(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			b := newBackend(t, "real answer", func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(2 * clientLook) // long enough for the fasthttp engine to look
				io.WriteString(w, "real answer")
			})
			p := newPool(b.srv.Listener.Addr().String())
			url := serveEngine(t, engine, p, Options{})
			got := rawExchange(t, strings.TrimPrefix(url, "http://"), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", true)
			t.Logf("half-closed client got %q; worker saw %d requests", got, b.hits.Load())
			if !strings.HasPrefix(got, "<nothing") {
				t.Errorf("a client that left got %q; want nothing sent", got)
			}
		})
	}
}

// TestBadChunkedBodyIs400: a malformed chunked request body is the
// client's fault: 400, not 502 "worker failed" with a WARN log line, and
// no error of the balancer's in /stats.
func TestBadChunkedBodyIs400(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		b := newBackend(t, "ok", nil)
		p := newPool(b.srv.Listener.Addr().String())
		url := serveEngine(t, engine, p, Options{})
		got := rawExchange(t, strings.TrimPrefix(url, "http://"),
			"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n", false)
		t.Logf("%s: %q; pool requests=%d errors=%d", engine, got, p.Requests(), p.Errors())
		if !strings.Contains(got, " 400 ") || p.Requests() != 1 || p.Errors() != 0 {
			t.Errorf("%s: got %q, %d requests, %d errors; want 400, counted as a request and not as an error", engine, got, p.Requests(), p.Errors())
		}
	}
}

// TestFastBodyTooLargeIs413: ServerOptions.MaxBodyBytes says "larger
// gets 413": once the body's first bytes have come, or at once to a
// client that waits for "100 Continue" (which it must not get); a chunked
// body when it passes the limit. No worker sees the request, and the
// balancer counts it as a failed request, as the httputil engine counts a
// body it cannot read: answered, and no error of the balancer's; and
// logged. The connection closes: the rest of the body is never read.
func TestFastBodyTooLargeIs413(t *testing.T) {
	chunk := fmt.Sprintf("%x\r\n%s\r\n", 600<<10, strings.Repeat("x", 600<<10))
	for _, tc := range []struct{ name, raw string }{
		{"Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000000\r\n\r\n" + strings.Repeat("x", 16<<10)},
		{"Expect", "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5000000\r\n\r\n"},
		{"chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + strings.Repeat(chunk, 2)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := newBackend(t, "ok", nil)
			p := newPool(b.srv.Listener.Addr().String())
			var logged testutil.SyncBuffer
			fx := NewFast(p, Options{AccessLog: slog.New(slog.NewTextHandler(&logged, nil))})
			url := serveFastWith(t, fx, ServerOptions{MaxHeaderBytes: 8 << 10, MaxBodyBytes: 1 << 20})
			got := rawExchange(t, strings.TrimPrefix(url, "http://"), tc.raw, false)
			if !strings.Contains(logged.String(), "status=413") {
				t.Errorf("access log %q; want the 413", logged.String())
			}
			t.Logf("limit 1 MiB: %q; worker hits %d, errors %d of %d", got, b.hits.Load(), p.Errors(), p.Requests())
			if !strings.Contains(got, " 413 ") || strings.HasSuffix(got, leftOpen) || b.hits.Load() != 0 || p.Requests() != 1 || p.Errors() != 0 {
				t.Errorf("got %q, %d worker hits, %d errors of %d requests; want 413 and the connection closed, no worker hit, 1 request and no error",
					got, b.hits.Load(), p.Errors(), p.Requests())
			}
		})
	}
}

// TestFast413ReachesUploader: a client still uploading a body over the
// limit reads the 413, rather than a connection reset: the engine reads
// and discards the rest for a while before it closes (a plain close with
// the bytes unread resets the connection, and the client's TCP stack
// drops the answer; 4 tries of 5 failed so).
func TestFast413ReachesUploader(t *testing.T) {
	b := newBackend(t, "ok", nil)
	url := serveFastWith(t, NewFast(newPool(b.srv.Listener.Addr().String()), Options{}),
		ServerOptions{MaxHeaderBytes: 8 << 10, MaxBodyBytes: 1 << 20})
	big := bytes.Repeat([]byte("x"), 5<<20)
	for try := range 5 {
		resp, err := http.Post(url+"/", "application/octet-stream", bytes.NewReader(big))
		if err != nil {
			t.Errorf("try %d: %v; want a 413", try+1, err)
			continue
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge || !resp.Close {
			t.Errorf("try %d: got %d, close %v; want 413 and Connection: close", try+1, resp.StatusCode, resp.Close)
		}
	}
}

// TestTrailersPass: trailers go through both engines, both ways: a
// request's, after a chunked body buffered whole (small) or streamed
// (over the retry buffer), and a worker's answer's. (The httputil engine
// had sent a streamed body's trailer names without their values, and
// dropped a buffered body's; the fasthttp engine dropped them all.)
func TestTrailersPass(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, size := range []int{0, 10, 2 << 20} {
			t.Run(fmt.Sprintf("%s/%d-byte-body", engine, size), func(t *testing.T) {
				b := newBackend(t, "ok", func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("Trailer", "X-Answer-Sum")
					fmt.Fprintf(w, "request trailer %q", r.Trailer.Get("X-Sum"))
					w.Header().Set("X-Answer-Sum", "42")
				})
				url := serveEngine(t, engine, newPool(b.srv.Listener.Addr().String()), Options{})
				pr, pw := io.Pipe()
				go func() { pw.Write([]byte(strings.Repeat("x", size))); pw.Close() }()
				req, _ := http.NewRequest("POST", url+"/", pr)
				req.ContentLength = -1 // chunked, as trailers need
				req.Trailer = http.Header{"X-Sum": {"abc"}}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(got) != `request trailer "abc"` || resp.Trailer.Get("X-Answer-Sum") != "42" {
					t.Errorf("worker saw %s, answer's trailer %q; want \"abc\" and 42", got, resp.Trailer)
				}
			})
		}
	}
}

// TestHopTrailersDropped: hop-by-hop fields in a request's trailer
// section, declared or not, do not reach the worker (RFC 9110 7.6.1); the
// others do. (The fasthttp engine's parser refuses most such names: 400
// is a right answer too.)
func TestHopTrailersDropped(t *testing.T) {
	hop := []string{"X-Hop", "Proxy-Authorization", "Upgrade", "Keep-Alive", "Connection", "Proxy-Connection", "Te"}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, size := range []int{3, 2 << 20} {
			t.Run(fmt.Sprintf("%s/%d-byte-body", engine, size), func(t *testing.T) {
				got := make(chan http.Header, 1)
				b := newBackend(t, "ok", func(w http.ResponseWriter, r *http.Request) { got <- r.Trailer.Clone() })
				url := serveEngine(t, engine, newPool(b.srv.Listener.Addr().String()), Options{})
				var tail strings.Builder
				for _, k := range hop {
					fmt.Fprintf(&tail, "%s: secret\r\n", k)
				}
				status := rawExchange(t, strings.TrimPrefix(url, "http://"), fmt.Sprintf(
					"POST / HTTP/1.1\r\nHost: x\r\nConnection: close, X-Hop\r\nTrailer: X-Sum, Proxy-Authorization\r\n"+
						"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\nX-Sum: abc\r\n%s\r\n",
					size, strings.Repeat("x", size), tail.String()), false)
				if engine == "fasthttp" && strings.Contains(status, " 400 ") {
					return
				}
				if !strings.Contains(status, " 200 ") {
					t.Fatalf("got %q; want 200 (or 400 from fasthttp)", status)
				}
				tr := <-got
				for _, k := range hop {
					if v := tr.Get(k); v != "" {
						t.Errorf("the worker got the hop-by-hop trailer %s: %q", k, v)
					}
				}
				if tr.Get("X-Sum") != "abc" {
					t.Errorf("the worker got trailers %v; want X-Sum: abc among them", tr)
				}
			})
		}
	}
}

// TestFastSidePathBody: the pages served beside the proxy on its
// listener (/stats and the rest) keep the body limit and timeout: a body
// too large gets 413, a stalled one 408, and neither is counted as a
// proxied request. (With streamed bodies, the pages' adaptor had read any
// body whole, and a stalled one's read error as its text.)
func TestFastSidePathBody(t *testing.T) {
	var read atomic.Int64
	side := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data, _ := io.ReadAll(r.Body)
		read.Add(int64(len(data)))
		io.WriteString(w, "stats")
	})
	p := newPool(newBackend(t, "ok", nil).srv.Listener.Addr().String())
	fx := NewFast(p, Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fs := fx.Server(ServerOptions{MaxHeaderBytes: 8 << 10, MaxBodyBytes: 1 << 20, BodyTimeout: 300 * time.Millisecond, ReadTimeout: 5 * time.Second},
		[]string{"/stats"}, side)
	go fs.Serve(ln)
	t.Cleanup(func() { fs.Shutdown(); fx.CloseIdleConnections() })
	for _, tc := range []struct{ name, raw, want string }{
		{"too large", "POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n" + strings.Repeat("a", 16<<10), " 413 "},
		{"too large, Expect", "POST /stats HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2000000\r\n\r\n", " 413 "},
		{"stalled", "POST /stats HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + strings.Repeat("a", 20000), " 408 "},
		{"whole", "POST /stats HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 20000\r\n\r\n" + strings.Repeat("a", 20000), " 200 "},
	} {
		got := rawExchange(t, ln.Addr().String(), tc.raw, false)
		if !strings.Contains(got, tc.want) {
			t.Errorf("%s: got %q; want%s", tc.name, got, tc.want)
		}
	}
	if read.Load() != 20000 || p.Requests() != 0 {
		t.Errorf("the page read %d bytes in all, %d proxied requests counted; want 20000 (the whole body only) and 0", read.Load(), p.Requests())
	}
}

// TestFastHTTP10WithoutHost: an HTTP/1.0 request without Host is valid,
// and both engines forward it, with the worker's address as Host. (The
// fasthttp engine had answered 502 after trying every worker, counting an
// error on each.)
func TestFastHTTP10WithoutHost(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		a, b := newBackend(t, "a", nil), newBackend(t, "b", nil)
		p := newPool(a.srv.Listener.Addr().String(), b.srv.Listener.Addr().String())
		url := serveEngine(t, engine, p, Options{})
		got := rawExchange(t, strings.TrimPrefix(url, "http://"), "GET / HTTP/1.0\r\n\r\n", false)
		t.Logf("%s: %q; pool errors=%d retries=%d worker errors=%d,%d", engine, got, p.Errors(), p.Retries(), p.Get(1).Errors(), p.Get(2).Errors())
		if strings.Contains(got, " 502 ") || p.Get(1).Errors()+p.Get(2).Errors() != 0 {
			t.Errorf("%s: got %q and worker errors; want the request forwarded (or a 400), no worker blamed", engine, got)
		}
	}
}

// TestClientGoneIsNoWorkerError: docs/architecture.md: "client gone
// → 499 (not logged, not a worker failure)". The worker's error count
// (dashboard, balancer_worker_errors_total) must not move, nor its
// responses: the fasthttp engine, which cannot cut the worker's request
// short, gets the answer and drops it.
func TestClientGoneIsNoWorkerError(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			started := make(chan struct{}, 1)
			b := newBackend(t, "slow", func(w http.ResponseWriter, r *http.Request) {
				started <- struct{}{}
				select {
				case <-time.After(5 * clientLook): // long enough for the fasthttp engine to look
				case <-r.Context().Done():
				}
			})
			p := newPool(b.srv.Listener.Addr().String())
			url := serveEngine(t, engine, p, Options{})
			ctx, cancel := context.WithCancel(context.Background())
			req, _ := http.NewRequestWithContext(ctx, "GET", url+"/", nil)
			go func() { <-started; cancel() }()
			_, err := http.DefaultClient.Do(req)
			w := p.Get(1)
			deadline := time.Now().Add(10 * time.Second)
			for (p.Requests() == 0 || w.InFlight() != 0) && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond) // until the proxy is through with it
			}
			t.Logf("client error %v; worker errors=%d requests=%d; pool errors=%d requests=%d", err, w.Errors(), w.Requests(), p.Errors(), p.Requests())
			if w.Errors() != 0 || w.Requests() != 0 || w.InFlight() != 0 || p.Errors() != 0 {
				t.Errorf("a client that left counted as %d worker error(s), %d response(s), %d in flight, %d balancer error(s); want none",
					w.Errors(), w.Requests(), w.InFlight(), p.Errors())
			}
		})
	}
}

// serveWithBodyTimeout serves p through engine with a body timeout of d,
// and a header timeout of hdr for the fasthttp engine's server (net/http's
// is the test server's: none).
func serveWithBodyTimeout(t *testing.T, engine string, p *pool.Pool, d, hdr time.Duration) string {
	t.Helper()
	if engine == "fasthttp" {
		return serveFastWith(t, NewFast(p, Options{}), ServerOptions{MaxHeaderBytes: 8 << 10, ReadTimeout: hdr, BodyTimeout: d})
	}
	return serve(t, New(p, Options{BodyTimeout: d})).URL
}

// TestStalledBodyGets408: a client that announces a body and stalls in
// it is cut off with 408 after body_timeout, rather than holding its
// connection (and the buffer for its body) for ever; no worker sees it.
func TestStalledBodyGets408(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			b := newBackend(t, "ok", nil)
			url := serveWithBodyTimeout(t, engine, newPool(b.srv.Listener.Addr().String()), 200*time.Millisecond, 5*time.Second)
			got := rawExchange(t, strings.TrimPrefix(url, "http://"),
				"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\nabc", false)
			if !strings.Contains(got, " 408 ") || b.hits.Load() != 0 {
				t.Errorf("got %q, worker saw %d requests; want 408 and none", got, b.hits.Load())
			}
		})
	}
}

// TestSlowBodyPasses: a body that keeps coming, a piece every 100 ms for
// 600 ms, reaches the worker whole. The httputil engine's body timeout
// (300 ms here) bounds each wait for the next piece, not the upload; the
// fasthttp engine's bounds the whole body (2 s here), counted from the
// end of the header, not within the header's timeout (200 ms here). And
// a worker that answers after the body timeout is not cut off by it.
func TestSlowBodyPasses(t *testing.T) {
	for _, tc := range []struct {
		engine    string
		bodyLimit time.Duration
	}{{"httputil", 300 * time.Millisecond}, {"fasthttp", 2 * time.Second}} {
		t.Run(tc.engine, func(t *testing.T) {
			b := newBackend(t, "ok", func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(tc.bodyLimit + 100*time.Millisecond)
				io.WriteString(w, "slow ok")
			})
			url := serveWithBodyTimeout(t, tc.engine, newPool(b.srv.Listener.Addr().String()), tc.bodyLimit, 200*time.Millisecond)
			pr, pw := io.Pipe()
			go func() {
				for range 6 {
					pw.Write([]byte("0123456789"))
					time.Sleep(100 * time.Millisecond)
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", url+"/", pr)
			req.ContentLength = -1 // chunked: read to its end, which must clear the body's deadline
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			var seen string
			if p := b.body.Load(); p != nil {
				seen = *p
			}
			if resp.StatusCode != 200 || string(got) != "slow ok" || seen != strings.Repeat("0123456789", 6) {
				t.Errorf("got %d %q, worker got %q; want 200 and the whole body", resp.StatusCode, got, seen)
			}
		})
	}
}

// TestExpectContinueEarlyAnswer: a client sends "Expect: 100-continue"
// with a large body and waits; the worker refuses at once (401) without
// asking for the body. The client gets the 401, not a wait for a body it
// was never asked for (net/http's server skips it only when it finds its
// own request's body as it made it).
func TestExpectContinueEarlyAnswer(t *testing.T) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // the body unread
		io.WriteString(w, "no")
	}))
	t.Cleanup(worker.Close)
	// A body past RetryBufferBytes is streamed: readBody does not ask for it.
	url := serve(t, New(newPool(worker.Listener.Addr().String()), Options{BodyTimeout: 30 * time.Second})).URL
	c := sendRaw(t, url, "POST /up HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2097152\r\n\r\n", 10*time.Second)
	resp, err := http.ReadResponse(bufio.NewReader(c), nil) // past any 100 Continue
	if err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("got %v, %v; want the worker's 401", resp, err)
	}
	resp.Body.Close()
}

// TestBodyTimeoutSlowWorker: a client that sends a large body at full
// speed to a worker that waits before it reads is held back by the
// worker, not stalling: it gets through with a body timeout far shorter
// than the worker's wait, over HTTP/1.1 and h2c alike.
func TestBodyTimeoutSlowWorker(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<19) // 8 MiB
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(time.Second)
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "n=%d", n)
	}))
	t.Cleanup(slow.Close)
	for _, h2 := range []bool{false, true} {
		t.Run(fmt.Sprintf("h2=%v", h2), func(t *testing.T) {
			px := New(newPool(slow.Listener.Addr().String()), Options{BodyTimeout: 300 * time.Millisecond})
			srv := httptest.NewUnstartedServer(px)
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
			srv.Start()
			t.Cleanup(func() { srv.Close(); px.CloseIdleConnections() })
			tr := &http.Transport{}
			if h2 {
				tr.Protocols = new(http.Protocols)
				tr.Protocols.SetUnencryptedHTTP2(true)
			}
			defer tr.CloseIdleConnections()
			resp, err := (&http.Client{Transport: tr}).Post(srv.URL+"/", "application/octet-stream", bytes.NewReader(body))
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if want := fmt.Sprintf("n=%d", len(body)); resp.StatusCode != 200 || string(got) != want || (h2 && resp.ProtoMajor != 2) {
				t.Errorf("got %s %d %q; want 200 %q", resp.Proto, resp.StatusCode, got, want)
			}
		})
	}
}

// TestStalledBodyGets408H2: the body timeout holds over h2c too, where
// it is a timer of the guard's own: a stream that sends part of its body
// and stalls gets 408.
func TestStalledBodyGets408H2(t *testing.T) {
	b := newBackend(t, "ok", nil)
	px := New(newPool(b.srv.Listener.Addr().String()), Options{BodyTimeout: 200 * time.Millisecond})
	srv := httptest.NewUnstartedServer(px)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() { srv.Close(); px.CloseIdleConnections() })
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	defer tr.CloseIdleConnections()
	pr, pw := io.Pipe()
	defer pw.Close()
	go pw.Write([]byte("abc")) // then nothing, until the test ends
	req, _ := http.NewRequest("POST", srv.URL+"/", pr)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.ProtoMajor != 2 || resp.StatusCode != http.StatusRequestTimeout || b.hits.Load() != 0 {
		t.Errorf("got %s %d, worker saw %d requests; want HTTP/2 408 and none", resp.Proto, resp.StatusCode, b.hits.Load())
	}
}

// TestH2HeadChecked: net/http's HTTP/2 server refuses only control bytes
// in a request's fields, so an h2c client could have the worker read a
// request line or Host field that no HTTP/1.1 client gets past the
// balancer. Those get 400 and reach no worker; the rest passes as it
// came. The client speaks raw frames: Go's own Transport refuses to send
// such a method.
func TestH2HeadChecked(t *testing.T) {
	addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	px := New(newPool(addr), Options{})
	srv := httptest.NewUnstartedServer(px)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() { srv.Close(); px.CloseIdleConnections() })
	for _, tc := range []struct {
		method, path, authority string
		want                    string // the status, then the worker's request line and Host
		fields                  [][2]string
	}{
		{"GE T", "/", "x", `400 {"error":"invalid method"}`, nil},
		{"GET", "/x?a b", "x", `400 {"error":"invalid request target"}`, nil},
		{"GET", "/", "a b", `400 {"error":"invalid Host header"}`, nil},
		{"GET", "/", "a/b", `400 {"error":"invalid Host header"}`, nil},
		{"GET", "/", "", `400 {"error":"invalid Host header"}`, nil}, // else the worker's own address
		{"GET", "/", "x", `417 {"error":"unsupported expectation"}`, [][2]string{{"expect", "foo"}}},
		{"GET", "/", "x", "200 GET / HTTP/1.1 Host: x", [][2]string{{"expect", "100-continue"}}},
		{"GET", "/", "x:abc", `400 {"error":"invalid Host header"}`, nil},
		{"get", "/x?a%20b", "x", "200 get /x?a%20b HTTP/1.1 Host: x", nil},
		{"GET", "/a b", "x:8080", "200 GET /a%20b HTTP/1.1 Host: x:8080", nil},
	} {
		status, body := h2Exchange(t, srv.Listener.Addr().String(), tc.method, tc.path, tc.authority, tc.fields...)
		res := status + " " + strings.TrimSpace(body)
		if status == "200" {
			select {
			case raw := <-got:
				line, rest, _ := strings.Cut(raw, "\r\n")
				host, _, _ := strings.Cut(rest, "\r\n")
				res = status + " " + line + " " + host
			case <-time.After(5 * time.Second):
				res += " (worker saw nothing)"
			}
		}
		if res != tc.want {
			t.Errorf("%q %q %q: got %q; want %q", tc.method, tc.path, tc.authority, res, tc.want)
		}
	}
	select {
	case raw := <-got:
		t.Errorf("a refused request reached the worker: %q", raw)
	default:
	}
}

// h2Exchange sends one bodiless request over a new h2c connection to
// addr, in frames written here, and returns the answer's status and body.
// A CONNECT goes without :scheme and :path.
func h2Exchange(t *testing.T, addr, method, path, authority string, fields ...[2]string) (status, body string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range append([][2]string{{":method", method}, {":scheme", "http"}, {":authority", authority}, {":path", path}}, fields...) {
		if method != "CONNECT" || (f[0] != ":scheme" && f[0] != ":path") { // RFC 9113 8.5
			enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
	}
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true}); err != nil {
		t.Fatal(err)
	}
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("%q %q %q: %v before the answer ended (status %q, body %q)", method, path, authority, err, status, body)
		}
		if f.Header().StreamID != 1 {
			continue
		}
		switch f := f.(type) {
		case *http2.MetaHeadersFrame:
			status = f.PseudoValue("status")
		case *http2.DataFrame:
			body += string(f.Data())
		case *http2.RSTStreamFrame:
			t.Fatalf("%q %q %q: stream reset (%v)", method, path, authority, f.ErrCode)
		}
		if f.Header().Flags.Has(http2.FlagHeadersEndStream) { // the same bit on DATA
			return status, body
		}
	}
}

// TestConnectRefused: the balancer carries no tunnel, and a worker that
// answered a CONNECT with a 2xx would have the client take its
// connection for one. Both engines answer 405, as nginx does, close the
// HTTP/1.1 connection (a client may send its tunnel's first bytes at
// once), and count the request as the client's, not as an error.
func TestConnectRefused(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		b := newBackend(t, "tunnel", nil)
		p := newPool(b.srv.Listener.Addr().String())
		url := serveEngine(t, engine, p, Options{})
		c := sendRaw(t, strings.TrimPrefix(url, "http://"), "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01", 8*time.Second)
		all, err := io.ReadAll(c)
		c.Close()
		resp, rerr := http.ReadResponse(bufio.NewReader(bytes.NewReader(all)), &http.Request{Method: "GET"})
		if err != nil || rerr != nil {
			t.Fatalf("%s: read %v, answer %v: %q (want the answer and the connection closed)", engine, err, rerr, all)
		}
		body, _ := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusMethodNotAllowed || string(body) != `{"error":"CONNECT is not supported"}`+"\n" || b.hits.Load() != 0 || p.Requests() != 1 || p.Errors() != 0 {
			t.Errorf("%s: got %d %q, worker saw %d, requests %d errors %d; want 405, none, 1 and 0", engine, resp.StatusCode, body, b.hits.Load(), p.Requests(), p.Errors())
		}
	}
	b := newBackend(t, "tunnel", nil)
	px := New(newPool(b.srv.Listener.Addr().String()), Options{})
	srv := httptest.NewUnstartedServer(px)
	srv.Config.Protocols = new(http.Protocols)
	srv.Config.Protocols.SetUnencryptedHTTP2(true)
	srv.Start()
	t.Cleanup(func() { srv.Close(); px.CloseIdleConnections() })
	if status, body := h2Exchange(t, srv.Listener.Addr().String(), "CONNECT", "", "example.com:443"); status != "405" || b.hits.Load() != 0 {
		t.Errorf("h2c: got %s %q, worker saw %d; want 405 and none", status, body, b.hits.Load())
	}
}

// TestHTTP10ClientKeepsWorkerConnection: both engines speak HTTP/1.1 to
// the workers whatever the client spoke, as nginx does, so requests of
// HTTP/1.0 clients share one kept-alive connection to the worker. (The
// fasthttp engine had sent them on as HTTP/1.0 with Connection: close,
// and the worker closed its connection after each.) The client's own
// connection still closes after its answer, as HTTP/1.0 wants.
func TestHTTP10ClientKeepsWorkerConnection(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		var protos sync.Map
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			protos.Store(r.Proto, true)
			io.WriteString(w, "ok")
		}))
		conns := countConns(srv)
		srv.Start()
		t.Cleanup(srv.Close)
		url := serveEngine(t, engine, newPool(srv.Listener.Addr().String()), Options{})
		for range 3 {
			if got := rawExchange(t, strings.TrimPrefix(url, "http://"), "GET / HTTP/1.0\r\nHost: x\r\n\r\n", false); strings.HasSuffix(got, leftOpen) || !strings.Contains(got, " 200 ") {
				t.Errorf("%s: got %q; want a 200 and the connection closed", engine, got)
			}
		}
		var seen []string
		protos.Range(func(k, _ any) bool { seen = append(seen, k.(string)); return true })
		if n := conns.Load(); n != 1 || len(seen) != 1 || seen[0] != "HTTP/1.1" {
			t.Errorf("%s: the worker got %v over %d connections; want HTTP/1.1 over 1", engine, seen, n)
		}
	}
}
