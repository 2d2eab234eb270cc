package proxy

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// settled waits up to 3 s for the pool's counts to reach want: the
// httputil engine ends a request's count when the ReverseProxy closes the
// worker's body, after the client may have read it.
func settled(t *testing.T, p *pool.Pool, want func() bool) {
	t.Helper()
	for deadline := time.Now().Add(3 * time.Second); !want() && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

func inFlight(p *pool.Pool) int64 {
	var n int64
	for _, w := range p.Workers() {
		n += w.InFlight()
	}
	return n
}

// TestWrongAnswersAre502: a worker's answer that cannot be passed on (a
// status outside 100..599, a 101 to nothing the client asked for, a
// header name with a space) is a 502, at once, in both engines and on
// both of the httputil engine's round trips: the worker's failure,
// counted once, and never retried, for the worker did answer and may have
// acted on the request. (The httputil engine's ReverseProxy panicked on a
// status of 99 and left the worker's request in flight for ever; h1 took
// it for a 1xx and waited for upstream_timeout; the fasthttp engine
// relayed it, and a 101, as a success.)
func TestWrongAnswersAre502(t *testing.T) {
	answers := map[string]string{
		"status 099":        "HTTP/1.1 099 Low\r\nContent-Length: 2\r\n\r\nok",
		"status 600":        "HTTP/1.1 600 High\r\nContent-Length: 2\r\n\r\nok",
		"status 000":        "HTTP/1.1 000 Zero\r\nContent-Length: 2\r\n\r\nok",
		"unasked 101":       "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n",
		"bare 101":          "HTTP/1.1 101 Switching Protocols\r\n\r\n",
		"name with a space": "HTTP/1.1 200 OK\r\nX A: b\r\nContent-Length: 2\r\n\r\nok",
	}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, body := range []int{0, 100 << 10} { // h1, and http.Transport
			for name, answer := range answers {
				t.Run(fmt.Sprintf("%s/%d-byte-body/%s", engine, body, name), func(t *testing.T) {
					a, seenA := scriptedWorker(t, answer, answer)
					b, seenB := scriptedWorker(t, answer, answer)
					p := newPool(a, b)
					url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
					method := "GET"
					if body > 0 {
						method = "PUT"
					}
					req, _ := http.NewRequest(method, url+"/", strings.NewReader(strings.Repeat("x", body)))
					c := &http.Client{Timeout: 5 * time.Second}
					start := time.Now()
					resp, err := c.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
					hits := seenA.Load() + seenB.Load()
					t.Logf("%d in %v; worker hits %d; pool requests %d errors %d retries %d", resp.StatusCode, time.Since(start), hits, p.Requests(), p.Errors(), p.Retries())
					if resp.StatusCode != 502 {
						t.Errorf("got %d; want 502", resp.StatusCode)
					}
					if hits != 1 || p.Retries() != 0 {
						t.Errorf("worker hits %d, retries %d; want 1 and 0", hits, p.Retries())
					}
					if p.Requests() != 1 || p.Errors() != 1 || inFlight(p) != 0 {
						t.Errorf("pool requests %d errors %d in flight %d; want 1, 1, 0", p.Requests(), p.Errors(), inFlight(p))
					}
				})
			}
		}
	}
}

// TestWorkerHeaderBounded: a worker's response header past the bound is a
// 502, in both engines; the httputil engine read it whole, however large
// (a million header lines grew the balancer by hundreds of MB).
func TestWorkerHeaderBounded(t *testing.T) {
	huge := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 1100) + "Content-Length: 2\r\n\r\nok"
	fits := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 12) + "Content-Length: 2\r\n\r\nok"
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, body := range []int{0, 100 << 10} {
			t.Run(fmt.Sprintf("%s/%d-byte-body", engine, body), func(t *testing.T) {
				addr, _ := scriptedWorker(t, huge, fits) // never retried: the second request gets fits
				p := newPool(addr)
				url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
				for _, want := range []int{502, 200} {
					req, _ := http.NewRequest("PUT", url+"/", strings.NewReader(strings.Repeat("x", body)))
					resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != want {
						t.Errorf("got %d; want %d", resp.StatusCode, want)
					}
				}
			})
		}
	}
}

// TestAbsoluteFormTarget: a request line with an absolute URI, of either
// scheme, goes to a worker like any other (RFC 9112 3.2.2: a server
// accepts it); the fasthttp engine answered 502 to an https:// one and
// counted an error on every worker.
func TestAbsoluteFormTarget(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, target := range []string{"http://example.com/e", "https://example.com:444/e"} {
			t.Run(engine+"/"+target, func(t *testing.T) {
				addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				p := newPool(addr)
				url := serveEngine(t, engine, p, Options{})
				resp := rawAnswer(t, url, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 || p.Errors() != 0 {
					t.Fatalf("got %d, %d errors; want 200 and none", resp.StatusCode, p.Errors())
				}
				if raw := <-got; !strings.HasPrefix(raw, "GET /e HTTP/1.1\r\n") {
					t.Errorf("worker got %q; want the path only in its request line", raw)
				}
			})
		}
	}
}

// TestQueryPassesAsSent: the query goes to the worker byte for byte, as
// nginx and HAProxy pass it. The balancer reads no query, so it has no
// reading of one to keep apart from the worker's; the ReverseProxy
// re-encoded a query that net/url cannot parse (a ';', a bad escape), which
// sorted it and dropped the pairs it could not read.
func TestQueryPassesAsSent(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, target := range []string{"/e?a=1;b=2", "/e?x=%zz&y=1", "/e?b=2&a=1", "/e?q=a+b%20c"} {
			t.Run(engine+"/"+target, func(t *testing.T) {
				addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				p := newPool(addr)
				url := serveEngine(t, engine, p, Options{})
				resp := rawAnswer(t, url, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 {
					t.Fatalf("got %d; want 200", resp.StatusCode)
				}
				if raw := <-got; !strings.HasPrefix(raw, "GET "+target+" HTTP/1.1\r\n") {
					t.Errorf("worker got %q; want the target as sent", raw)
				}
			})
		}
	}
}

