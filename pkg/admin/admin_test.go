package admin

import (
	"context"
	"encoding/json"
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
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fakeController records each call as "reload", "scale(N)" or
// "restart(ID)" and returns err, or what wait returns when it is set.
type fakeController struct {
	err  error
	wait func(ctx context.Context) error

	mu        sync.Mutex
	calls     []string
	deadlines []time.Time
}

var _ Controller = (*fakeController)(nil)

func (f *fakeController) record(ctx context.Context, call string) error {
	f.mu.Lock()
	f.calls = append(f.calls, call)
	d, _ := ctx.Deadline()
	f.deadlines = append(f.deadlines, d)
	f.mu.Unlock()
	if f.wait != nil {
		return f.wait(ctx)
	}
	return f.err
}

func (f *fakeController) Reload(ctx context.Context) error { return f.record(ctx, "reload") }
func (f *fakeController) Scale(ctx context.Context, n int) error {
	return f.record(ctx, fmt.Sprintf("scale(%d)", n))
}
func (f *fakeController) RestartWorker(ctx context.Context, id int) error {
	return f.record(ctx, fmt.Sprintf("restart(%d)", id))
}

func (f *fakeController) Calls() string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return strings.Join(f.calls, " ")
}

type response struct {
	status int
	header http.Header
	body   string
}

// send makes one request to srv and reads the whole answer.
func send(t *testing.T, srv *httptest.Server, method, path string, header http.Header) response {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return response{resp.StatusCode, resp.Header, strings.TrimSpace(string(body))}
}

// checkError checks that r is a JSON error with that status whose message
// contains want.
func checkError(t *testing.T, r response, status int, want string) {
	t.Helper()
	if r.status != status {
		t.Errorf("status: got %d; want %d (body %s)", r.status, status, r.body)
	}
	if got := r.header.Get("Content-Type"); got != "application/json" {
		t.Errorf("Content-Type: got %q; want %q", got, "application/json")
	}
	var e struct {
		OK    *bool   `json:"ok"`
		Error *string `json:"error"`
	}
	if err := json.Unmarshal([]byte(r.body), &e); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	if e.OK == nil || *e.OK || e.Error == nil {
		t.Fatalf("body: got %q; want {\"ok\":false,\"error\":...}", r.body)
	}
	if !strings.Contains(*e.Error, want) {
		t.Errorf("error: got %q; want it to contain %q", *e.Error, want)
	}
}

func TestActions(t *testing.T) {
	tests := []struct {
		name      string
		path      string
		wantBody  string
		wantCalls string
	}{
		{"reload", "/reload", `{"ok":true,"action":"reload"}`, "reload"},
		{"scale", "/scale?workers=3", `{"ok":true,"action":"scale","workers":3}`, "scale(3)"},
		{"scale to one", "/scale?workers=1", `{"ok":true,"action":"scale","workers":1}`, "scale(1)"},
		{"restart", "/workers/2/restart", `{"ok":true,"action":"restart","worker":2}`, "restart(2)"},
		{"restart worker 0 keeps the id", "/workers/0/restart", `{"ok":true,"action":"restart","worker":0}`, "restart(0)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			srv := httptest.NewServer(Handler(c, Options{}))
			defer srv.Close()

			r := send(t, srv, http.MethodPost, tt.path, nil)
			if r.status != http.StatusOK {
				t.Errorf("status: got %d; want %d", r.status, http.StatusOK)
			}
			if r.body != tt.wantBody {
				t.Errorf("body: got %q; want %q", r.body, tt.wantBody)
			}
			if got := r.header.Get("Content-Type"); got != "application/json" {
				t.Errorf("Content-Type: got %q; want %q", got, "application/json")
			}
			if got := c.Calls(); got != tt.wantCalls {
				t.Errorf("calls: got %q; want %q", got, tt.wantCalls)
			}
		})
	}
}

