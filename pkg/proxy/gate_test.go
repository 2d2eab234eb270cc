package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/valyala/fasthttp"
)

// queued waits for the accept queue of the listener on port to reach
// want, and fails the test if it does not within 5 s.
func queued(t *testing.T, port, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, _, ok := acceptQueue(loopback(port))
		if !ok {
			t.Skip("the kernel does not answer sock_diag here")
		}
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("accept queue: got %d; want %d", n, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// listenLoopback listens on a free port of 127.0.0.1 until the test
// ends, and returns the listener, its address and its port.
func listenLoopback(t *testing.T) (net.Listener, string, int) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln, ln.Addr().String(), ln.Addr().(*net.TCPAddr).Port
}

// TestDialWaitsForAccept: a dial to a worker waits while a connection
// opened to it before is not accepted yet, and goes once it is; it fails,
// without connecting, when the worker is marked down.
func TestDialWaitsForAccept(t *testing.T) {
	ln, addr, p := listenLoopback(t)
	first, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	queued(t, p, 1)

	var d net.Dialer
	dialed := make(chan net.Conn, 1)
	go func() {
		c, err := dialWorker(context.Background(), nil, &d, addr, 0)
		if err != nil {
			t.Error(err)
		}
		dialed <- c
	}()
	time.Sleep(200 * time.Millisecond)
	select {
	case c := <-dialed:
		c.Close()
		t.Fatal("dialed while the worker had a connection waiting to be accepted")
	default:
	}
	queued(t, p, 1)
	a, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	c := <-dialed
	if c == nil {
		t.FailNow()
	}
	defer c.Close()
	queued(t, p, 1) // the new one

	// The worker goes down while a dial waits; then is down before one.
	down, cancel := context.WithCancel(context.Background())
	failed := make(chan error, 1)
	go func() {
		c, err := dialWorker(context.Background(), down, &d, addr, 0)
		if err == nil {
			c.Close()
		}
		failed <- err
	}()
	time.Sleep(100 * time.Millisecond)
	cancel()
	for _, err := range []error{<-failed, func() error {
		c, err := dialWorker(context.Background(), down, &d, addr, 0)
		if err == nil {
			c.Close()
		}
		return err
	}()} {
		if !errors.Is(err, pool.ErrWorkerDown) || !notSent(err) {
			t.Errorf("worker down: got %v; want an error that wraps pool.ErrWorkerDown, and says nothing was sent", err)
		}
	}
	time.Sleep(100 * time.Millisecond) // a dial would have reached the queue by now
	if n, _, _ := acceptQueue(loopback(p)); n != 1 {
		t.Errorf("accept queue: got %d; want 1 (no connection to the worker that went down)", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if c3, err := dialWorker(ctx, nil, &d, addr, 0); err == nil {
		c3.Close()
		t.Error("caller gone: got a connection; want its context's error")
	}
}

// TestDialToFullQueueGoesAtOnce: a worker whose accept queue is full
// cannot take a connection at all (the kernel drops the SYN): the dial
// is not held back, and times out as a connect to a host cut off, which
// marks the worker down, instead of waiting in the gate.
func TestDialToFullQueueGoesAtOnce(t *testing.T) {
	addr := unanswered(t)
	if _, _, ok := acceptQueue(gateAddr(addr)); !ok {
		t.Skip("the kernel does not answer sock_diag here")
	}
	ctx, cancel := context.WithTimeoutCause(context.Background(), gateMaxWait/2, errors.New("held back"))
	defer cancel()
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	c, err := dialWorker(ctx, nil, &d, addr, 0)
	if err == nil {
		c.Close()
		t.Fatal("connected to a listener whose queue is full")
	}
	if !workerUnreachable(err) {
		t.Errorf("got %v; want a connect timeout", err)
	}
}

// acceptOnDemand is a listener that accepts only when told: a worker
// that accepts between pieces of work, as a busy Node process.
type acceptOnDemand struct {
	net.Listener
	allow chan struct{} // a token per Accept; closed: no more waiting
	done  chan struct{}
}

func (l *acceptOnDemand) Accept() (net.Conn, error) {
	select {
	case <-l.allow:
	case <-l.done:
		return nil, net.ErrClosed
	}
	return l.Listener.Accept()
}

func (l *acceptOnDemand) Close() error {
	select {
	case <-l.done:
	default:
		close(l.done)
	}
	return l.Listener.Close()
}

// onDemand returns a loopback listener that accepts its first
// connection, and later ones only when told (allow), and its port.
func onDemand(t *testing.T) (*acceptOnDemand, int) {
	t.Helper()
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := &acceptOnDemand{Listener: inner, allow: make(chan struct{}, 1), done: make(chan struct{})}
	ln.allow <- struct{}{}
	return ln, inner.Addr().(*net.TCPAddr).Port
}

// holdFirst serves ln until the test ends, answering body; it holds the
// first request, after a word on entered, until release is closed.
func holdFirst(t *testing.T, ln net.Listener, body string) (entered <-chan struct{}, release chan struct{}) {
	in := make(chan struct{}, 1)
	release = make(chan struct{})
	var once sync.Once
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(func() {
			in <- struct{}{}
			<-release
		})
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return in, release
}

// code sends req with c and returns the answer's status, read to the
// end; 0 and a test error if none came (it may run on any goroutine).
func code(t *testing.T, c *http.Client, req *http.Request) int {
	resp, err := c.Do(req)
	if err != nil {
		t.Error(err)
		return 0
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp.StatusCode
}

// roundTrip is one of the three ways a request goes to a worker through
// the gate: the httputil engine's h1 (no body, or a small one), its
// http.Transport (a large body), and the fasthttp engine.
type roundTrip struct{ name, engine, body string }

// roundTrips returns the three, with small as the body of the first and
// the last ("" for none).
func roundTrips(small string) []roundTrip {
	return []roundTrip{
		{"httputil", "httputil", small},
		{"httputil, large body", "httputil", strings.Repeat("x", 100<<10)},
		{"fasthttp", "fasthttp", small},
	}
}

// TestNewConnectionsWaitForAccept: in both engines and on both of the
// httputil engine's round trips, requests that find every connection to
// their worker busy open at most one that the worker has not accepted,
// and get their answers once it accepts.
func TestNewConnectionsWaitForAccept(t *testing.T) {
	for _, tc := range roundTrips("") {
		t.Run(tc.name, func(t *testing.T) {
			ln, port := onDemand(t)
			release := make(chan struct{})
			entered := make(chan struct{}, 3)
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				entered <- struct{}{}
				<-release
				io.WriteString(w, "ok")
			})}
			go srv.Serve(ln)
			defer srv.Close()

			url := serveEngine(t, tc.engine, newPool(ln.Addr().String()), Options{})
			var wg sync.WaitGroup
			codes := make(chan int, 3)
			do := func() {
				defer wg.Done()
				method := http.MethodGet
				if tc.body != "" {
					method = http.MethodPost
				}
				req, _ := http.NewRequest(method, url+"/", strings.NewReader(tc.body))
				if tc.body == "" {
					req.Body = nil
				}
				codes <- code(t, http.DefaultClient, req)
			}
			wg.Add(1)
			go do()
			<-entered // the first request holds the accepted connection
			wg.Add(2)
			go do()
			go do()
			queued(t, port, 1)
			// Were the third request's connection opened too, it would
			// be there by now.
			time.Sleep(200 * time.Millisecond)
			if n, _, _ := acceptQueue(loopback(port)); n != 1 {
				t.Errorf("connections waiting for the worker's accept: got %d; want 1", n)
			}
			close(ln.allow)
			close(release)
			wg.Wait()
			close(codes)
			for c := range codes {
				if c != http.StatusOK {
					t.Errorf("status: got %d; want 200", c)
				}
			}
		})
	}
}

// TestHeldBackRequestTakesIdleConnection: in both engines a request held
// back from opening a connection takes the first of its worker's
// connections to come back idle, without waiting for the worker to
// accept the one opened before it.
func TestHeldBackRequestTakesIdleConnection(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) { heldBackTakesIdle(t, engine) })
	}
}