// TestPathPassesAsSent: the path reaches the worker as the client sent
// it, in both engines, also with bytes that net/url escapes on output ('\',
// '{', '|', '^', a byte over 0x7F): the httputil engine sent them as %XX
// escapes, which a worker may route otherwise, and the fasthttp engine,
// nginx and HAProxy send them raw. A bad % escape in the path gets 400
// from both: net/http's server refuses it, and the fasthttp engine had
// passed it on.
func TestPathPassesAsSent(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, target := range []string{"/e\\x", "/e{a}|^`", "/e\xc3\xa9?q=\xc3\xa9", "/a%2Fb%20c?x=%zz", "/p/;x=1"} {
			t.Run(engine+"/"+target, func(t *testing.T) {
				addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				url := serveEngine(t, engine, newPool(addr), Options{})
				resp := rawAnswer(t, url, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n")
				if resp.StatusCode != 200 {
					t.Fatalf("got %d; want 200", resp.StatusCode)
				}
				if raw := <-got; !strings.HasPrefix(raw, "GET "+target+" HTTP/1.1\r\n") {
					t.Errorf("worker got %q; want the target as sent", raw)
				}
			})
		}
		for _, target := range []string{"/e/%zz", "/e%2", "/%"} {
			t.Run(engine+"/"+target, func(t *testing.T) {
				turnedAway(t, engine, "GET "+target+" HTTP/1.1\r\nHost: a\r\n\r\n", "400")
			})
		}
	}
}

// turnedAway sends raw to a fresh engine over one worker and checks that
// the answer has status, that the worker got nothing, and that nothing
// was counted: a request the server turns away.
func turnedAway(t *testing.T, engine, raw, status string) {
	t.Helper()
	addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	p := newPool(addr)
	url := serveEngine(t, engine, p, Options{})
	if line := rawExchange(t, url, raw, true); !strings.HasPrefix(line, "HTTP/1.1 "+status) {
		t.Errorf("got %q; want %s", line, status)
	}
	select {
	case raw := <-got:
		t.Errorf("worker got %q; want nothing", raw)
	default:
	}
	if p.Requests() != 0 {
		t.Errorf("got %d requests counted; want 0", p.Requests())
	}
}

// TestUnknownExpectationIs417: an Expect other than 100-continue gets
// 417 from both engines, uncounted, and never reaches a worker, as
// net/http's server answers it (RFC 9110 10.1.1); the fasthttp engine had
// dropped the field and passed the request on.
func TestUnknownExpectationIs417(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, value := range []string{"foo", "gzip"} {
			t.Run(engine+"/"+value, func(t *testing.T) {
				turnedAway(t, engine, "GET /e HTTP/1.1\r\nHost: a\r\nExpect: "+value+"\r\n\r\n", "417")
			})
		}
	}
}

// TestTETrailersPasses: a client that takes trailers has the worker told
// so, in both engines, as the ReverseProxy tells it (Go issue 21096); the
// rest of its TE is the hop's own. (The fasthttp engine dropped it all.)
func TestTETrailersPasses(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, tt := range []struct{ fields, want string }{
			{"TE: trailers\r\n", "trailers"},
			{"te: gzip, Trailers\r\n", "trailers"},
			{"TE: gzip\r\nTE: trailers\r\n", "trailers"},
			{"Connection: TE\r\nTE: trailers\r\n", "trailers"},
			{"TE: gzip\r\n", ""},
			{"Trailer: X-Sum\r\n", ""},
		} {
			t.Run(engine+"/"+tt.fields, func(t *testing.T) {
				addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				url := serveEngine(t, engine, newPool(addr), Options{})
				resp := rawAnswer(t, url, "GET /e HTTP/1.1\r\nHost: a\r\n"+tt.fields+"\r\n")
				if resp.StatusCode != 200 {
					t.Fatalf("got %d; want 200", resp.StatusCode)
				}
				req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(<-got)))
				if err != nil {
					t.Fatal(err)
				}
				if te := strings.Join(req.Header.Values("Te"), ", "); te != tt.want {
					t.Errorf("worker got TE %q; want %q", te, tt.want)
				}
			})
		}
	}
}

// TestCookiePassesAsSent: the Cookie fields reach the worker as the
// client sent them, in both engines. The fasthttp engine had fasthttp
// parse them (by walking the header with All) and write them anew, which
// dropped every pair with a '"' or '\' in its value (a JSON cookie, an
// escaped one as Python's http.cookies writes), unquoted the others, and
// merged the fields: a session cookie that the worker set never came back
// to it.
func TestCookiePassesAsSent(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, cookies := range [][]string{
			{`j={"a":1}; q="a\054b"; k=v`},
			{`c="q v"; =x; a=1;b`},
			{"a=1", "b=2"},
		} {
			t.Run(engine+"/"+strings.Join(cookies, "|"), func(t *testing.T) {
				addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				url := serveEngine(t, engine, newPool(addr), Options{})
				head := "GET /e HTTP/1.1\r\nHost: a\r\n"
				for _, c := range cookies {
					head += "Cookie: " + c + "\r\n"
				}
				resp := rawAnswer(t, url, head+"\r\n")
				if resp.StatusCode != 200 {
					t.Fatalf("got %d; want 200", resp.StatusCode)
				}
				req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(<-got)))
				if err != nil {
					t.Fatal(err)
				}
				if got := req.Header.Values("Cookie"); !slices.Equal(got, cookies) {
					t.Errorf("worker got Cookie %q; want %q", got, cookies)
				}
			})
		}
	}
}

// TestBadHeaderNameIs400: a request header name that is no token (here
// "Transfer Encoding", which a lenient worker might read as framing) gets
// 400 and never reaches a worker, in both engines.
func TestBadHeaderNameIs400(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			url := serveEngine(t, engine, newPool(addr), Options{})
			line := rawExchange(t, url, "POST /e HTTP/1.1\r\nHost: a\r\nTransfer Encoding: chunked\r\nContent-Length: 4\r\n\r\nabcd", true)
			if !strings.HasPrefix(line, "HTTP/1.1 400") {
				t.Errorf("got %q; want 400", line)
			}
			select {
			case raw := <-got:
				t.Errorf("worker got %q", raw)
			case <-time.After(100 * time.Millisecond):
			}
		})
	}
}

// TestBrokenBodyIsWorkerError: a worker that dies in the middle of its
// answer's body failed, whatever the client got by then: the httputil
// engine (which has sent the header on) counted it a success, the fasthttp
// engine (which answers 502) an error.
func TestBrokenBodyIsWorkerError(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			addr := acceptLoop(t, func(c net.Conn) {
				if _, err := http.ReadRequest(bufio.NewReader(c)); err == nil {
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcde")
				}
			})
			p := newPool(addr)
			// No retries: one failed attempt, counted once (with
			// them, the lone worker's try again fails the same way).
			url := serveEngine(t, engine, p, Options{MaxRetries: -1})
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Get(url + "/")
			if err == nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			w := p.Get(1)
			settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
			t.Logf("client: %v; pool requests %d errors %d; worker requests %d errors %d in flight %d", err, p.Requests(), p.Errors(), w.Requests(), w.Errors(), w.InFlight())
			if p.Requests() != 1 || p.Errors() != 1 || w.Requests() != 0 || w.Errors() != 1 || w.InFlight() != 0 {
				t.Errorf("want pool requests 1 errors 1, worker requests 0 errors 1 in flight 0")
			}
		})
	}
}