func TestBadRequests(t *testing.T) {
	tests := []struct {
		name       string
		method     string
		path       string
		wantStatus int
		wantAllow  string
		wantError  string
	}{
		{"scale without workers", "POST", "/scale", 400, "", "missing workers"},
		{"scale with empty workers", "POST", "/scale?workers=", 400, "", "workers"},
		{"scale with a word", "POST", "/scale?workers=many", 400, "", `workers "many" is not an integer`},
		{"scale with a fraction", "POST", "/scale?workers=1.5", 400, "", "workers"},
		{"scale to zero", "POST", "/scale?workers=0", 400, "", "workers 0: want at least 1"},
		{"scale below zero", "POST", "/scale?workers=-2", 400, "", "workers -2"},
		{"scale to two counts", "POST", "/scale?workers=2&workers=3", 400, "", "workers given 2 times"},
		{"restart a word", "POST", "/workers/abc/restart", 400, "", `worker id "abc" is not an integer`},
		{"GET reload", "GET", "/reload", 405, "POST", "method GET not allowed on /reload"},
		{"DELETE scale", "DELETE", "/scale?workers=2", 405, "POST", "not allowed"},
		{"GET restart", "GET", "/workers/1/restart", 405, "POST", "not allowed"},
		{"POST stats", "POST", "/stats", 405, "GET, HEAD", "not allowed"},
		{"POST debug runtime", "POST", "/debug/runtime", 405, "GET, HEAD", "not allowed"},
		{"unknown path", "GET", "/nope", 404, "", "no such endpoint: /nope"},
		{"root", "GET", "/", 404, "", "no such endpoint: /"},
		{"worker without action", "POST", "/workers/1", 404, "", "no such endpoint"},
		{"trailing slash", "POST", "/reload/", 404, "", "no such endpoint"},
		{"stats not configured", "GET", "/stats", 404, "", "stats not configured"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			srv := httptest.NewServer(Handler(c, Options{}))
			defer srv.Close()

			r := send(t, srv, tt.method, tt.path, nil)
			checkError(t, r, tt.wantStatus, tt.wantError)
			if got := r.header.Get("Allow"); got != tt.wantAllow {
				t.Errorf("Allow: got %q; want %q", got, tt.wantAllow)
			}
			if got := c.Calls(); got != "" {
				t.Errorf("calls: got %q; want %q", got, "")
			}
		})
	}
}

func TestToken(t *testing.T) {
	tests := []struct {
		name       string
		token      string
		path       string
		auth       string
		wantStatus int
	}{
		{"missing", "s3cret", "/reload", "", 401},
		{"wrong", "s3cret", "/reload", "Bearer s3cre", 401},
		{"wrong and longer", "s3cret", "/reload", "Bearer s3cretXX", 401},
		{"other scheme", "s3cret", "/reload", "Basic s3cret", 401},
		{"scheme only", "s3cret", "/reload", "Bearer", 401},
		{"bare token", "s3cret", "/reload", "s3cret", 401},
		{"unknown path hides the routes", "s3cret", "/nope", "", 401},
		{"right", "s3cret", "/reload", "Bearer s3cret", 200},
		{"scheme in lower case", "s3cret", "/reload", "bearer s3cret", 200},
		{"no token configured is open", "", "/reload", "", 200},
		{"no token configured ignores a header", "", "/reload", "Bearer anything", 200},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			srv := httptest.NewServer(Handler(c, Options{Token: tt.token}))
			defer srv.Close()

			h := http.Header{}
			if tt.auth != "" {
				h.Set("Authorization", tt.auth)
			}
			r := send(t, srv, http.MethodPost, tt.path, h)
			if tt.wantStatus == http.StatusUnauthorized {
				checkError(t, r, http.StatusUnauthorized, "bearer token")
				if got := r.header.Get("WWW-Authenticate"); got != "Bearer" {
					t.Errorf("WWW-Authenticate: got %q; want %q", got, "Bearer")
				}
				if got := c.Calls(); got != "" {
					t.Errorf("calls: got %q; want %q", got, "")
				}
				return
			}
			if r.status != tt.wantStatus {
				t.Errorf("status: got %d; want %d (body %s)", r.status, tt.wantStatus, r.body)
			}
			if got := c.Calls(); got != "reload" {
				t.Errorf("calls: got %q; want %q", got, "reload")
			}
		})
	}
}