func heldBackTakesIdle(t *testing.T, engine string) {
	ln, port := onDemand(t)
	entered, release := holdFirst(t, ln, "ok")

	url := serveEngine(t, engine, newPool(ln.Addr().String()), Options{})
	codes := make(chan int, 3)
	var wg sync.WaitGroup
	do := func() {
		defer wg.Done()
		req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
		codes <- code(t, http.DefaultClient, req)
	}
	wg.Add(1)
	go do()
	<-entered
	wg.Add(2)
	go do() // opens a second connection, which the worker does not accept
	go do() // held back
	queued(t, port, 1)
	close(release)
	// The first answer frees the accepted connection, which the held-back
	// request takes: two answers while the worker still accepts nothing.
	for i := range 2 {
		select {
		case c := <-codes:
			if c != http.StatusOK {
				t.Errorf("status: got %d; want 200", c)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%d answers while the second connection waits for accept; want 2", i)
		}
	}
	if n, _, _ := acceptQueue(loopback(port)); n != 1 {
		t.Errorf("accept queue: got %d; want 1", n)
	}
	close(ln.allow)
	wg.Wait()
	if c := <-codes; c != http.StatusOK {
		t.Errorf("status: got %d; want 200", c)
	}
}

// TestHeldBackPOSTGoesElsewhereWhenDown: a POST held back by the gate
// never reached its worker, so when that worker is marked down meanwhile
// it goes to another one, in both engines and on both of the httputil
// engine's round trips, instead of getting the 502 of a POST that may
// have been acted on.
func TestHeldBackPOSTGoesElsewhereWhenDown(t *testing.T) {
	for _, tc := range roundTrips("x") {
		t.Run(tc.name, func(t *testing.T) {
			a, port := onDemand(t)
			entered, release := holdFirst(t, a, "A")
			b := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "B")
			}))
			defer b.Close()
			p := newPool(a.Addr().String(), b.Listener.Addr().String())
			p.Get(2).SetState(pool.Down) // everything to A, for now
			url := serveEngine(t, tc.engine, p, Options{})

			tr := &http.Transport{}
			client := &http.Client{Transport: tr}
			var wg sync.WaitGroup
			defer func() {
				close(release)
				wg.Wait()
				tr.CloseIdleConnections()
			}()
			getAway := func() {
				if resp, err := client.Get(url + "/"); err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			}
			wg.Go(getAway) // holds A's accepted connection
			<-entered
			wg.Go(getAway) // opens a second one, which A does not accept
			queued(t, port, 1)
			type answer struct {
				code int
				body string
				err  error
			}
			posted := make(chan answer, 1)
			go func() {
				resp, err := client.Post(url+"/", "text/plain", strings.NewReader(tc.body))
				if err != nil {
					posted <- answer{err: err}
					return
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				posted <- answer{code: resp.StatusCode, body: string(body)}
			}()
			time.Sleep(200 * time.Millisecond) // the POST waits in the gate
			if n, _, _ := acceptQueue(loopback(port)); n != 1 {
				t.Fatalf("A's accept queue: got %d; want 1 (the POST held back)", n)
			}
			p.Get(2).SetState(pool.Up)
			p.Get(1).CompareAndSwapState(pool.Up, pool.Down) // what the health check does
			select {
			case got := <-posted:
				if got.err != nil || got.code != http.StatusOK || got.body != "B" {
					t.Errorf("POST: got %d %q, %v; want 200 from B", got.code, got.body, got.err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("POST not answered within 10 s")
			}
		})
	}
}