// TestHopResponseTrailersDropped: hop-by-hop fields in a worker's
// trailer section (those of RFC 9110 7.6.1, and those its Connection
// header names) do not reach the client; the others do. (The httputil
// engine passed them on: the ReverseProxy cleans the header section
// only. The fasthttp engine's client refuses them: a 502 leaks nothing.)
func TestHopResponseTrailersDropped(t *testing.T) {
	answer := "HTTP/1.1 200 OK\r\nTrailer: X-Sum\r\nConnection: X-Hop\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"2\r\nok\r\n0\r\nX-Sum: abc\r\nX-Hop: secret\r\nKeep-Alive: secret\r\nProxy-Authorization: secret\r\n\r\n"
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			addr, _ := scriptedWorker(t, answer)
			url := serveEngine(t, engine, newPool(addr), Options{})
			resp, err := http.Get(url + "/")
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			t.Logf("%s: %d %q trailers %v", engine, resp.StatusCode, body, resp.Trailer)
			if engine == "fasthttp" && resp.StatusCode == 502 {
				return // fasthttp's client refuses such trailers: nothing leaks
			}
			for _, k := range []string{"X-Hop", "Keep-Alive", "Proxy-Authorization"} {
				if v := resp.Trailer.Get(k); v != "" {
					t.Errorf("the client got the hop-by-hop trailer %s: %q", k, v)
				}
			}
			if resp.Trailer.Get("X-Sum") != "abc" {
				t.Errorf("the client got trailers %v; want X-Sum: abc among them", resp.Trailer)
			}
		})
	}
}

// TestSwitchedConnNotReused: a connection on which a worker answered 101
// (unasked: a 502) speaks another protocol from then on; what comes on it
// next must never be read as another request's answer. (The fasthttp
// engine's client put it back in its pool, and the next client got the
// bytes the worker sent after the switch.)
func TestSwitchedConnNotReused(t *testing.T) {
	for _, tc := range []struct{ name, before string }{
		{"101", ""},
		// An interim answer first: the fasthttp engine looked at an
		// answer's first bytes only, and reused the connection.
		{"103 then 101", "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"},
		// Status lines fasthttp reads that a look at the first bytes
		// alone misread: cut short, after a blank line, two spaces.
		{"103 cut short, then 101", "HTTP/1.1 1" + split + "03 Early Hints\r\n\r\n"},
		{"blank line, 101", "\r\n"},
		{"two spaces, 101", "HTTP/1.1  103 Early Hints\r\n\r\n"},
	} {
		for _, engine := range []string{"httputil", "fasthttp"} {
			t.Run(tc.name+"/"+engine, func(t *testing.T) { testSwitchedConnNotReused(t, engine, tc.before) })
		}
	}
}

// split marks where a scripted answer is written in two parts.
const split = "<split>"

func testSwitchedConnNotReused(t *testing.T, engine, before string) {
	var n atomic.Int64
	addr := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			if n.Add(1) == 1 {
				first, rest, cut := strings.Cut(before, split)
				if cut {
					io.WriteString(c, first)
					time.Sleep(3 * time.Millisecond)
					before = rest
				}
				io.WriteString(c, before+"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: foo\r\n\r\n")
				time.Sleep(3 * time.Millisecond)
				io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled")
				continue
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nhonest")
		}
	})
	// No retries: request 1 gets the failure it met, not a try again
	// on a new connection.
	url := serveEngine(t, engine, newPool(addr), Options{MaxRetries: -1})
	for i, want := range []int{502, 200} {
		time.Sleep(4 * time.Millisecond)
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{}}).Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != want || (want == 200 && string(body) != "honest") {
			t.Errorf("request %d: got %d %q; want %d", i+1, resp.StatusCode, body, want)
		}
	}
}

// TestTransportHeaderBoundNotRetried: a response header over the bound on
// the http.Transport path (a body over h1's 64 KiB) is an answer, as on
// h1: one worker hit, no retry.
func TestTransportHeaderBoundNotRetried(t *testing.T) {
	huge := "HTTP/1.1 200 OK\r\n" + strings.Repeat("X-Big: "+strings.Repeat("b", 1000)+"\r\n", 20) + "Content-Length: 2\r\n\r\nok"
	a, seenA := scriptedWorker(t, huge, huge)
	b, seenB := scriptedWorker(t, huge, huge)
	p := newPool(a, b)
	url := serveEngine(t, "httputil", p, Options{})
	req, _ := http.NewRequest("PUT", url+"/", strings.NewReader(strings.Repeat("x", 100<<10)))
	resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if hits := seenA.Load() + seenB.Load(); resp.StatusCode != 502 || hits != 1 || p.Retries() != 0 {
		t.Errorf("got %d after %d worker hits, %d retries; want 502 after 1, none", resp.StatusCode, hits, p.Retries())
	}
}

// TestH1HeaderBoundExact: h1 bounds a response header as the Transport
// and the fasthttp engine do, at 16 KiB: one of 20 KiB is refused on
// either of the httputil engine's paths.
func TestH1HeaderBoundExact(t *testing.T) {
	answer := "HTTP/1.1 200 OK\r\nSet-Cookie: a=" + strings.Repeat("c", 20<<10) + "\r\nContent-Length: 2\r\n\r\nok"
	for _, body := range []int{0, 100 << 10} {
		addr, _ := scriptedWorker(t, answer)
		url := serveEngine(t, "httputil", newPool(addr), Options{})
		req, _ := http.NewRequest("PUT", url+"/", strings.NewReader(strings.Repeat("x", body)))
		resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 502 {
			t.Errorf("%d-byte body: a 20 KiB header got %d; want 502", body, resp.StatusCode)
		}
	}
}

// TestFastShutdownEndsAWaitWith503: fasthttp's server ends every
// request's context as it shuts down; a request waiting for a place at
// its worker then gets a 503 and a closed connection, not the silence
// kept for a client that left.
func TestFastShutdownEndsAWaitWith503(t *testing.T) {
	p := pool.New(new(pool.RoundRobin))
	p.SetMaxInFlight(1)
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(100, newBackend(t, "ok", nil).srv.Listener.Addr().String(), time.Now()), pool.Up)
	p.Add(w)
	held, _ := w.BeginWait(context.Background(), time.Second) // the one place, taken
	defer w.End(held, true, false)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fx := NewFast(p, Options{UpstreamTimeout: 10 * time.Second})
	fs := fx.Server(ServerOptions{MaxHeaderBytes: 8 << 10}, nil, nil)
	go fs.Serve(ln)
	defer fx.CloseIdleConnections()
	got := make(chan string, 1)
	go func() { got <- rawExchange(t, ln.Addr().String(), "GET / HTTP/1.1\r\nHost: x\r\n\r\n", false) }()
	for deadline := time.Now().Add(5 * time.Second); w.InFlight() < 2 && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond) // until the request waits for the place
	}
	if err := fs.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if line := <-got; line != "HTTP/1.1 503 Service Unavailable" {
		t.Errorf("the waiting request got %q; want a 503 and the connection closed", line)
	}
}