// TestBrowserRequestsRefused: what a web page in a browser on this
// machine could send the API is turned away, unanswered by the
// controller: a cross-origin POST (a "no-cors" fetch to 127.0.0.1 needs no
// preflight), and, without a token, a request for another host name than
// the loopback's (DNS rebinding: a page whose name was made to resolve to
// 127.0.0.1 is same-origin to itself). curl, pprof and scripts send
// neither, and get through.
func TestBrowserRequestsRefused(t *testing.T) {
	tests := []struct {
		name   string
		token  string
		method string
		host   string // "" for the server's own 127.0.0.1:PORT
		header map[string]string
		want   int
	}{
		{"curl", "", "POST", "", nil, 200},
		{"localhost", "", "POST", "localhost:9090", nil, 200},
		{"LOCALHOST.", "", "POST", "LOCALHOST.:9090", nil, 200},
		{"::1", "", "POST", "[::1]:9090", nil, 200},
		{"same origin", "", "POST", "", map[string]string{"Sec-Fetch-Site": "same-origin"}, 200},
		{"cross-site fetch", "", "POST", "", map[string]string{"Sec-Fetch-Site": "cross-site"}, 403},
		{"other origin", "", "POST", "", map[string]string{"Origin": "http://evil.example"}, 403},
		{"rebound name", "", "POST", "evil.example:9090", map[string]string{"Origin": "http://evil.example:9090"}, 403},
		{"rebound name reads stats", "", "GET", "evil.example:9090", nil, 403},
		{"rebound name with the token", "s3cret", "POST", "evil.example:9090", map[string]string{"Authorization": "Bearer s3cret"}, 200},
		{"cross-site with the token", "s3cret", "POST", "", map[string]string{"Authorization": "Bearer s3cret", "Sec-Fetch-Site": "cross-site"}, 403},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			stats := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "{}") })
			srv := httptest.NewServer(Handler(c, Options{Token: tt.token, Stats: stats}))
			defer srv.Close()
			path := "/reload"
			if tt.method == "GET" {
				path = "/stats"
			}
			req, err := http.NewRequest(tt.method, srv.URL+path, nil)
			if err != nil {
				t.Fatal(err)
			}
			if tt.host != "" {
				req.Host = tt.host
			}
			for k, v := range tt.header {
				req.Header.Set(k, v)
			}
			resp, err := srv.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tt.want {
				t.Errorf("got %d %s; want %d", resp.StatusCode, body, tt.want)
			}
			if calls := c.Calls(); tt.want == 403 && calls != "" {
				t.Errorf("the controller was called: %q", calls)
			}
		})
	}
}

func TestErrorMapping(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want int
	}{
		{"busy", fmt.Errorf("reload: %w", supervisor.ErrBusy), 409},
		{"no such worker", fmt.Errorf("restart worker 9: %w", supervisor.ErrNoSuchWorker), 404},
		{"bad count", fmt.Errorf("scale to 1000: %w", supervisor.ErrBadCount), 400},
		{"invalid configuration", fmt.Errorf("%w: balancer.yaml: policy: line 3: want one of round-robin, least-conn, p2c", ErrInvalidConfig), 422},
		{"a file's count out of bounds", fmt.Errorf("%w: %w: ready_min_workers 3 in force", ErrInvalidConfig, supervisor.ErrBadCount), 422},
		{"stopped", supervisor.ErrStopped, 503},
		{"deadline", fmt.Errorf("drain worker 1: %w", context.DeadlineExceeded), 504},
		{"client gone", context.Canceled, StatusClientClosed},
		{"sentinel wins over the context", fmt.Errorf("%w: %w", supervisor.ErrBusy, context.DeadlineExceeded), 409},
		{"anything else", errors.New("fork: resource temporarily unavailable"), 500},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statusOf(tt.err); got != tt.want {
				t.Errorf("statusOf: got %d; want %d", got, tt.want)
			}
			for _, path := range []string{"/reload", "/scale?workers=2", "/workers/1/restart"} {
				c := &fakeController{err: tt.err}
				srv := httptest.NewServer(Handler(c, Options{}))
				r := send(t, srv, http.MethodPost, path, nil)
				srv.Close()
				checkError(t, r, tt.want, tt.err.Error())
			}
		})
	}
}