// TestHeldBackRequestWaitsAtMostUpstreamTimeout: upstream_timeout bounds
// the wait of a request held back by the gate too, in both engines and
// on both of the httputil engine's round trips. The request gets the 504
// of a worker that timed out, without a connection opened for it, and
// the worker, busy and not gone, stays up. Before, the request waited
// the gate's own 5 s (longer for a worker that accepts now and then),
// and then went to a connection the worker had not accepted.
func TestHeldBackRequestWaitsAtMostUpstreamTimeout(t *testing.T) {
	for _, tc := range roundTrips("") {
		t.Run(tc.name, func(t *testing.T) {
			ln, port := onDemand(t)
			entered, release := holdFirst(t, ln, "ok")
			defer close(release)
			p := newPool(ln.Addr().String())
			url := serveEngine(t, tc.engine, p, Options{UpstreamTimeout: 300 * time.Millisecond})
			send := func() int {
				req, _ := http.NewRequest(http.MethodPost, url+"/", strings.NewReader(tc.body))
				if tc.body == "" {
					req.Method, req.Body = http.MethodGet, nil
				}
				return code(t, http.DefaultClient, req)
			}
			go send()
			<-entered // the first request holds the accepted connection
			go send() // opens a second one, which the worker does not accept
			queued(t, port, 1)
			if c := send(); c != http.StatusGatewayTimeout {
				t.Errorf("status of the request held back: got %d; want 504", c)
			}
			if n, _, _ := acceptQueue(loopback(port)); n != 1 {
				t.Errorf("connections waiting for the worker's accept: got %d; want 1 (none opened for the request held back)", n)
			}
			if s := p.Workers()[0].State(); s != pool.Up {
				t.Errorf("worker state: got %v; want up", s)
			}
		})
	}
}