// TestWorkerMaxConns: with the requests at a worker bounded, the ones
// past the bound wait in the balancer and all get their answer, in both
// engines and on both of the httputil engine's round trips; the worker
// never has more at once. A wait past upstream_timeout is a 503.
func TestWorkerMaxConns(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, body := range []int{0, 100 << 10} {
			t.Run(fmt.Sprintf("%s/%d-byte-body", engine, body), func(t *testing.T) {
				var now, most atomic.Int64
				slow := func(w http.ResponseWriter, r *http.Request) {
					n := now.Add(1)
					for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
					}
					time.Sleep(50 * time.Millisecond)
					now.Add(-1)
				}
				p := pool.New(new(pool.RoundRobin))
				p.SetMaxInFlight(2)
				w := pool.NewWorker(1)
				w.SetProcess(pool.NewProcess(100, newBackend(t, "slow", slow).srv.Listener.Addr().String(), time.Now()), pool.Up)
				p.Add(w)
				url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
				codes := make(chan int, 6)
				for range 6 {
					go func() {
						req, _ := http.NewRequest("PUT", url+"/", strings.NewReader(strings.Repeat("x", body)))
						resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
						if err != nil {
							codes <- 0
							return
						}
						io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						codes <- resp.StatusCode
					}()
				}
				for range 6 {
					if c := <-codes; c != 200 {
						t.Errorf("got %d; want 200", c)
					}
				}
				if most.Load() != 2 {
					t.Errorf("the worker had up to %d requests at once; want 2", most.Load())
				}
			})
		}
	}
	t.Run("wait past upstream_timeout", func(t *testing.T) {
		p := pool.New(new(pool.RoundRobin))
		p.SetMaxInFlight(1)
		w := pool.NewWorker(1)
		w.SetProcess(pool.NewProcess(100, newBackend(t, "slow", func(http.ResponseWriter, *http.Request) { time.Sleep(time.Second) }).srv.Listener.Addr().String(), time.Now()), pool.Up)
		p.Add(w)
		url := serveEngine(t, "httputil", p, Options{UpstreamTimeout: 2 * time.Second})
		held, _ := w.BeginWait(context.Background(), time.Second) // the one place, taken
		defer w.End(held, true, false)
		resp, err := http.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != 503 {
			t.Errorf("got %d; want 503 after the wait", resp.StatusCode)
		}
	})
}

// TestClosingAnswerDropsTheHeadersItNames: a worker's "Connection: close,
// X-Secret" makes X-Secret hop-by-hop; it must not reach the client.
// (net/http's ReadResponse deletes a Connection header holding "close",
// and the names it listed with it, before the ReverseProxy could remove
// them; so does http.Transport, which carries the httputil engine's
// large bodies: there X-Secret reached the client.)
func TestClosingAnswerDropsTheHeadersItNames(t *testing.T) {
	answer := "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: s\r\nConnection: X-Other\r\nX-Other: o\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok"
	hints := "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Kept\r\n\r\n"
	// As net/http reads them too: lines ending in a bare LF before a
	// CRLF blank line, and a Connection field folded over two lines.
	mixed := "HTTP/1.1 200 OK\nConnection: close, X-Secret\nX-Secret: s\nConnection: X-Other\nX-Other: o\nX-Kept: k\nContent-Length: 2\n\r\nok"
	folded := "HTTP/1.1 200 OK\r\nConnection: close,\r\n X-Secret\r\nX-Secret: s\r\nConnection: X-Other\r\nX-Other: o\r\nX-Kept: k\r\nContent-Length: 2\r\n\r\nok"
	large := strings.Repeat("b", 2*h1MaxBody)
	cases := []struct {
		name, engine, body, answer string
	}{
		{"httputil", "httputil", "", answer},
		{"fasthttp", "fasthttp", "", answer},
		{"httputil/large body", "httputil", large, answer},
		{"httputil/large body/after early hints", "httputil", large, hints + answer},
		{"fasthttp/large body", "fasthttp", large, answer},
		{"httputil/mixed line ends", "httputil", "", mixed},
		{"httputil/large body/mixed line ends", "httputil", large, mixed},
		{"httputil/folded", "httputil", "", folded},
		{"httputil/large body/folded", "httputil", large, folded},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, _ := scriptedWorker(t, tc.answer, tc.answer)
			p := newPool(a)
			url := serveEngine(t, tc.engine, p, Options{})
			c := &http.Client{Timeout: 5 * time.Second}
			method := "GET"
			if tc.body != "" {
				method = "POST"
			}
			req, _ := http.NewRequest(method, url+"/", strings.NewReader(tc.body))
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Fatalf("got %d %q; want 200 ok", resp.StatusCode, body)
			}
			for _, name := range []string{"X-Secret", "X-Other"} {
				if v := resp.Header.Get(name); v != "" {
					t.Errorf("%s: %q reached the client; want it removed", name, v)
				}
			}
			if resp.Header.Get("X-Kept") != "k" {
				t.Errorf("X-Kept: got %q; want k", resp.Header.Get("X-Kept"))
			}
		})
	}
}

// TestUpgradeNamesCompareInASCII: a worker that switches to a protocol
// whose name matches the one asked only under Unicode folding (the Kelvin
// sign for a k) gets a 502, counted once, and its connection closed.
// (badAnswer let it through with strings.EqualFold; the ReverseProxy then
// refused it on its own, which counted the error twice and left the
// worker's connection open.)
func TestUpgradeNamesCompareInASCII(t *testing.T) {
	closed := make(chan struct{}, 1)
	addr := acceptLoop(t, func(c net.Conn) {
		defer func() { closed <- struct{}{} }()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		br := bufio.NewReader(c)
		if _, err := http.ReadRequest(br); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websoc\u212aet\r\n\r\n")
		br.ReadByte() // until the balancer closes it
	})
	p := newPool(addr)
	url := serveEngine(t, "httputil", p, Options{})
	resp := rawAnswer(t, url, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Errorf("got %d; want 502", resp.StatusCode)
	}
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Error("the worker's connection is still open 5 s after the 502")
	}
	settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
	if p.Requests() != 1 || p.Errors() != 1 || inFlight(p) != 0 {
		t.Errorf("pool requests %d errors %d in flight %d; want 1, 1, 0", p.Requests(), p.Errors(), inFlight(p))
	}
}