func TestTimeout(t *testing.T) {
	tests := []struct {
		name    string
		timeout time.Duration
		want    time.Duration
	}{
		{"zero means the default", 0, DefaultTimeout},
		{"negative means the default", -time.Second, DefaultTimeout},
		{"set", time.Minute, time.Minute},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := &fakeController{}
			srv := httptest.NewServer(Handler(c, Options{Timeout: tt.timeout}))
			defer srv.Close()

			before := time.Now()
			send(t, srv, http.MethodPost, "/reload", nil)
			c.mu.Lock()
			d := c.deadlines[0]
			c.mu.Unlock()
			if d.IsZero() {
				t.Fatalf("the call had no deadline")
			}
			// The deadline is set between before and the call.
			if lo, hi := before.Add(tt.want), time.Now().Add(tt.want); d.Before(lo) || d.After(hi) {
				t.Errorf("deadline: got %v; want between %v and %v", d, lo, hi)
			}
		})
	}

	t.Run("expiry answers 504", func(t *testing.T) {
		c := &fakeController{wait: func(ctx context.Context) error {
			<-ctx.Done()
			return fmt.Errorf("reload: %w", ctx.Err())
		}}
		srv := httptest.NewServer(Handler(c, Options{Timeout: 10 * time.Millisecond}))
		defer srv.Close()
		checkError(t, send(t, srv, http.MethodPost, "/reload", nil), 504, "deadline exceeded")
	})
}

// A client that leaves does not cancel its call: a rolling reload undone
// because a curl was interrupted would leave the operator guessing.
func TestClientGoneDoesNotCancelTheCall(t *testing.T) {
	var buf testutil.SyncBuffer
	started := make(chan context.Context, 1)
	release := make(chan struct{})
	returned := make(chan error, 1)
	c := &fakeController{wait: func(ctx context.Context) error {
		started <- ctx
		select {
		case <-release:
			returned <- nil
			return nil
		case <-ctx.Done():
			returned <- ctx.Err()
			return ctx.Err()
		}
	}}
	// The server cancels a request's context when it sees its connection
	// close: reqCtx tells the test when that has happened.
	reqCtx := make(chan context.Context, 1)
	h := Handler(c, Options{Log: slog.New(slog.NewTextHandler(&buf, nil))})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		reqCtx <- r.Context()
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()

	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/reload", nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		resp, err := srv.Client().Do(req)
		if err == nil {
			resp.Body.Close()
		}
		done <- err
	}()
	callCtx := <-started
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("client: got %v; want %v", err, context.Canceled)
	}
	<-(<-reqCtx).Done() // the server has seen the client go
	if err := callCtx.Err(); err != nil {
		t.Errorf("controller's context after the client left: got %v; want nil", err)
	}
	if _, ok := callCtx.Deadline(); !ok {
		t.Error("controller's context has no deadline; want the API's timeout")
	}
	close(release)
	if err := <-returned; err != nil {
		t.Errorf("call: got %v; want it to run to its end", err)
	}
	srv.Close() // waits for the handler, and so for its log line
	if got := buf.String(); !strings.Contains(got, "outcome=ok") {
		t.Errorf("log: got %q; want the call logged with outcome=ok", got)
	}
}

func TestLogOncePerAction(t *testing.T) {
	var buf testutil.SyncBuffer
	log := slog.New(slog.NewTextHandler(&buf, nil))
	tests := []struct {
		name string
		err  error
		path string
		want []string
	}{
		{"reload ok", nil, "/reload", []string{"level=INFO", "action=reload", "outcome=ok", "status=200"}},
		{"scale busy", supervisor.ErrBusy, "/scale?workers=4", []string{"level=INFO", "action=scale", "workers=4", "outcome=failed", "status=409", `err="another operation is under way"`}},
		{"restart missing", supervisor.ErrNoSuchWorker, "/workers/7/restart", []string{"action=restart", "worker=7", "status=404"}},
		{"bad request is not an action", nil, "/scale?workers=x", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			buf.Reset()
			srv := httptest.NewServer(Handler(&fakeController{err: tt.err}, Options{Log: log}))
			send(t, srv, http.MethodPost, tt.path, nil)
			srv.Close()

			lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
			if tt.want == nil {
				if got := buf.String(); got != "" {
					t.Errorf("log: got %q; want %q", got, "")
				}
				return
			}
			if len(lines) != 1 {
				t.Fatalf("log: got %q; want one line", buf.String())
			}
			for _, w := range tt.want {
				if !strings.Contains(lines[0], w) {
					t.Errorf("log: got %q; want it to contain %q", lines[0], w)
				}
			}
		})
	}
}