// TestNextLook: the looks at a held-back dial's queue come quickly at
// first, then at a tenth of the wait so far, never more than 50 ms apart.
func TestNextLook(t *testing.T) {
	ms := time.Millisecond
	for _, tc := range []struct{ prev, waited, want time.Duration }{
		{50 * time.Microsecond, 0, 100 * time.Microsecond},
		{ms, ms, 2 * ms},
		{2 * ms, 5 * ms, 2 * ms},
		{2 * ms, 100 * ms, 4 * ms},
		{8 * ms, 100 * ms, 10 * ms},
		{32 * ms, time.Second, 50 * ms},
		{50 * ms, 4 * time.Second, 50 * ms},
	} {
		if got := nextLook(tc.prev, tc.waited); got != tc.want {
			t.Errorf("nextLook(%s, %s): got %s; want %s", tc.prev, tc.waited, got, tc.want)
		}
	}
}

// TestSlowAcceptKeepsDialsInTurn: a worker that accepts a connection
// every 400 ms keeps a burst of dials waiting their turn past gateMaxWait,
// one in its queue at a time, instead of letting those still waiting
// after 5 s connect all at once.
func TestSlowAcceptKeepsDialsInTurn(t *testing.T) {
	if testing.Short() {
		t.Skip("takes 6 s")
	}
	ln, addr, p := listenLoopback(t)
	if _, _, ok := acceptQueue(loopback(p)); !ok {
		t.Skip("the kernel does not answer sock_diag here")
	}
	go func() {
		for {
			time.Sleep(400 * time.Millisecond)
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()

	const dials = 16 // the last one about 6 s in
	var d net.Dialer
	done := make(chan error, dials)
	for range dials {
		go func() {
			c, err := dialWorker(context.Background(), nil, &d, addr, 0)
			if err == nil {
				t.Cleanup(func() { c.Close() })
			}
			done <- err
		}()
	}
	most := 0
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for left := dials; left > 0; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			left--
		case <-tick.C:
			if n, _, _ := acceptQueue(loopback(p)); n > most {
				most = n
			}
		}
	}
	if n, _, _ := acceptQueue(loopback(p)); n > most {
		most = n // the last dials' connections are still there
	}
	if most > 1 {
		t.Errorf("connections waiting in the worker's queue: at most %d; want 1 at a time", most)
	}
}

// heldBack waits until g holds back want requests, and fails the test
// if it does not within 5 s.
func heldBack(t *testing.T, g *dialGate, want int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		g.mu.Lock()
		n := len(g.waiters)
		g.mu.Unlock()
		if n == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("requests held back: got %d; want %d", n, want)
		}
		time.Sleep(time.Millisecond)
	}
}

// acceptFirst accepts the first connection to ln and no other, as a
// worker busy from then on: the connections opened after it wait in its
// queue. The accepted one is closed when the test ends.
func acceptFirst(t *testing.T, ln net.Listener) {
	go func() {
		c, err := ln.Accept()
		if err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}()
}

// occupy waits for the worker at addr to have accepted the connections
// opened to it, then opens one it does not accept: from then on its gate
// holds back every dial to it.
func occupy(t *testing.T, addr string, port int) {
	t.Helper()
	queued(t, port, 0)
	raw, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	queued(t, port, 1)
}

// heldH1 returns an h1 with one connection, first, to a worker that
// accepts no other, and the worker's gate, which holds back a request
// of tr's for a connection; that request's connection comes on got
// (nil if it failed).
func heldH1(t *testing.T) (tr *h1, first *h1Conn, g *dialGate, got <-chan *h1Conn) {
	t.Helper()
	ln, addr, port := listenLoopback(t)
	acceptFirst(t, ln)
	tr = newH1(time.Minute)
	first, err := tr.conn(context.Background(), nil, addr, false)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { first.nc.Close() })
	occupy(t, addr, port)
	ch := make(chan *h1Conn, 1)
	go func() {
		c, err := tr.conn(context.Background(), nil, addr, false)
		if err != nil {
			t.Error(err)
		}
		ch <- c
	}()
	g = gateFor(loopback(port))
	heldBack(t, g, 1)
	return tr, first, g, ch
}

