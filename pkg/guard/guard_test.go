package guard

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorder is the inner handler: it reads the whole body and records what reached it.
type recorder struct {
	mu   sync.Mutex
	seen []string
}

func (rec *recorder) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	rec.mu.Lock()
	rec.seen = append(rec.seen, fmt.Sprintf("%s %s %s", r.Method, r.URL.Path, body))
	rec.mu.Unlock()
	_, _ = io.WriteString(w, "ok")
}

func (rec *recorder) String() string {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	return strings.Join(rec.seen, " | ")
}

// serve runs a real http.Server on 127.0.0.1:0 behind the guard, until the test ends.
// guardMax goes to NewListener, serverMax to the server's MaxHeaderBytes.
func serve(t *testing.T, guardMax, serverMax int) (addr string, rec *recorder) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rec = &recorder{}
	// conns lets cleanup wait for every conn goroutine, including one lingering in
	// net/http's closeWriteAndWait after a 431, so goleak sees none left.
	var conns sync.WaitGroup
	srv := &http.Server{
		Handler:           Handler(rec),
		ConnContext:       ConnContext,
		MaxHeaderBytes:    serverMax,
		ReadHeaderTimeout: 10 * time.Second,
		ConnState: func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				conns.Add(1)
			case http.StateClosed, http.StateHijacked:
				conns.Done()
			}
		},
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := srv.Serve(NewListener(ln, guardMax)); !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	}()
	t.Cleanup(func() {
		_ = srv.Close()
		<-done
		conns.Wait()
	})
	return ln.Addr().String(), rec
}

// step is one write on the conn, then the responses it is answered with.
type step struct {
	send      string
	responses int
}

// exchange plays steps on one raw conn and returns the response statuses, space separated.
// With wantEOF it then reads until the server closes the conn, so every request the server
// was going to serve has been served.
func exchange(t *testing.T, addr string, steps []step, wantEOF bool) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	// A guard against a hung test, not a timing assertion.
	if err := c.SetDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	var statuses []string
	for _, s := range steps {
		if _, err := io.WriteString(c, s.send); err != nil {
			t.Fatalf("write: %v", err)
		}
		for range s.responses {
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("read response %d: %v", len(statuses)+1, err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses = append(statuses, fmt.Sprint(resp.StatusCode))
		}
	}
	if wantEOF {
		rest, err := io.ReadAll(br)
		if err != nil {
			t.Fatalf("read to EOF: %v", err)
		}
		if len(rest) > 0 {
			t.Errorf("bytes after the last response: got %q; want none", rest)
		}
	}
	return strings.Join(statuses, " ")
}

func get(path string) string {
	return "GET " + path + " HTTP/1.1\r\nHost: lb\r\n\r\n"
}

const (
	postCL      = "POST /cl HTTP/1.1\r\nHost: lb\r\nContent-Length: 5\r\n\r\nhello"
	postChunked = "POST /chunked HTTP/1.1\r\nHost: lb\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
		"5;name=value\r\nhello\r\n6;a;b=\"c d\"\r\n world\r\n0;last\r\nX-Sum: 42\r\n\r\n"
	// smuggle is the classic CL.TE attack: a front end framing by Content-Length would
	// pass the inner GET on as part of the body; net/http frames by chunks and would serve it.
	smuggle = "POST /smuggle HTTP/1.1\r\nHost: lb\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n" +
		"0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: lb\r\n\r\n"
)

func TestGuardedServer(t *testing.T) {
	tests := []struct {
		name       string
		steps      []step
		wantEOF    bool
		wantStatus string
		wantSeen   string
	}{
		{
			name:       "keep-alive GETs",
			steps:      []step{{get("/a"), 1}, {get("/b"), 1}, {get("/c"), 1}},
			wantStatus: "200 200 200",
			wantSeen:   "GET /a  | GET /b  | GET /c ",
		},
		{
			name:       "content-length POST then GET",
			steps:      []step{{postCL, 1}, {get("/next"), 1}},
			wantStatus: "200 200",
			wantSeen:   "POST /cl hello | GET /next ",
		},
		{
			name:       "chunked POST with extensions and trailers then GET",
			steps:      []step{{postChunked, 1}, {get("/next"), 1}},
			wantStatus: "200 200",
			wantSeen:   "POST /chunked hello world | GET /next ",
		},
		{
			name:       "content-length and transfer-encoding",
			steps:      []step{{smuggle, 1}},
			wantEOF:    true,
			wantStatus: "400",
			wantSeen:   "",
		},
		{
			name: "both lengths, lower case, on a second request after a chunked one",
			steps: []step{{postChunked, 1}, {"POST /second HTTP/1.1\r\nHost: lb\r\n" +
				"transfer-encoding: chunked\r\ncontent-length: 3\r\n\r\n0\r\n\r\n", 1}},
			wantEOF:    true,
			wantStatus: "200 400",
			wantSeen:   "POST /chunked hello world",
		},
		{
			name:       "pipelined in one write",
			steps:      []step{{get("/a") + postCL + postChunked + get("/b"), 4}},
			wantStatus: "200 200 200 200",
			wantSeen:   "GET /a  | POST /cl hello | POST /chunked hello world | GET /b ",
		},
		{
			name:       "pipelined with an attack in the middle",
			steps:      []step{{get("/a") + smuggle + get("/b"), 2}},
			wantEOF:    true,
			wantStatus: "200 400",
			wantSeen:   "GET /a ",
		},
		{
			name:       "HTTP/1.0 with both lengths",
			steps:      []step{{"POST /old HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabc", 1}},
			wantEOF:    true,
			wantStatus: "400",
			wantSeen:   "",
		},
		{
			name:       "bare LF line endings",
			steps:      []step{{"GET /lf HTTP/1.1\nHost: lb\n\nPOST /lf2 HTTP/1.1\nHost: lb\nContent-Length: 2\n\nhi", 2}},
			wantStatus: "200 200",
			wantSeen:   "GET /lf  | POST /lf2 hi",
		},
		{
			name:       "CRLF after a POST body",
			steps:      []step{{postCL + "\r\n" + get("/after"), 2}},
			wantStatus: "200 200",
			wantSeen:   "POST /cl hello | GET /after ",
		},
		{
			// net/http answers "OPTIONS *" itself; its verdict must not shift the next one's.
			name:       "OPTIONS star answered by net/http",
			steps:      []step{{"OPTIONS * HTTP/1.1\r\nHost: lb\r\n\r\n" + get("/o"), 2}},
			wantStatus: "200 200",
			wantSeen:   "GET /o ",
		},
		{
			// The inner handler ignores the Upgrade, so the conn stays HTTP/1.
			name: "declined upgrade then both lengths",
			steps: []step{
				{"GET /ws HTTP/1.1\r\nHost: lb\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n", 1},
				{smuggle, 1},
			},
			wantEOF:    true,
			wantStatus: "200 400",
			wantSeen:   "GET /ws ",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, rec := serve(t, 0, 0)
			if got := exchange(t, addr, tt.steps, tt.wantEOF); got != tt.wantStatus {
				t.Errorf("statuses: got %q; want %q", got, tt.wantStatus)
			}
			if got := rec.String(); got != tt.wantSeen {
				t.Errorf("seen by the inner handler: got %q; want %q", got, tt.wantSeen)
			}
		})
	}
}

