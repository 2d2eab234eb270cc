package proxy

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// countConns makes srv count the connections it accepts.
func countConns(srv *httptest.Server) *atomic.Int64 {
	var n atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			n.Add(1)
		}
	}
	return &n
}

// TestH1KeepsConnectionsAlive: sequential requests of every kind h1
// takes reuse one connection to the worker, and each gets its own answer
// whole: the connection is handed back only at the end of a body.
func TestH1KeepsConnectionsAlive(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		switch r.URL.Path {
		case "/chunked":
			w.Header().Set("Trailer", "X-Sum")
			for i := range 3 {
				io.WriteString(w, strings.Repeat("c", 10+i))
				http.NewResponseController(w).Flush()
			}
			w.Header().Set("X-Sum", "33")
		case "/empty":
			w.WriteHeader(http.StatusNoContent)
		default:
			io.WriteString(w, r.Method+" "+r.URL.Path+" "+string(body))
		}
	}))
	conns := countConns(srv)
	srv.Start()
	defer srv.Close()
	p := newPool(srv.Listener.Addr().String())
	front := serve(t, New(p, Options{}))
	c := front.Client()

	tests := []struct {
		name, method, path, body string
		status                   int
		want                     string
		trailer                  string
	}{
		{"get", "GET", "/a", "", 200, "GET /a ", ""},
		{"post with a body", "POST", "/b", "hello", 200, "POST /b hello", ""},
		{"chunked answer with a trailer", "GET", "/chunked", "", 200, strings.Repeat("c", 10) + strings.Repeat("c", 11) + strings.Repeat("c", 12), "33"},
		{"head", "HEAD", "/c", "", 200, "", ""},
		{"no content", "DELETE", "/empty", "", 204, "", ""},
		{"get again", "GET", "/d", "", 200, "GET /d ", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, _ := http.NewRequest(tt.method, front.URL+tt.path, strings.NewReader(tt.body))
			if tt.body == "" {
				req.Body = nil
			}
			resp, err := c.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			data, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status || string(data) != tt.want {
				t.Errorf("got %d %q; want %d %q", resp.StatusCode, data, tt.status, tt.want)
			}
			if got := resp.Trailer.Get("X-Sum"); got != tt.trailer {
				t.Errorf("got trailer X-Sum %q; want %q", got, tt.trailer)
			}
		})
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("the worker accepted %d connections; want 1, kept alive", n)
	}
}

// TestH1CloseDelimitedAnswer: an answer without a length ends with the
// connection, which then is not reused.
func TestH1CloseDelimitedAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int64
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			go func() {
				defer conn.Close()
				if _, err := http.ReadRequest(bufio.NewReader(conn)); err != nil {
					return
				}
				io.WriteString(conn, "HTTP/1.1 200 OK\r\n\r\nuntil the end")
			}()
		}
	}()
	front := serve(t, New(newPool(ln.Addr().String()), Options{}))
	for i := range 2 {
		status, body := get(t, front.Client(), front.URL+"/", nil)
		if status != 200 || body != "until the end" {
			t.Fatalf("request %d: got %d %q; want 200 %q", i, status, body, "until the end")
		}
	}
	if n := accepted.Load(); n != 2 {
		t.Errorf("the worker accepted %d connections; want 2, one per answer", n)
	}
}

// TestH1ExpectContinue: a client that waits for 100 Continue gets it from
// the balancer, and its body reaches the worker, which is not asked to
// wait for it: the balancer holds it whole (TestExpectGoesOnlyWithAStreamedBody).
func TestH1ExpectContinue(t *testing.T) {
	b := newBackend(t, "", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "got "+r.Header.Get("Expect"))
	})
	front := serve(t, New(newPool(b.srv.Listener.Addr().String()), Options{}))
	req, _ := http.NewRequest("PUT", front.URL+"/", strings.NewReader("payload"))
	req.Header.Set("Expect", "100-continue")
	resp, err := front.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(data) != "got " {
		t.Errorf("got %d %q; want 200 %q", resp.StatusCode, data, "got ")
	}
	if got := *b.body.Load(); got != "payload" {
		t.Errorf("the worker got body %q; want %q", got, "payload")
	}
}

// TestH1ClientGoneClosesWorkerConnection: when the client leaves while
// the worker works, the connection to the worker is closed, so that the
// worker learns it too (its request context ends).
func TestH1ClientGoneClosesWorkerConnection(t *testing.T) {
	started := make(chan struct{})
	ended := make(chan struct{})
	b := newBackend(t, "", func(w http.ResponseWriter, r *http.Request) {
		close(started)
		<-r.Context().Done()
		close(ended)
	})
	p := newPool(b.srv.Listener.Addr().String())
	front := serve(t, New(p, Options{UpstreamTimeout: time.Minute}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		<-started
		cancel()
	}()
	req, _ := http.NewRequestWithContext(ctx, "GET", front.URL+"/", nil)
	if _, err := front.Client().Do(req); err == nil {
		t.Fatal("the request succeeded; want it canceled")
	}
	select {
	case <-ended:
	case <-time.After(20 * time.Second):
		t.Fatal("the worker's request went on after the client left")
	}
	if p.Errors() != 0 || p.Retries() != 0 {
		t.Errorf("got errors=%d retries=%d; want 0 and 0: a client leaving is no worker's fault", p.Errors(), p.Retries())
	}
}

// closedConns makes srv report each connection it sees closed.
func closedConns(srv *httptest.Server) <-chan struct{} {
	closed := make(chan struct{}, 16)
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed <- struct{}{}
		}
	}
	return closed
}

// h1Get makes one GET through h to srv and reads its answer to the end,
// which hands the connection back.
func h1Get(t *testing.T, h *h1, srv *httptest.Server, down context.Context) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+srv.Listener.Addr().String()+"/", nil)
	resp, err := h.roundTrip(req, down)
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
}

// TestH1IdleConnections: a connection handed back is reused by the next
// request, closed once it sat idle for the idle timeout, and closed at
// once, never to be reused, when its worker is marked down.
func TestH1IdleConnections(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	closed := closedConns(srv)
	srv.Start()
	defer srv.Close()
	addr := srv.Listener.Addr().String()
	idle := func(h *h1) int {
		l := h.link(addr)
		l.mu.Lock()
		defer l.mu.Unlock()
		return len(l.idle)
	}
	waitClosed := func(why string) {
		t.Helper()
		select {
		case <-closed:
		case <-time.After(10 * time.Second):
			t.Fatalf("the idle connection was not closed %s", why)
		}
	}

	short := newH1(0)
	short.idleTimeout = 50 * time.Millisecond
	defer short.closeIdle()
	h1Get(t, short, srv, context.Background()) // kept, which schedules the sweep
	waitClosed("after its idle timeout")
	if n := idle(short); n != 0 {
		t.Errorf("got %d idle connections after the sweep; want 0", n)
	}

	h := newH1(0)
	defer h.closeIdle()
	up, markDown := context.WithCancel(context.Background())
	defer markDown()
	h1Get(t, h, srv, up)
	h1Get(t, h, srv, up)
	if n := idle(h); n != 1 {
		t.Fatalf("got %d idle connections after two requests in turn; want 1 (reused)", n)
	}
	markDown()
	waitClosed("when its worker was marked down")
	if n := idle(h); n != 0 {
		t.Errorf("got %d idle connections of a worker marked down; want 0", n)
	}
	if c := h.idleConn(addr); c != nil {
		t.Error("a connection of a worker marked down was handed out")
	}
}