// handed fails the test unless first comes on got within 10 s.
func handed(t *testing.T, got <-chan *h1Conn, first *h1Conn) {
	t.Helper()
	select {
	case c := <-got:
		if c != first {
			t.Errorf("the request held back got another connection; want the one that came back")
		}
		if c != nil && c != first {
			c.nc.Close()
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the request held back got no connection")
	}
}

// TestFreeConnectionGoesToTheOldestHeldBack: in both engines a
// connection that comes back free while a request is held back for one
// goes to that request, not to the next request that asks for a
// connection to the worker, however soon that one asks: otherwise the
// requests that keep coming take the connections as they come back,
// and the one held back waits for ever (up to gateMaxWait).
func TestFreeConnectionGoesToTheOldestHeldBack(t *testing.T) {
	t.Run("httputil", func(t *testing.T) {
		tr, first, _, got := heldH1(t)
		tr.put(first)
		if c := tr.idleConn(first.nc.RemoteAddr().String()); c != nil {
			t.Error("a request that came after the one held back took the connection that came back")
		}
		handed(t, got, first)
	})
	t.Run("fasthttp", func(t *testing.T) {
		ln, addr, port := listenLoopback(t)
		acceptFirst(t, ln)
		fw := &fastWorker{dialer: workerDialer(), gateAddr: loopback(port),
			conns: map[*fastConn]struct{}{}, ready: make(chan *fastConn, 16)}
		fw.gate = gateFor(fw.gateAddr)
		fw.want = want{from: fw, take: fw.take, back: fw.giveBack}
		fw.hc = &fasthttp.HostClient{Addr: addr, Dial: fw.dial}
		defer fw.cutConns()
		if err := fw.await(nil); err != nil { // the first connection
			t.Fatal(err)
		}
		occupy(t, addr, port)

		got := make(chan error, 1)
		go func() { got <- fw.await(nil) }()
		heldBack(t, fw.gate, 1)
		fw.release()
		if fw.claim() {
			t.Error("a request that came after the one held back took the connection that came back")
		}
		select {
		case err := <-got:
			if err != nil {
				t.Fatal(err)
			}
			if n := fw.open.Load(); n != 1 {
				t.Errorf("connections: got %d; want the one that came back", n)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the request held back got no connection")
		}
	})
}

// TestGateHandsEachEngineItsOwn: two engines in one process over the
// same worker share its gate; a connection that comes back to one is
// never handed to a request of the other held back, which could not use
// it.
func TestGateHandsEachEngineItsOwn(t *testing.T) {
	tr, first, g, got := heldH1(t)
	// The fasthttp engine's worker over the same address, done with the
	// one connection it has.
	fw := &fastWorker{gateAddr: gateAddr(first.nc.RemoteAddr().String()), gate: g}
	fw.want = want{from: fw, take: fw.take, back: fw.giveBack}
	fw.busy.Store(1)
	fw.open.Store(1)
	fw.release()
	if n := fw.busy.Load(); n != 0 {
		t.Errorf("fasthttp engine's requests holding a connection: got %d; want 0 (its connection free for its own)", n)
	}
	heldBack(t, g, 1) // the httputil engine's request still waits
	tr.put(first)
	handed(t, got, first)
}

// TestHeldBackRequestLeavesWithItsClient: in both engines a request held
// back for a connection leaves the gate's queue once its client closes
// its connection, instead of keeping its place ahead of requests whose
// clients still wait (and of being sent to a worker for nobody).
func TestHeldBackRequestLeavesWithItsClient(t *testing.T) {
	for _, engine := range []string{"httputil", "fasthttp"} {
		t.Run(engine, func(t *testing.T) {
			ln, port := onDemand(t)
			entered, release := holdFirst(t, ln, "ok")
			url := serveEngine(t, engine, newPool(ln.Addr().String()), Options{})
			var wg sync.WaitGroup
			do := func() {
				defer wg.Done()
				req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
				code(t, http.DefaultClient, req)
			}
			wg.Add(1)
			go do()
			<-entered
			wg.Add(1)
			go do() // opens a second connection, which the worker does not accept
			queued(t, port, 1)

			client, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			if err != nil {
				t.Fatal(err)
			}
			io.WriteString(client, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			g := gateFor(loopback(port))
			heldBack(t, g, 1)
			client.Close()
			deadline := time.Now().Add(2 * time.Second) // under gateMaxWait
			for {
				g.mu.Lock()
				n := len(g.waiters)
				g.mu.Unlock()
				if n == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatal("the request held back still waits 2 s after its client closed its connection")
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(ln.allow)
			close(release)
			wg.Wait()
		})
	}
}