func TestStats(t *testing.T) {
	stats := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"requests":42}`)
	})
	srv := httptest.NewServer(Handler(&fakeController{}, Options{Stats: stats}))
	defer srv.Close()

	r := send(t, srv, http.MethodGet, "/stats", nil)
	if r.status != http.StatusOK {
		t.Errorf("status: got %d; want %d", r.status, http.StatusOK)
	}
	if want := `{"requests":42}`; r.body != want {
		t.Errorf("body: got %q; want %q", r.body, want)
	}
}

func TestDebugRuntime(t *testing.T) {
	srv := httptest.NewServer(Handler(&fakeController{}, Options{}))
	defer srv.Close()

	r := send(t, srv, http.MethodGet, "/debug/runtime", nil)
	if r.status != http.StatusOK {
		t.Fatalf("status: got %d; want %d", r.status, http.StatusOK)
	}
	var got map[string]int
	if err := json.Unmarshal([]byte(r.body), &got); err != nil {
		t.Fatalf("body %q: %v", r.body, err)
	}
	for _, k := range []string{"goroutines", "open_fds", "pid"} {
		if _, ok := got[k]; !ok {
			t.Errorf("body: got %q; want a field %q", r.body, k)
		}
	}
	if got["pid"] != os.Getpid() {
		t.Errorf("pid: got %d; want %d", got["pid"], os.Getpid())
	}
	if got["goroutines"] < 1 {
		t.Errorf("goroutines: got %d; want at least 1", got["goroutines"])
	}
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		if got["open_fds"] != -1 {
			t.Errorf("open_fds without /proc: got %d; want -1", got["open_fds"])
		}
		return
	}
	// stdin, stdout, stderr, the listener and the connection at least.
	if got["open_fds"] < 5 {
		t.Errorf("open_fds: got %d; want at least 5", got["open_fds"])
	}
}

func TestOpenFDsCountsFiles(t *testing.T) {
	if _, err := os.ReadDir("/proc/self/fd"); err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	before := openFDs()
	for range 3 {
		f, err := os.Open(os.DevNull)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
	}
	if got, want := openFDs(), before+3; got != want {
		t.Errorf("open_fds after opening 3 files: got %d; want %d", got, want)
	}
}

func TestServe(t *testing.T) {
	listen := func(t *testing.T) net.Listener {
		t.Helper()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	// A client of its own, without keep-alive, leaves no connection behind
	// for goleak to find.
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}

	t.Run("stops on ctx cancel", func(t *testing.T) {
		ln := listen(t)
		addr := ln.Addr().String()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, ln, Handler(&fakeController{}, Options{})) }()

		resp, err := client.Get("http://" + addr + "/debug/runtime")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("status: got %d; want %d", resp.StatusCode, http.StatusOK)
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: got %v; want nil", err)
		}
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			t.Errorf("dial %s after stop: got a connection; want an error", addr)
		}
	})

	t.Run("lets a call in flight finish", func(t *testing.T) {
		ln := listen(t)
		addr := ln.Addr().String()
		started, release := make(chan struct{}), make(chan struct{})
		c := &fakeController{wait: func(ctx context.Context) error {
			close(started)
			<-release
			return nil
		}}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- Serve(ctx, ln, Handler(c, Options{})) }()

		type result struct {
			status int
			err    error
		}
		got := make(chan result, 1)
		go func() {
			resp, err := client.Post("http://"+addr+"/reload", "", nil)
			if err != nil {
				got <- result{err: err}
				return
			}
			resp.Body.Close()
			got <- result{status: resp.StatusCode}
		}()
		<-started
		cancel()
		// Shutdown closes the listener first; once it refuses, the server
		// is draining with the call still in flight.
		deadline := time.Now().Add(5 * time.Second)
		for {
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				break
			}
			conn.Close()
			if time.Now().After(deadline) {
				t.Fatalf("the listener still accepts after cancel")
			}
			time.Sleep(5 * time.Millisecond)
		}
		close(release)
		if r := <-got; r.err != nil || r.status != http.StatusOK {
			t.Errorf("call in flight: got %d, %v; want %d", r.status, r.err, http.StatusOK)
		}
		if err := <-done; err != nil {
			t.Errorf("Serve: got %v; want nil", err)
		}
	})

	t.Run("a closed listener is an error", func(t *testing.T) {
		ln := listen(t)
		ln.Close()
		if err := Serve(context.Background(), ln, http.NotFoundHandler()); err == nil {
			t.Errorf("Serve: got nil; want an error")
		}
	})
}