// TestUnprintableUpgradeIs400: a client that asks to switch to a protocol
// whose name is not printable ASCII gets a 400, the worker never sees it,
// and it is no error of the balancer's. (The ReverseProxy refuses to
// send it, through the error handler: a 502, counted as a failure.)
func TestUnprintableUpgradeIs400(t *testing.T) {
	addr, seen := scriptedWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	p := newPool(addr)
	url := serveEngine(t, "httputil", p, Options{})
	resp := rawAnswer(t, url, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: w\xe9b\r\n\r\n")
	if resp.StatusCode != 400 || seen.Load() != 0 {
		t.Errorf("got %d after %d worker hits; want 400 after none", resp.StatusCode, seen.Load())
	}
	if p.Requests() != 1 || p.Errors() != 0 {
		t.Errorf("pool requests %d errors %d; want 1 and 0", p.Requests(), p.Errors())
	}
}

// TestFastAnswerBounded: the fasthttp engine, which holds a worker's
// answer whole in memory, takes a body up to MaxResponseBytes and answers
// 502 to a larger one, announced or chunked: the worker's failure, counted
// once and not retried. (It held any answer whole, however large.)
func TestFastAnswerBounded(t *testing.T) {
	const limit = 1 << 10
	chunked := func(n int) string {
		return "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + fmt.Sprintf("%x\r\n%s\r\n0\r\n\r\n", n, strings.Repeat("c", n))
	}
	sized := func(n int) string {
		return fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", n, strings.Repeat("s", n))
	}
	for name, tt := range map[string]struct {
		method, answer string
		want           int
	}{
		"announced, at the bound": {"GET", sized(limit), 200},
		"announced, past it":      {"GET", sized(limit + 1), 502},
		"chunked, at the bound":   {"GET", chunked(limit), 200},
		"chunked, past it":        {"GET", chunked(limit + 1), 502},
		// No body comes: the length only says what a GET would get.
		"HEAD, announced past it": {"HEAD", fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n", limit+1), 200},
	} {
		t.Run(name, func(t *testing.T) {
			a, seenA := scriptedWorker(t, tt.answer, tt.answer)
			b, seenB := scriptedWorker(t, tt.answer, tt.answer)
			p := newPool(a, b)
			url := serveEngine(t, "fasthttp", p, Options{MaxResponseBytes: limit})
			req, _ := http.NewRequest(tt.method, url+"/", nil)
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Fatalf("got %d; want %d", resp.StatusCode, tt.want)
			}
			if tt.want == 200 && tt.method == "GET" && len(body) != limit {
				t.Errorf("got a body of %d bytes; want %d", len(body), limit)
			}
			wantErrors := int64(0)
			if tt.want == 502 {
				wantErrors = 1
			}
			if hits := seenA.Load() + seenB.Load(); hits != 1 || p.Retries() != 0 || p.Errors() != wantErrors {
				t.Errorf("worker hits %d, retries %d, errors %d; want 1, 0, %d", hits, p.Retries(), p.Errors(), wantErrors)
			}
		})
	}
}

// TestFastDropsExpect: the fasthttp engine holds a request's body whole
// before it forwards it, so it does not pass on "Expect: 100-continue": a
// worker would answer a 100 first, for nothing, and a connection that
// carried an interim answer is not reused.
func TestFastDropsExpect(t *testing.T) {
	for _, body := range []string{"hello", ""} {
		t.Run(fmt.Sprintf("%d-byte body", len(body)), func(t *testing.T) {
			addr, got := rawWorker(t, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
			url := serveEngine(t, "fasthttp", newPool(addr), Options{})
			resp := rawAnswer(t, url, fmt.Sprintf("POST / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
			if resp.StatusCode != 100 && resp.StatusCode != 200 {
				t.Fatalf("got %d; want 200 (after a 100)", resp.StatusCode)
			}
			raw := <-got
			if strings.Contains(strings.ToLower(raw), "\r\nexpect:") || !strings.HasSuffix(raw, "\r\n\r\n"+body) {
				t.Errorf("the worker got %q; want the body and no Expect", raw)
			}
		})
	}
}

// TestEarlyHintsKeepEveryRequest: a worker that sends 103 Early Hints
// before each answer spends every connection it answers on; the requests
// that find one of them in the fasthttp engine's pool go out on a new
// connection in its place, never failed. (Failing the write spent one of
// fasthttp's two tries, and a second spent one made a 502 of a request the
// worker never saw.)
func TestEarlyHintsKeepEveryRequest(t *testing.T) {
	const answer = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	var seen atomic.Int64
	addr := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for {
			if _, err := http.ReadRequest(br); err != nil {
				return
			}
			seen.Add(1)
			time.Sleep(20 * time.Millisecond) // so that the first ones overlap
			io.WriteString(c, answer)
		}
	})
	p := newPool(addr)
	url := serveEngine(t, "fasthttp", p, Options{})
	c := &http.Client{Timeout: 5 * time.Second}
	get := func() int {
		req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
		return code(t, c, req)
	}
	for range 3 {
		var wg sync.WaitGroup
		codes := make([]int, 4)
		for i := range codes {
			wg.Go(func() { codes[i] = get() })
		}
		wg.Wait()
		for i, code := range codes {
			if code != 200 {
				t.Errorf("request %d: got %d; want 200", i, code)
			}
		}
	}
	if code := get(); code != 200 {
		t.Errorf("the last request: got %d; want 200", code)
	}
	if p.Errors() != 0 || p.Retries() != 0 || seen.Load() != 13 {
		t.Errorf("errors %d, retries %d, worker saw %d requests; want 0, 0, 13", p.Errors(), p.Retries(), seen.Load())
	}
}

// TestUpgradeTokenAsTheReverseProxyReadsIt: "upgrade" in a Connection
// header is found as the ReverseProxy finds it, trimmed of spaces and tabs
// only: a worker's 101 whose token a no-break space pads is refused once,
// by badAnswer (the ReverseProxy sees no switch asked for), not counted a
// success first.
func TestUpgradeTokenAsTheReverseProxyReadsIt(t *testing.T) {
	addr, _ := scriptedWorker(t, "HTTP/1.1 101 Switching Protocols\r\nConnection: \u00a0Upgrade\r\nUpgrade: websocket\r\n\r\n")
	p := newPool(addr)
	url := serveEngine(t, "httputil", p, Options{})
	resp := rawAnswer(t, url, "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	if resp.StatusCode != 502 {
		t.Errorf("got %d; want 502", resp.StatusCode)
	}
	settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
	if p.Requests() != 1 || p.Errors() != 1 {
		t.Errorf("pool requests %d errors %d; want 1 and 1", p.Requests(), p.Errors())
	}
}

// TestRedialKeepsTheWriteTimeout: a request that goes out on a new
// connection in place of a spent one keeps the write timeout fasthttp set
// on the old one: a worker that never reads it is a 504 after
// UpstreamTimeout, not a request that hangs. (The new connection had no
// deadline.)
func TestRedialKeepsTheWriteTimeout(t *testing.T) {
	release := make(chan struct{})
	var conns atomic.Int64
	addr := acceptLoop(t, func(c net.Conn) {
		if conns.Add(1) > 1 {
			c.(*net.TCPConn).SetReadBuffer(4 << 10)
			<-release // never reads
			return
		}
		if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
			return
		}
		io.WriteString(c, "HTTP/1.1 103 Early Hints\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		<-release
	})
	p := newPool(addr)
	url := serveEngine(t, "fasthttp", p, Options{UpstreamTimeout: time.Second})
	// Before the server's own cleanup, which waits for its handlers: a
	// hung upload's ends when the worker's side closes.
	t.Cleanup(func() { close(release) })
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Get(url + "/") // spends the connection
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	resp, err = c.Post(url+"/", "application/octet-stream", bytes.NewReader(make([]byte, 4<<20-1)))
	if err != nil {
		t.Fatalf("the upload got no answer: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 504 && resp.StatusCode != 502 {
		t.Errorf("got %d; want 504 (or 502)", resp.StatusCode)
	}
}

// TestStreamedAnswerOutlastsUpstreamTimeout: upstream_timeout bounds the
// waits for a worker's answer, not the time its whole body takes: a body
// that comes in pieces, each gap shorter than the timeout, reaches the
// client whole, in both engines. (The fasthttp engine had its client's
// ReadTimeout bound the whole answer, and answered 504 to a download
// longer than the timeout after the worker had done the work.) The
// fasthttp engine, which holds an answer whole and cannot see its client
// leave meanwhile, still gives up on a body that stops for longer.
func TestStreamedAnswerOutlastsUpstreamTimeout(t *testing.T) {
	done := make(chan struct{})
	t.Cleanup(func() { close(done) })
	worker := func(gap time.Duration) string {
		return acceptLoop(t, func(c net.Conn) {
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 15\r\n\r\naaaaa")
			for _, piece := range []string{"bbbbb", "ccccc"} {
				select {
				case <-time.After(gap):
				case <-done:
					return
				}
				if _, err := io.WriteString(c, piece); err != nil {
					return
				}
			}
		})
	}
	client := &http.Client{Timeout: 10 * time.Second}
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			url := serveEngine(t, engine, newPool(worker(600*time.Millisecond)), Options{UpstreamTimeout: time.Second})
			if code, body := get(t, client, url+"/", nil); code != 200 || body != "aaaaabbbbbccccc" {
				t.Errorf("got %d %q; want 200 and the whole body", code, body)
			}
		})
	}
	t.Run("fasthttp/stalled", func(t *testing.T) {
		url := serveEngine(t, "fasthttp", newPool(worker(3*time.Second)), Options{UpstreamTimeout: time.Second})
		if code, _ := get(t, client, url+"/", nil); code != 504 {
			t.Errorf("got %d; want 504 for a body that stopped past upstream_timeout", code)
		}
	})
}

