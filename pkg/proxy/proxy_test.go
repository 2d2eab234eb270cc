package proxy

import (
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

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
		w.SetProcess(100+i, a, time.Now())
		w.SetState(pool.Up)
		p.Add(w)
	}
	return p
}

func serve(t *testing.T, px *Proxy) *httptest.Server {
	t.Helper()
	front := httptest.NewServer(px)
	t.Cleanup(func() { front.Close(); px.CloseIdleConnections() })
	return front
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
	front := serve(t, New(p, Options{}))
	c := front.Client()

	var got []string
	for range 4 {
		_, body := get(t, c, front.URL+"/x?q=1", map[string]string{"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil"})
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
	if p.Requests() != 4 || p.Errors() != 0 {
		t.Errorf("got pool requests=%d errors=%d; want 4 and 0", p.Requests(), p.Errors())
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

func TestRetryOnRefused(t *testing.T) {
	live := newBackend(t, "live", nil)
	tests := []struct {
		name   string
		method string
		body   string
	}{
		{"GET", http.MethodGet, ""},
		{"POST with a body is safe to resend when nothing was sent", http.MethodPost, "payload"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(deadAddr(t), live.srv.Listener.Addr().String())
			front := serve(t, New(p, Options{}))
			req, _ := http.NewRequest(tt.method, front.URL+"/", strings.NewReader(tt.body))
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Fatalf("got status %d; want 200 from the live worker", resp.StatusCode)
			}
			if got := *live.body.Load(); got != tt.body {
				t.Errorf("live worker got body %q; want %q", got, tt.body)
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

// resetter accepts connections, reads the request head, and closes the
// connection without answering: a worker that dies mid-request.
func resetter(t *testing.T) string {
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
			buf := make([]byte, 4096)
			c.Read(buf)
			if tc, ok := c.(*net.TCPConn); ok {
				tc.SetLinger(0) // RST, as from a killed process
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestResetBeforeResponse(t *testing.T) {
	live := newBackend(t, "live", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "live") })
	tests := []struct {
		name   string
		method string
		body   string
		status int
	}{
		{"GET is replayed", http.MethodGet, "", 200},
		{"DELETE is replayed", http.MethodDelete, "", 200},
		{"POST is not replayed once sent", http.MethodPost, strings.Repeat("x", 100), 502},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newPool(resetter(t), live.srv.Listener.Addr().String())
			front := serve(t, New(p, Options{}))
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			req, _ := http.NewRequest(tt.method, front.URL+"/", body)
			resp, err := front.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.status {
				t.Errorf("got status %d; want %d", resp.StatusCode, tt.status)
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