func TestRejectResponse(t *testing.T) {
	addr, rec := serve(t, 0, 0)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, smuggle); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct{ name, got, want string }{
		{"status", resp.Status, "400 Bad Request"},
		{"Content-Type", resp.Header.Get("Content-Type"), "application/json"},
		// ReadResponse turns "Connection: close" into resp.Close.
		{"Connection: close", fmt.Sprint(resp.Close), "true"},
		{"body", string(body), `{"error":"guard: request has both Content-Length and Transfer-Encoding"}` + "\n"},
		{"seen", rec.String(), ""},
	}
	for _, ch := range checks {
		if ch.got != ch.want {
			t.Errorf("%s: got %q; want %q", ch.name, ch.got, ch.want)
		}
	}
}

func TestOversizeHead(t *testing.T) {
	big := "GET /big HTTP/1.1\r\nHost: lb\r\nX-Big: " + strings.Repeat("y", 64<<10) + "\r\n\r\n"
	tests := []struct {
		name                string
		guardMax, serverMax int
		wantStatus          string
	}{
		// The guard follows heads past the server's limit, so net/http answers 431 itself.
		{name: "same limit as the server", guardMax: 1024, serverMax: 1024, wantStatus: "431"},
		// A guard limit below the server's cannot vouch for the head: it fails closed.
		{name: "guard limit below the server's", guardMax: 1024, serverMax: 1 << 20, wantStatus: "400"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, rec := serve(t, tt.guardMax, tt.serverMax)
			if got := exchange(t, addr, []step{{big, 1}}, false); got != tt.wantStatus {
				t.Errorf("status: got %q; want %q", got, tt.wantStatus)
			}
			if got := rec.String(); got != "" {
				t.Errorf("seen by the inner handler: got %q; want %q", got, "")
			}
		})
	}
}

func TestCheckUnguarded(t *testing.T) {
	tests := []struct {
		name string
		req  func() *http.Request
	}{
		{name: "no conn in the context", req: func() *http.Request {
			return httptest.NewRequest(http.MethodPost, "/", strings.NewReader("x"))
		}},
		{name: "conn not from NewListener", req: func() *http.Request {
			a, b := net.Pipe()
			a.Close()
			b.Close()
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			return r.WithContext(ConnContext(context.Background(), a))
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := Check(tt.req()); err != nil {
				t.Errorf("got %q; want %q", err, "<nil>")
			}
		})
	}
}

// TestCRLFHeadEnd reads a guarded conn as a server would: the bytes of a head ending in a
// bare LF pass through unchanged, and under CRLFHeadEnd the read after them fails with
// ErrHeadEnd instead of waiting for the client; without the option it waits.
func TestCRLFHeadEnd(t *testing.T) {
	const head = "GET /a HTTP/1.1\r\nHost: x\r\n\n"
	for _, strict := range []bool{true, false} {
		t.Run(fmt.Sprintf("CRLFHeadEnd=%v", strict), func(t *testing.T) {
			raw, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var opts []Option
			if strict {
				opts = append(opts, CRLFHeadEnd())
			}
			ln := NewListener(raw, 0, opts...)
			defer ln.Close()
			client, err := net.Dial("tcp", raw.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer client.Close()
			if _, err := io.WriteString(client, head); err != nil {
				t.Fatal(err)
			}
			c, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			got := make([]byte, 0, len(head))
			buf := make([]byte, 64)
			for len(got) < len(head) {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err != nil {
					t.Fatalf("read after %q: %v", got, err)
				}
			}
			if string(got) != head {
				t.Fatalf("read %q; want the head unchanged, %q", got, head)
			}
			c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
			_, err = c.Read(buf)
			var ne net.Error
			switch {
			case strict && !errors.Is(err, ErrHeadEnd):
				t.Errorf("next read: %v; want ErrHeadEnd", err)
			case !strict && !(errors.As(err, &ne) && ne.Timeout()):
				t.Errorf("next read: %v; want it to wait for the client (a timeout here)", err)
			}
		})
	}
}