// TestNoContentTypeAdded: an answer without a Content-Type reaches the
// client without one, in both engines and on both of the httputil
// engine's round trips (net/http's server guessed one from the body);
// one the worker sent passes as it was.
func TestNoContentTypeAdded(t *testing.T) {
	answers := map[string]string{
		"":                "HTTP/1.1 200 OK\r\nContent-Length: 31\r\n\r\n<html><script>1</script></html>",
		"application/xyz": "HTTP/1.1 200 OK\r\nContent-Type: application/xyz\r\nContent-Length: 2\r\n\r\nok",
	}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for _, body := range []int{0, 100 << 10} { // h1, and http.Transport
			for want, answer := range answers {
				t.Run(fmt.Sprintf("%s/%d-byte-body/%q", engine, body, want), func(t *testing.T) {
					a, _ := scriptedWorker(t, answer)
					url := serveEngine(t, engine, newPool(a), Options{UpstreamTimeout: 10 * time.Second})
					method := "GET"
					if body > 0 {
						method = "PUT"
					}
					req, _ := http.NewRequest(method, url+"/", strings.NewReader(strings.Repeat("x", body)))
					resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
					if err != nil {
						t.Fatal(err)
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("got %d; want 200", resp.StatusCode)
					}
					if got, ok := resp.Header["Content-Type"]; (want == "" && ok) || (want != "" && resp.Header.Get("Content-Type") != want) {
						t.Errorf("got Content-Type %q; want %q", got, want)
					}
				})
			}
		}
	}
}

// TestExpectGoesOnlyWithAStreamedBody: a worker is asked to wait for a
// body (Expect: 100-continue) only when the body is streamed to it; one
// held whole is sent at once, in both engines, small or large: a worker
// that never answers 100 (an HTTP/1.0 server) cost the httputil engine's
// transport a second's wait for each request.
func TestExpectGoesOnlyWithAStreamedBody(t *testing.T) {
	tests := []struct {
		engine     string
		size       int
		retryBytes int64
		want       string
	}{
		{"httputil", 10, 0, ""},
		{"httputil", 100 << 10, 0, ""},
		{"httputil", 100 << 10, 1 << 10, "100-continue"}, // past the retry buffer: streamed
		{"fasthttp", 10, 0, ""},
		{"fasthttp", 100 << 10, 0, ""},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%d/%d", tt.engine, tt.size, tt.retryBytes), func(t *testing.T) {
			var got atomic.Pointer[string]
			addr := acceptLoop(t, func(c net.Conn) {
				br := bufio.NewReader(c)
				for {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					e := req.Header.Get("Expect")
					got.Store(&e)
					io.Copy(io.Discard, req.Body) // no 100 Continue, ever
					io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				}
			})
			url := serveEngine(t, tt.engine, newPool(addr), Options{UpstreamTimeout: 10 * time.Second, RetryBufferBytes: tt.retryBytes})
			req, _ := http.NewRequest("PUT", url+"/", strings.NewReader(strings.Repeat("x", tt.size)))
			req.Header.Set("Expect", "100-continue")
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || got.Load() == nil {
				t.Fatalf("got %d, worker saw a request: %v; want 200 from the worker", resp.StatusCode, got.Load() != nil)
			}
			if e := *got.Load(); e != tt.want {
				t.Errorf("worker got Expect %q; want %q", e, tt.want)
			}
		})
	}
}

// TestMalformedAnswerOncePerWorker: an answer the proxy cannot read (two
// Content-Lengths, a Transfer-Encoding it does not know) makes a request
// that may be sent twice go to each worker once, in both engines, and end
// in a 502. (The fasthttp engine's client tried the same worker twice,
// as for a connection the worker closed: four runs of a PUT where the
// httputil engine made two.)
func TestMalformedAnswerOncePerWorker(t *testing.T) {
	answers := map[string]string{
		"two lengths":   "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nok",
		"gzip, chunked": "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n",
	}
	for _, engine := range []string{"httputil", "fasthttp"} {
		for name, answer := range answers {
			t.Run(engine+"/"+name, func(t *testing.T) {
				a, seenA := scriptedWorker(t, answer, answer, answer)
				b, seenB := scriptedWorker(t, answer, answer, answer)
				p := newPool(a, b)
				url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
				req, _ := http.NewRequest("PUT", url+"/", strings.NewReader("x"))
				resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
				if resp.StatusCode != 502 {
					t.Errorf("got %d; want 502", resp.StatusCode)
				}
				if seenA.Load() != 1 || seenB.Load() != 1 {
					t.Errorf("workers saw the request %d and %d times; want once each", seenA.Load(), seenB.Load())
				}
			})
		}
	}
}

// TestCutAnswerOncePerWorker: a worker that closes its connection
// partway through an answer, or without answering on a connection opened
// for the request, gets a request that may be sent twice once: the next
// try goes to the other worker, and after it the client gets a 502, with
// one failure counted on each. (The fasthttp engine's client tried the
// same worker again, as it does for a kept-alive connection the worker
// closed as the request went out, and counted one failure for two runs.)
// A cut in a chunked body is the fasthttp engine's only: it holds an
// answer whole, where the httputil engine streams it and has sent its
// header on by then; the httputil engine reads an answer of up to 4 KiB
// with a Content-Length whole first.
func TestCutAnswerOncePerWorker(t *testing.T) {
	tests := []struct {
		name, answer string
		engines      []string
	}{
		{"cut in the header", "HTTP/1.1 200 OK\r\nContent-Le", []string{"httputil", "fasthttp"}},
		{"nothing", "", []string{"httputil", "fasthttp"}},
		{"cut in a chunked body", "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", []string{"fasthttp"}},
		{"cut short of its length", "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789", []string{"httputil", "fasthttp"}},
	}
	worker := func(answer string) (string, *atomic.Int64) {
		seen := new(atomic.Int64)
		return acceptLoop(t, func(c net.Conn) {
			if _, err := http.ReadRequest(bufio.NewReader(c)); err != nil {
				return
			}
			seen.Add(1)
			io.WriteString(c, answer)
		}), seen
	}
	for _, tt := range tests {
		for _, engine := range tt.engines {
			t.Run(engine+"/"+tt.name, func(t *testing.T) {
				a, seenA := worker(tt.answer)
				b, seenB := worker(tt.answer)
				p := newPool(a, b)
				url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
				code, _ := get(t, &http.Client{Timeout: 5 * time.Second}, url+"/", nil)
				settled(t, p, func() bool { return inFlight(p) == 0 && p.Errors() > 0 })
				if code != 502 {
					t.Errorf("got %d; want 502", code)
				}
				if seenA.Load() != 1 || seenB.Load() != 1 {
					t.Errorf("workers saw the request %d and %d times; want once each", seenA.Load(), seenB.Load())
				}
				if e1, e2 := p.Get(1).Errors(), p.Get(2).Errors(); e1 != 1 || e2 != 1 {
					t.Errorf("workers counted %d and %d errors; want 1 each", e1, e2)
				}
			})
		}
	}
}

// TestKeptAliveCloseRaceRetried: a worker that closes a kept-alive
// connection as the next request goes out on it (Node's keep-alive
// timeout, under load) did not take that request: a GET goes again on a
// new connection to the same worker, in both engines, and is no
// failure; the only worker here answers it. A POST, which the worker may
// have acted on, gets a 502.
func TestKeptAliveCloseRaceRetried(t *testing.T) {
	addr := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			req, err := http.ReadRequest(br)
			if err != nil || i == 1 {
				return // the second request on a connection: closed unanswered
			}
			io.Copy(io.Discard, req.Body)
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		}
	})
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			p := newPool(addr)
			url := serveEngine(t, engine, p, Options{UpstreamTimeout: 10 * time.Second})
			c := &http.Client{Timeout: 5 * time.Second}
			defer c.CloseIdleConnections()
			for i, method := range []string{"GET", "GET", "GET", "POST"} {
				req, _ := http.NewRequest(method, url+"/", nil)
				resp, err := c.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				want := 200
				if method == "POST" {
					want = 502
				}
				if resp.StatusCode != want {
					t.Errorf("request %d (%s): got %d; want %d", i, method, resp.StatusCode, want)
				}
			}
			settled(t, p, func() bool { return inFlight(p) == 0 })
			if p.Get(1).Errors() != 1 {
				t.Errorf("got %d errors; want 1, the POST's", p.Get(1).Errors())
			}
		})
	}
}

// TestOldAnswers: a worker that speaks HTTP/1.0 is passed on in HTTP/1.1
// on a connection kept open, in both engines (the fasthttp engine sent
// the worker's "HTTP/1.0" status line on, and the client closed the
// connection). A header block that ends in a blank line made with a bare
// LF is read by the httputil engine, and a 502 at once in the fasthttp
// engine, whose client would wait for CRLF CRLF until upstream_timeout and
// answer 504; a bare LF at the end of a field only is read by both.
func TestOldAnswers(t *testing.T) {
	tests := []struct {
		engine, name, answer string
		status               int
	}{
		{"httputil", "HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200},
		{"fasthttp", "HTTP/1.0", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok", 200},
		{"httputil", "bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 200},
		{"fasthttp", "bare LF", "HTTP/1.1 200 OK\nContent-Length: 2\n\nok", 502},
		{"httputil", "bare LF blank line", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok", 200},
		{"fasthttp", "bare LF blank line", "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\nok", 502},
		{"fasthttp", "bare LF after a field", "HTTP/1.1 200 OK\r\nContent-Length: 2\n\r\nok", 502},
		{"fasthttp", "bare LF in the status line", "HTTP/1.1 200 OK\nContent-Length: 2\r\n\r\nok", 200},
		{"fasthttp", "bare LF in a field", "HTTP/1.1 200 OK\r\nX-A: b\nContent-Length: 2\r\n\r\nok", 200},
	}
	for _, tt := range tests {
		t.Run(tt.engine+"/"+tt.name, func(t *testing.T) {
			a, _ := scriptedWorker(t, tt.answer, tt.answer, tt.answer, tt.answer)
			url := serveEngine(t, tt.engine, newPool(a), Options{UpstreamTimeout: 3 * time.Second})
			c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			for i := range 2 {
				resp, err := c.Get(url + "/")
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tt.status {
					t.Fatalf("request %d: got %d %q; want %d", i, resp.StatusCode, body, tt.status)
				}
				if tt.status == 200 && (resp.Proto != "HTTP/1.1" || resp.Close || string(body) != "ok") {
					t.Errorf("request %d: got %s, close %v, body %q; want HTTP/1.1 kept open, ok", i, resp.Proto, resp.Close, body)
				}
			}
		})
	}
}

// TestEarlyHintsReachTheClient: the httputil engine passes a worker's 103
// Early Hints on to the client before the answer, with its fields, on the
// h1 path (small bodies) as http.Transport does on the path for large
// ones. (h1 used to skip them.) The fasthttp engine's client reads past
// them, so they stop there; its answer must still come whole.
func TestEarlyHintsReachTheClient(t *testing.T) {
	// Its hop-by-hop fields stay behind, as the answer's do.
	const answer = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\nConnection: X-Hop\r\nX-Hop: 1\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n" +
		"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	for _, tc := range []struct {
		name, engine, body string
		wantHints          bool
		before             string // more 1xx answers before answer
	}{
		{name: "httputil", engine: "httputil", wantHints: true},
		// A 100 the worker sends unasked answers nothing the client sent.
		{name: "httputil/after 100", engine: "httputil", wantHints: true, before: "HTTP/1.1 100 Continue\r\n\r\n"},
		{name: "httputil/large body", engine: "httputil", body: strings.Repeat("b", 2*h1MaxBody), wantHints: true},
		{name: "fasthttp", engine: "fasthttp"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := scriptedWorker(t, tc.before+answer)
			url := serveEngine(t, tc.engine, newPool(addr), Options{})
			var mu sync.Mutex
			var hints []string
			trace := &httptrace.ClientTrace{Got1xxResponse: func(code int, h textproto.MIMEHeader) error {
				mu.Lock()
				defer mu.Unlock()
				hints = append(hints, fmt.Sprintf("%d %s", code, h.Get("Link")))
				for _, name := range []string{"Connection", "X-Hop", "Keep-Alive", "Content-Length"} {
					if v, ok := h[name]; ok {
						hints = append(hints, name+": "+strings.Join(v, ","))
					}
				}
				return nil
			}}
			method := "GET"
			if tc.body != "" {
				method = "POST"
			}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), method, url+"/", strings.NewReader(tc.body))
			resp, err := (&http.Client{Timeout: 5 * time.Second}).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(body) != "ok" {
				t.Errorf("got %d %q; want 200 \"ok\"", resp.StatusCode, body)
			}
			// The worker gave no type; none is guessed after the hints.
			if ct, ok := resp.Header["Content-Type"]; ok {
				t.Errorf("Content-Type %q; want none, as the worker sent none", ct)
			}
			mu.Lock()
			defer mu.Unlock()
			want := []string(nil)
			if tc.wantHints {
				want = []string{"103 </a.css>; rel=preload"}
			}
			if fmt.Sprint(hints) != fmt.Sprint(want) {
				t.Errorf("the client got 1xx answers %q; want %q", hints, want)
			}
		})
	}
}

// TestNoInterimAnswerToHTTP10: an HTTP/1.0 client gets no 1xx answer
// (RFC 9110, section 15.2), only the final one, whichever path its
// request takes.
func TestNoInterimAnswerToHTTP10(t *testing.T) {
	const answer = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	large := strings.Repeat("b", 2*h1MaxBody)
	for _, tc := range []struct{ name, engine, request string }{
		{"httputil", "httputil", "GET / HTTP/1.0\r\n\r\n"},
		{"httputil/large body", "httputil", fmt.Sprintf("POST / HTTP/1.0\r\nContent-Length: %d\r\n\r\n%s", len(large), large)},
		{"fasthttp", "fasthttp", "GET / HTTP/1.0\r\n\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, _ := scriptedWorker(t, answer)
			url := serveEngine(t, tc.engine, newPool(addr), Options{})
			c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(5 * time.Second))
			io.WriteString(c, tc.request)
			got, _ := io.ReadAll(c)
			if !bytes.HasPrefix(got, []byte("HTTP/1.")) || !bytes.Contains(got, []byte(" 200 OK\r\n")) || bytes.Contains(got, []byte(" 103 ")) {
				t.Errorf("the HTTP/1.0 client read %q; want the 200 alone", got)
			}
		})
	}
}

// TestNoInterimAnswerWhileContinueArmed: an HTTP/1.1 client that sent
// Expect: 100-continue gets its 100 from net/http's server, written when
// the body is first read, from the goroutine reading it. A 103 that the
// worker sends after its own 100 reaches the proxy on another goroutine
// at that very moment, and net/http writes a 1xx with no lock: it is not
// passed on. (The streamed path, past RetryBufferBytes, keeps the Expect
// for the worker.)
func TestNoInterimAnswerWhileContinueArmed(t *testing.T) {
	const size = 8 << 10
	addr := acceptLoop(t, func(c net.Conn) {
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		if req.Header.Get("Expect") != "" {
			io.WriteString(c, "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
		}
		io.Copy(io.Discard, req.Body)
		io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	})
	url := serveEngine(t, "httputil", newPool(addr), Options{RetryBufferBytes: size / 4})
	c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: %d\r\nConnection: close\r\n\r\n", size)
	// The body goes once a 100 Continue came, as a client does.
	var got []byte
	buf := make([]byte, 4096)
	for !bytes.Contains(got, []byte("100 Continue\r\n\r\n")) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			t.Fatalf("waiting for 100 Continue: read %q, %v", got, err)
		}
	}
	io.WriteString(c, strings.Repeat("b", size))
	rest, _ := io.ReadAll(c)
	got = append(got, rest...)
	if bytes.Contains(got, []byte(" 103 ")) || !bytes.Contains(got, []byte(" 200 OK\r\n")) || bytes.Count(got, []byte(" 100 Continue\r\n")) != 1 {
		t.Errorf("the client read %q; want one 100 Continue and the 200, no 103", got)
	}
}
