package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/pkg/guard"
	"github.com/clusterlb/clusterlb/pkg/pool"
	"github.com/valyala/fasthttp"
	"github.com/valyala/fasthttp/fasthttpadaptor"
	"golang.org/x/net/http/httpguts"
)

// Fast is the fasthttp engine: a fasthttp server in front, fasthttp
// clients to the workers, and the same pick, retry rule, counting and
// status mapping as the httputil engine (forward, statusOf). It trades
// net/http's breadth (HTTP/2, streaming bodies, upgrades) for speed:
// bodies are read whole, up to MaxBodyBytes.
type Fast struct {
	pool *pool.Pool
	opts Options
	log  *slog.Logger

	mu      sync.RWMutex
	workers map[*pool.Process]*fastWorker
}

// NewFast returns the fasthttp engine over p.
func NewFast(p *pool.Pool, o Options) *Fast {
	if o.UpstreamTimeout <= 0 {
		o.UpstreamTimeout = 60 * time.Second
	}
	if o.MaxResponseBytes <= 0 {
		o.MaxResponseBytes = DefaultMaxResponseBytes
	}
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	return &Fast{pool: p, opts: o, log: o.Log, workers: make(map[*pool.Process]*fastWorker)}
}

// fastWorker is the fasthttp engine's link to one worker process: its
// connection pool, and the pool's open connections, which are closed at
// once when the worker is marked down, so that requests stuck on a hung or
// cut-off worker go to another one instead of waiting for the upstream
// timeout (fasthttp's client takes no context to cancel a request with).
type fastWorker struct {
	hc       *fasthttp.HostClient
	dialer   net.Dialer
	gateAddr netip.AddrPort // hc.Addr's, for the gate
	gate     *dialGate
	stretch  upStretch   // the one whose end cuts the connections
	cut      atomic.Bool // the connections were cut; cleared when the worker is up again

	// busy counts the requests that have a connection or are in hc.Do
	// to get one (claim), open the connections not closed, and ready
	// holds the ones dialed for a request held back (await) until
	// hc.Do asks for a new one (dial).
	busy, open atomic.Int64
	ready      chan *fastConn
	want       want // for the gate: claim, and release for a claim handed over too late

	mu    sync.Mutex
	conns map[*fastConn]struct{}

	// raced holds the local addresses of the connections whose request
	// failed as a kept-alive connection fails when the worker closes it
	// as the request goes out (see fastConn.race), until the request's
	// goroutine takes its own (again).
	raced sync.Map
}

// fastConn is a connection to a worker that leaves its worker's set when
// closed, and is looked at before a request is written to it after a
// rest.
type fastConn struct {
	net.Conn
	fw        *fastWorker
	last      time.Time // the end of the last read (or the dial): when the connection went idle
	inRequest bool      // a request's first bytes went out, and no read came since
	switched  bool      // spent: an answer did not begin with a final status line (a 101, a 1xx before one)
	closed    bool      // under fw.mu
	rdl, wdl  time.Time // the deadlines fasthttp set, for a redial to carry over
	reqs      int       // requests begun on the connection under c
	got       int       // bytes of the current request's answer read
	peek      idlePeek
}

// peekAfter is how long a connection to a worker rests before it is
// looked at (idlePeek) ahead of the next request: a worker closes an
// idle connection after a second or more (Node's HTTP server after 5 s),
// and under load a connection rests far less, so the look costs nothing
// there. A connection found closed fails the request's first write with
// errStaleConn: nothing was sent, so any request may go again, on a new
// connection (the worker's other idle ones are closed too: they are as
// old). Only the first write of a request is looked before: a later one
// (a large body, trailers) comes after the worker may have read the
// request and even answered it.
const peekAfter = 10 * time.Millisecond

// errSwitched: the connection was spent (switched to another protocol by
// an unasked 101, a 502 for its request, or not known not to be), which
// fasthttp's client does not see, and the new one in its place could not
// be opened. Nothing of the next request was written.
var errSwitched = fmt.Errorf("%w (it was spent)", errStaleConn)

func (c *fastConn) Write(b []byte) (int, error) {
	if c.switched {
		// fasthttp's pool gave back a connection it cannot tell is
		// spent: nothing of this request went out on it, so it goes on
		// a new one, as the same pooled connection. (Failing the write
		// would spend one of the request's two tries, and a worker
		// that sends 103 Early Hints marks every connection it uses.)
		if err := c.redial(); err != nil {
			return 0, fmt.Errorf("%w: %v", errSwitched, err)
		}
	}
	if !c.inRequest {
		if time.Since(c.last) > peekAfter && c.peek.unsolicited() {
			c.fw.hc.CloseIdleConnections()
			return 0, errStaleConn
		}
		c.inRequest = true
		c.reqs++
		c.got = 0
	}
	n, err := c.Conn.Write(b)
	if err != nil {
		c.race(err)
	}
	return n, err
}

// race marks the request on c as raced when err, a failed read or write,
// is what a kept-alive connection that the worker closed as the request
// went out gives: closed or reset on a connection that served a request
// before, with no byte of the answer read. The worker did not take that
// request, so it may be tried again on a new connection to the same
// worker (again). Any other loss (on a connection opened for the request,
// or after the answer began) is the worker's failure on the request, and
// goes to forward's rule: another worker, once.
func (c *fastConn) race(err error) {
	if c.reqs > 1 && c.got == 0 && connLost(err) {
		c.fw.raced.Store(c.LocalAddr(), true)
	}
}

// again reports whether the request whose answer resp was to hold may be
// sent again on another connection to the same worker: nothing of it was
// written (errStaleConn), or it may be sent twice and raced with the
// worker's close of a kept-alive connection (race); never when the
// worker was cut off or timed out. It forgets the race either way.
func (fw *fastWorker) again(req *fasthttp.Request, resp *fasthttp.Response, err error) bool {
	_, raced := fw.raced.LoadAndDelete(resp.LocalAddr())
	return !fw.cut.Load() && !isTimeout(err) && (errors.Is(err, errStaleConn) || raced && fastResendable(req))
}

// errZeroStatus is an answer with a status of 000, which fasthttp's
// client reads as a 200 (and takes its body for a 1xx's, which has none):
// fastConn cuts the read after the status code with this error, which
// the client returns as a failure within the header (a failure at the
// first byte it would take for a closed connection, and retry).
var errZeroStatus = fmt.Errorf("%w: status 000", errBadAnswer)

// errBareLF is an answer whose header block ends in a blank line made
// with a bare LF ("\n\n"), which fasthttp's client does not take for the
// block's end (it waits for CRLF CRLF, though it reads a bare LF at the
// end of a field): it would wait until upstream_timeout, and answer 504.
// (net/http, and so the httputil engine, reads it as it was meant.)
var errBareLF = fmt.Errorf("%w: header block ends in a bare LF", errBadAnswer)

func (c *fastConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.got += n
	if err != nil {
		c.race(err)
	}
	if c.inRequest && n > 0 {
		switch {
		case n >= 12 && string(b[:7]) == "HTTP/1." && string(b[8:12]) == " 000":
			c.switched = true // never reused either
			c.inRequest = false
			return 12, errZeroStatus
		case finalStatusLine(b[:n]) && bareBlankLine(b[:n]):
			c.switched = true
			c.inRequest = false
			return 12, errBareLF
		case !finalStatusLine(b[:n]):
			// A 101, an interim answer (100, 103) after which a 101
			// would go unseen, or a status line this look cannot read
			// whole (cut short, blank lines before it, two spaces)
			// though fasthttp may: the connection is not reused.
			c.switched = true
		}
	}
	c.inRequest = false
	c.last = time.Now()
	if n > 0 {
		c.moveDeadline()
	}
	return n, err
}

// moveDeadline moves the read deadline on while an answer comes in, so
// that upstream_timeout (the client's ReadTimeout, which fasthttp sets
// once per request) bounds each wait for the worker's bytes, not the
// whole answer: a download may take longer than the timeout to stream,
// as it may through the httputil engine. Only a read that comes over a
// quarter of the timeout (a second at most) after the deadline was set
// moves it: an answer that comes at once costs no deadline update.
func (c *fastConn) moveDeadline() {
	timeout := c.fw.hc.ReadTimeout
	if timeout <= 0 || c.rdl.IsZero() {
		return
	}
	if c.rdl.Sub(c.last) < timeout-min(timeout/4, time.Second) {
		c.SetReadDeadline(c.last.Add(timeout))
	}
}

// bareBlankLine reports whether the header block at the start of b, if b
// holds its end, ends otherwise than in CRLF CRLF: in "\n\n", or in a
// blank line after a field that ended in a bare LF. A block longer than
// b is not judged.
func bareBlankLine(b []byte) bool {
	for i := 0; ; {
		j := bytes.IndexByte(b[i:], '\n')
		if j < 0 {
			return false
		}
		i += j + 1 // the next line's start
		switch {
		case i < len(b) && b[i] == '\n':
			return true
		case i+1 < len(b) && b[i] == '\r' && b[i+1] == '\n':
			return i < 2 || b[i-2] != '\r'
		}
	}
}

// finalStatusLine reports whether b begins with the status line of a
// final answer, plainly written: "HTTP/1.x " and a status of 200 to 599.
func finalStatusLine(b []byte) bool {
	return len(b) >= 12 && string(b[:7]) == "HTTP/1." && b[8] == ' ' &&
		'2' <= b[9] && b[9] <= '5' && '0' <= b[10] && b[10] <= '9' && '0' <= b[11] && b[11] <= '9'
}

// redial replaces the spent connection under c with a new one to the
// same worker.
func (c *fastConn) redial() error {
	nc, err := c.fw.dialer.Dial("tcp", c.Conn.RemoteAddr().String())
	if err != nil {
		return err
	}
	c.fw.mu.Lock()
	if c.closed { // cut meanwhile
		c.fw.mu.Unlock()
		nc.Close()
		return net.ErrClosed
	}
	old := c.Conn
	c.Conn = nc
	c.fw.mu.Unlock()
	old.Close()
	// fasthttp set the request's write deadline on the old one.
	nc.SetReadDeadline(c.rdl)
	nc.SetWriteDeadline(c.wdl)
	c.peek.init(nc)
	c.switched, c.last, c.reqs = false, time.Now(), 0
	return nil
}

// SetDeadline, SetReadDeadline and SetWriteDeadline keep what they set,
// for redial. fasthttp sets them from the goroutine using c.
func (c *fastConn) SetDeadline(t time.Time) error {
	c.rdl, c.wdl = t, t
	return c.Conn.SetDeadline(t)
}

func (c *fastConn) SetReadDeadline(t time.Time) error {
	c.rdl = t
	return c.Conn.SetReadDeadline(t)
}

func (c *fastConn) SetWriteDeadline(t time.Time) error {
	c.wdl = t
	return c.Conn.SetWriteDeadline(t)
}

// Close may come from another goroutine (cutConns) than the one using
// c: the connection under c is read under fw.mu, where redial swaps it.
func (c *fastConn) Close() error {
	c.fw.mu.Lock()
	if !c.closed {
		c.fw.open.Add(-1)
	}
	delete(c.fw.conns, c)
	c.closed = true
	nc := c.Conn
	c.fw.mu.Unlock()
	return nc.Close()
}

// badEscape reports whether the path of a request target has a '%' not
// followed by two hex digits (RFC 3986 2.1), which net/http's server
// refuses; the query is not looked at, as neither server does.
func badEscape(uri []byte) bool {
	if q := bytes.IndexByte(uri, '?'); q >= 0 {
		uri = uri[:q]
	}
	for i := bytes.IndexByte(uri, '%'); i >= 0; i = bytes.IndexByte(uri, '%') {
		if i+2 >= len(uri) || !ishex(uri[i+1]) || !ishex(uri[i+2]) {
			return true
		}
		uri = uri[i+3:]
	}
	return false
}

func ishex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// connLost reports whether err, from a read or a write on a connection
// to a worker, is the connection's loss: closed by the worker (io.EOF),
// reset, or a broken pipe; on macOS a write to a socket its peer is
// tearing down may fail with EPROTOTYPE instead (golang/go#51538).
func connLost(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) ||
		errors.Is(err, syscall.EPROTOTYPE)
}

// fastResendable is resendable for a fasthttp request.
func fastResendable(req *fasthttp.Request) bool {
	return idempotent(string(req.Header.Method())) ||
		len(req.Header.Peek("Idempotency-Key")) > 0 || len(req.Header.Peek("X-Idempotency-Key")) > 0
}

// dial is the HostClient's: a connection await opened for a request
// held back, else a new one once the gate lets it.
func (fw *fastWorker) dial(addr string) (net.Conn, error) {
	if c := fw.takeReady(); c != nil {
		return c, nil
	}
	// fasthttp dials on the request's goroutine, with no context: the
	// wait for the gate ends when the worker goes down.
	up := fw.up()
	nc, err := dialWorker(context.Background(), up, &fw.dialer, addr, fw.hc.ReadTimeout)
	if err != nil {
		return nil, err
	}
	return fw.register(nc, up)
}

// takeReady returns a connection that await opened and no cut closed
// meanwhile, or nil.
func (fw *fastWorker) takeReady() *fastConn {
	for {
		select {
		case c := <-fw.ready:
			fw.mu.Lock()
			closed := c.closed
			fw.mu.Unlock()
			if !closed {
				return c
			}
		default:
			return nil
		}
	}
}

// up returns the UpContext watched, or nil.
func (fw *fastWorker) up() context.Context {
	if w := fw.stretch.watched.Load(); w != nil {
		return w.ctx
	}
	return nil
}

// register makes nc one of the worker's connections, which cutConns
// closes; it fails if the worker went down (up ended) meanwhile.
func (fw *fastWorker) register(nc net.Conn, up context.Context) (*fastConn, error) {
	c := &fastConn{Conn: nc, fw: fw, last: time.Now()}
	c.peek.init(nc)
	fw.mu.Lock()
	fw.conns[c] = struct{}{}
	fw.open.Add(1)
	fw.mu.Unlock()
	if up != nil && up.Err() != nil {
		// The worker went down while this dial was held back or under
		// way, maybe after cutConns took its list: nothing is sent on
		// this connection.
		c.Close()
		return nil, errDownBeforeDial
	}
	return c, nil
}

// claim takes one of the worker's connections for a request, if one is
// free (open and not busy), and reports whether it did.
func (fw *fastWorker) claim() bool {
	for {
		b := fw.busy.Load()
		if b >= fw.open.Load() {
			return false
		}
		if fw.busy.CompareAndSwap(b, b+1) {
			return true
		}
	}
}

// await gets a request a connection to the worker, as h1's newConn
// does: a free one (claim), else, once the gate lets it, a new one,
// which it puts in ready for hc.Do to take; meanwhile it takes the first
// connection that comes back free once the requests held back before it
// have theirs (release hands the claim over). Then the request counts
// in busy until release is called. Without it, a request that finds
// every connection busy would wait in the gate inside hc.Do, where no
// connection that comes back can reach it.
func (fw *fastWorker) await(client net.Conn) error {
	if fw.claim() {
		return nil
	}
	up := fw.up()
	// fasthttp does not tell a handler that its client left; a request
	// held back looks for itself (net/http's server does, for the
	// httputil engine), so that a request nobody waits for does not keep
	// its place in the queue ahead of those that somebody does.
	gone, stop := clientWatch(client)
	defer stop()
	leave, _, err := fw.gate.enter(gone, up, fw.gateAddr, &fw.want, fw.hc.ReadTimeout)
	if err != nil || leave == nil {
		return err // nil: claimed
	}
	fw.busy.Add(1) // first, so that no other request claims the new one
	nc, err := fw.dialer.Dial("tcp", fw.hc.Addr)
	leave()
	if err == nil {
		var c *fastConn
		if c, err = fw.register(nc, up); err == nil {
			select {
			case fw.ready <- c:
			default: // hc.Do will dial its own
				c.Close()
			}
		}
	}
	if err != nil {
		fw.release()
	}
	return err
}

// clientLook is how often a request held back looks whether its client
// is still there.
const clientLook = 100 * time.Millisecond

// errClientLeft is the failure of a request whose client closed its
// connection before the answer: as for a client that leaves net/http's
// server, context.Canceled, so that forward neither retries the request
// nor blames the worker, nor counts the worker's answer.
var errClientLeft = fmt.Errorf("%w: the client closed its connection before its answer", context.Canceled)

// clientLeft reports whether the client on nc closed its connection: one
// look (a peek that reads nothing), once a request that started at since
// (its head read) has its answer after over clientLook, so that a
// worker's answer to a client that gave up counts as none, as in the
// httputil engine, whose server watches every client while its request
// runs. A quick request is not looked at: its client rarely leaves, and
// the look costs a system call.
func clientLeft(nc net.Conn, since time.Time) bool {
	if time.Since(since) <= clientLook {
		return false
	}
	var p idlePeek
	p.init(nc)
	return p.peerClosed()
}

// clientWatch returns a context that ends with errClientLeft once the
// client on nc closes its connection (looked at every clientLook), and
// the function that stops the watch. A connection whose socket it
// cannot see is never taken for gone.
func clientWatch(nc net.Conn) (context.Context, func()) {
	var p idlePeek
	if p.init(nc); p.raw == nil {
		return context.Background(), goOn
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	go func() {
		t := time.NewTicker(clientLook)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				if p.peerClosed() {
					cancel(errClientLeft)
					return
				}
			}
		}
	}()
	return ctx, func() { cancel(nil) }
}

// claimed is what the gate hands a request held back by a fastWorker:
// the claim of a request that was done with its connection.
type claimed struct{}

// take is claim for the gate.
func (fw *fastWorker) take() any {
	if fw.claim() {
		return claimed{}
	}
	return nil
}

// release ends a request's claim on a connection: its hc.Do returned,
// and the connection is back in the HostClient's idle list (or closed).
// If the connection is there, the claim goes on to the request held
// back longest, if one is: a request that came later would otherwise
// find the connection free first.
func (fw *fastWorker) release() {
	if !fw.gateAddr.IsValid() || fw.busy.Load() > fw.open.Load() {
		fw.busy.Add(-1) // no gate, or the connection was closed
		return
	}
	fw.gate.give(fw, claimed{}, func() { fw.busy.Add(-1) })
}

// giveBack is release for a claim handed to a request that stopped
// waiting for it.
func (fw *fastWorker) giveBack(any) {
	fw.release()
}

// watch makes sure the connections are cut when up, the process's
// current UpContext, ends, unless it ends because the worker is gone
// (pool.ErrWorkerGone): then only the idle ones are closed, and the busy
// ones read what the worker sent before the kernel ends them. A new up
// stretch (the worker was down and came back) is a new context, watched
// anew; the common case is one atomic load.
func (fw *fastWorker) watch(up context.Context) {
	if !fw.stretch.fresh(up) {
		return
	}
	fw.cut.Store(false)
	context.AfterFunc(up, func() {
		if pool.Gone(up) {
			fw.hc.CloseIdleConnections()
			return
		}
		fw.cutConns()
	})
}

// upStretch is the up stretch of a worker whose end an engine watches:
// its process's UpContext when a request last saw it.
type upStretch struct {
	watched atomic.Pointer[upContext]
}

// upContext holds a process's UpContext, for an atomic.Pointer.
type upContext struct{ ctx context.Context }

// fresh reports whether up is a stretch not watched yet, and makes it
// the one watched; the caller then watches its end. An UpContext that
// never ends (context.Background: no process) is never fresh. The
// common case is one atomic load.
func (s *upStretch) fresh(up context.Context) bool {
	if up.Done() == nil {
		return false
	}
	if w := s.watched.Load(); w != nil && w.ctx == up {
		return false
	}
	s.watched.Store(&upContext{up})
	return true
}

func (fw *fastWorker) cutConns() {
	fw.cut.Store(true)
	fw.hc.CloseIdleConnections()
	fw.mu.Lock()
	conns := slices.Collect(maps.Keys(fw.conns))
	fw.mu.Unlock()
	for _, c := range conns {
		c.Close()
	}
}

// worker returns the link to process proc, one per process so a
// restarted worker never gets its predecessor's connections.
func (f *Fast) worker(proc *pool.Process) *fastWorker {
	f.mu.RLock()
	fw := f.workers[proc]
	f.mu.RUnlock()
	if fw != nil {
		return fw
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if fw = f.workers[proc]; fw != nil {
		return fw
	}
	f.prune()
	fw = &fastWorker{
		dialer:   workerDialer(),
		gateAddr: gateAddr(proc.Addr()),
		conns:    make(map[*fastConn]struct{}),
		ready:    make(chan *fastConn, 16),
	}
	fw.gate = gateFor(fw.gateAddr)
	fw.want = want{from: fw, take: fw.take, back: fw.giveBack}
	fw.hc = &fasthttp.HostClient{
		Addr:                proc.Addr(),
		Dial:                fw.dial,
		MaxConns:            4096,
		MaxIdleConnDuration: workerIdleTimeout,
		ReadTimeout:         f.opts.UpstreamTimeout,
		WriteTimeout:        f.opts.UpstreamTimeout,
		// One try: the handler makes a second one on the same worker
		// only when the first lost a race with the worker's close of a
		// kept-alive connection (fastWorker.again). fasthttp's own rule
		// cannot tell that from a worker that failed the request.
		MaxIdemponentCallAttempts: 1,
		NoDefaultUserAgentHeader:  true,
		DisablePathNormalizing:    true,
		ReadBufferSize:            maxWorkerHeader, // bounds the response header
		MaxResponseBodySize:       int(f.opts.MaxResponseBytes),
		WriteBufferSize:           16 << 10,
	}
	f.workers[proc] = fw
	return fw
}

// prune drops the links to processes that no longer serve a worker.
// Called with f.mu held.
func (f *Fast) prune() {
	if len(f.workers) < 2*len(f.pool.Workers())+4 {
		return
	}
	live := map[*pool.Process]bool{}
	for _, w := range f.pool.Workers() {
		live[w.Process()] = true
	}
	for p, fw := range f.workers {
		if !live[p] {
			fw.hc.CloseIdleConnections()
			delete(f.workers, p)
		}
	}
}

// CloseIdleConnections closes the idle connections to the workers.
func (f *Fast) CloseIdleConnections() {
	f.mu.RLock()
	defer f.mu.RUnlock()
	for _, fw := range f.workers {
		fw.hc.CloseIdleConnections()
	}
}

// hopHeaders are removed from both directions (RFC 9110 7.6.1).
var hopHeaders = []string{"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Transfer-Encoding", "Upgrade"}

// Handle forwards one request. It is a fasthttp.RequestHandler. Under a
// server with StreamRequestBody (as Server makes), it reads a streamed
// body whole first, up to 4 MiB.
func (f *Fast) Handle(ctx *fasthttp.RequestCtx) { f.handle(ctx, defaultMaxBody) }

// defaultMaxBody is ServerOptions.MaxBodyBytes when zero.
const defaultMaxBody = 4 << 20

func (f *Fast) handle(ctx *fasthttp.RequestCtx, maxBody int) {
	if f.opts.AccessLog != nil {
		start := time.Now()
		defer func() { f.accessLine(ctx, time.Since(start)) }()
	}
	req := &ctx.Request
	if p := req.Header.Protocol(); len(p) != len(http11) || p[len("HTTP/")] != '1' {
		// fasthttp takes any HTTP/d.d; net/http answers a version
		// that is not 1.x so before any handler, uncounted. (The
		// guard has given up on the conn: its check would say 400.)
		writeFastError(ctx, http.StatusHTTPVersionNotSupported, "unsupported protocol version")
		ctx.SetConnectionClose()
		return
	}
	if rejected(ctx) {
		return
	}
	if uri := ctx.RequestURI(); bytes.IndexByte(uri, '#') >= 0 || badEscape(uri) || badAuthority(uri) {
		// As the httputil engine answers a fragment, userinfo or an
		// empty host (Proxy.serve), and as net/http's server answers a
		// bad % escape in the path.
		writeFastError(ctx, http.StatusBadRequest, string(errBadTarget))
		return
	}
	if badHost(req.Header.Host()) {
		// As the httputil engine answers it (Proxy.serve): fasthttp's
		// server takes ":80", and a bracket out of place.
		writeFastError(ctx, http.StatusBadRequest, string(errBadHost))
		return
	}
	if req.Header.IsConnect() {
		// As the httputil engine answers (Proxy.serve), and counted so.
		status, msg := statusOf(errConnect, false)
		f.pool.CountRequest(true)
		writeFastError(ctx, status, msg)
		ctx.SetConnectionClose()
		return
	}
	if e := req.Header.Peek("Expect"); len(e) > 0 && !hasToken([][]byte{e}, "100-continue") {
		// An expectation net/http's server (so the httputil engine)
		// answers 417 before any handler, uncounted: one that does not
		// name 100-continue (RFC 9110 10.1.1).
		writeFastError(ctx, http.StatusExpectationFailed, "unsupported expectation")
		ctx.SetConnectionClose()
		return
	}
	if err := readStreamed(req, maxBody); err != nil {
		// Answered, and the client's fault: no error of the balancer's.
		// (A body that fails in its first 8 KiB, which the server reads
		// before the handler, is answered by fastServerError, uncounted.)
		f.pool.CountRequest(true)
		bodyFailed(ctx, err)
		return
	}
	closeAfter := req.Header.ConnectionClose()
	noHost := len(req.Header.Host()) == 0 // HTTP/1.0 may send none
	if !req.Header.IsHTTP11() {
		// The worker is spoken to in HTTP/1.1 whatever the client
		// spoke, as the httputil engine and nginx speak to it: an
		// HTTP/1.0 request, sent on as it came, had the worker close
		// its connection after each answer. The server took the
		// client's version, and whether its connection stays open,
		// before the handler ran; the close that HTTP/1.0 implies is
		// the client's hop only.
		req.Header.SetProtocolBytes(http11)
		req.Header.Del(fasthttp.HeaderConnection)
	}
	var hop hopScan
	expect, xfwd := false, false
	// AllInOrder reads the fields as they came. All would have fasthttp
	// parse the Cookie fields, to write them anew from what it could
	// parse: pairs with a '"' or '\' in their value lost, the rest
	// unquoted, the fields merged.
	for k, v := range req.Header.AllInOrder() {
		expect = expect || (len(k) == len("Expect") && asciiEqualFold(string(k), "Expect"))
		if !validName(k) {
			// As net/http's server answers, uncounted as there:
			// fasthttp takes any name.
			writeFastError(ctx, http.StatusBadRequest, "invalid header name")
			ctx.SetConnectionClose()
			return
		}
		hop.add(k, v)
		if forwardedAlias(k) {
			hop.listed = append(hop.listed, string(k))
		}
		xfwd = xfwd || xForwarded(k)
	}
	// A client that takes trailers says so to the worker, as the
	// ReverseProxy says it (Go issue 21096): the hop's own TE goes, its
	// "trailers" stays true of the whole path, since trailers pass.
	trailers := hop.found&teBit != 0 && hasToken(req.Header.PeekAll("Te"), "trailers")
	hop.del(req.Header.Del)
	if trailers {
		req.Header.Set("Te", "trailers")
	}
	if expect {
		// The body is here whole (or there is none): a worker asked to
		// wait for it would send a 100 Continue for nothing, and an
		// interim answer costs the connection (fastConn.Read).
		req.Header.Del("Expect")
	}
	if u := req.URI(); string(u.Scheme()) != "http" {
		// An absolute-form target (RFC 9112 3.2.2) names its scheme;
		// the worker is spoken to in plain HTTP whatever it is.
		u.SetScheme("http")
	}
	if closeAfter {
		// Deleting Connection forgot the client's "close"; the server
		// still owes it.
		defer ctx.SetConnectionClose()
	}
	// The client's X-Forwarded-* are replaced, never trusted: each copy
	// deleted first, since Set replaces only a name's first field.
	if xfwd {
		req.Header.Del("X-Forwarded-For")
		req.Header.Del("X-Forwarded-Host")
		req.Header.Del("X-Forwarded-Proto")
	}
	var ipBuf [len("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff%zone")]byte
	req.Header.SetBytesV("X-Forwarded-For", appendClientIP(ipBuf[:0], ctx))
	req.Header.SetBytesV("X-Forwarded-Host", ctx.Host())
	req.Header.Set("X-Forwarded-Proto", "http")
	req.Header.Del("Forwarded")
	// A body without a Content-Type goes without one, as it came.
	req.Header.SetNoDefaultContentType(true)

	resp := &ctx.Response
	w, proc, err := forward(ctx, f.opts.UpstreamTimeout, f.pool, f.opts.MaxRetries, f.log, fastResendable(req), wholeBody{},
		func(err error) error { return err },
		func(proc *pool.Process, retry bool) error {
			if retry {
				resp.Reset()
			}
			fw := f.worker(proc)
			fw.watch(proc.UpContext())
			if noHost {
				// The worker's address, as net/http's Transport sends.
				req.URI().SetHost(proc.Addr())
			}
			if err := fw.await(ctx.Conn()); err != nil {
				return err
			}
			err := fw.hc.Do(req, resp)
			if err != nil && fw.again(req, resp, err) {
				resp.Reset()
				err = fw.hc.Do(req, resp)
			}
			fw.release()
			switch {
			case err != nil && fw.cut.Load():
				return workerDown(err)
			case err != nil && smallBuffer(err):
				return errHeaderTooLarge
			case errors.Is(err, fasthttp.ErrBodyTooLarge):
				return fmt.Errorf("%w: response body over %d bytes (max_response_bytes)", errBadAnswer, f.opts.MaxResponseBytes)
			case err != nil:
				return err
			case resp.StatusCode() == http.StatusSwitchingProtocols:
				// The engine carries no upgrade: Upgrade is not passed on.
				return fmt.Errorf("%w: switched protocols unasked", errBadAnswer)
			}
			if err := badStatus(resp.StatusCode()); err != nil {
				return err
			}
			for k := range resp.Header.All() {
				if err := badName(k); err != nil {
					return err
				}
			}
			if clientLeft(ctx.Conn(), ctx.Time()) {
				return errClientLeft
			}
			return nil
		})
	if err != nil {
		status, msg := statusOf(err, false)
		stopping := status == StatusClientClosed && !errors.Is(err, errClientLeft)
		if stopping {
			// Not the client's leaving: fasthttp's server ends every
			// RequestCtx as it shuts down, which ended the request's
			// wait (for a place at its worker). It gets the answer of a
			// balancer with no worker to give it, and the connection
			// closes. (net/http's Shutdown ends no request's context,
			// and the httputil engine's request waits on.)
			status, msg = http.StatusServiceUnavailable, "the balancer is stopping"
		}
		f.pool.CountRequest(status < 500)
		if status >= 500 && status != 503 {
			f.log.Warn("proxy error", "method", string(req.Header.Method()), "path", string(req.URI().Path()), "status", status, "err", err)
		}
		if status == StatusClientClosed {
			// Nothing is sent, and the connection is closed, as
			// net/http's server does for a client that left; one that
			// only closed its sending side left too, for both engines.
			// The status is for the access log.
			ctx.Response.Reset()
			ctx.SetStatusCode(status)
			ctx.HijackSetNoResponse(true)
			ctx.Hijack(func(net.Conn) {})
			return
		}
		writeFastError(ctx, status, msg)
		if stopping {
			ctx.SetConnectionClose() // after writeFastError, whose Reset clears it
		}
		return
	}
	// The body is in memory already: the request is done for the worker.
	w.End(proc, true, false)
	hop = hopScan{}
	for k, v := range resp.Header.All() {
		hop.add(k, v)
	}
	hop.del(resp.Header.Del)
	if !resp.Header.IsHTTP11() {
		// A worker that spoke HTTP/1.0: the client is answered in the
		// balancer's HTTP/1.1, as the httputil engine and nginx answer,
		// and its connection is kept; the worker's one ended with it.
		resp.Header.SetProtocol(http11)
		resp.Header.ResetConnectionClose()
	}
}

// http11 is the protocol the fasthttp engine speaks: of its answers to
// clients and of its requests to workers.
var http11 = []byte("HTTP/1.1")

// smallBuffer reports whether err is fasthttp's for a header past its
// buffer: for a response, one over maxWorkerHeader.
func smallBuffer(err error) bool {
	var small *fasthttp.ErrSmallBuffer
	return errors.As(err, &small)
}

// accessLine writes the access log line of ctx's request, answered in d.
// Call it only when there is an access log.
func (f *Fast) accessLine(ctx *fasthttp.RequestCtx, d time.Duration) {
	logAccess(f.opts.AccessLog, ctx.RemoteAddr().String(), string(ctx.Method()), string(ctx.RequestURI()),
		ctx.Response.StatusCode(), int64(len(ctx.Response.Body())), d)
}

// xForwarded reports whether header name k is one of the X-Forwarded-*
// fields the engine sets. A client's are deleted first, every copy:
// fasthttp's Set replaces only the first field of a name, and would pass
// a second one on. (By their constant names, which cost no allocation.)
func xForwarded(k []byte) bool {
	switch len(k) {
	case len("X-Forwarded-For"):
		return asciiEqualFold(string(k), "X-Forwarded-For")
	case len("X-Forwarded-Host"):
		return asciiEqualFold(string(k), "X-Forwarded-Host")
	case len("X-Forwarded-Proto"):
		return asciiEqualFold(string(k), "X-Forwarded-Proto")
	}
	return false
}

// hopScan gathers, in one pass over a header block, the hop-by-hop
// headers it has: those of hopHeaders, and those its Connection header
// lists.
type hopScan struct {
	found  uint16   // bits of hopHeaders
	listed []string // named by Connection; nil in the usual case
}

func (h *hopScan) add(k, v []byte) {
	b := hopBits(k)
	if b == connectionBit {
		h.listed = appendListed(h.listed, v)
	}
	h.found |= b
}

// del deletes what the pass found.
func (h *hopScan) del(del func(string)) {
	delHop(h.found, del)
	for _, name := range h.listed {
		del(name)
	}
}

// hopBits and delHop delete the hop-by-hop headers that a header block
// has, found in one pass over it: a Del for each of the nine names would
// normalize the name and scan the whole block every time, on every request
// and response (about 3 % of the engine's CPU under load), to find none of
// them in the usual case. The pass is written out where each block is: an
// iterator handed to a helper costs two allocations per call. hopBits
// gives the bit of header name k in hopHeaders, if any. A block that
// announces trailers (a Trailer header, which is passed on: the trailers
// go through) gets every Del, since fasthttp keeps the trailer fields
// apart, where the pass does not look, and Del clears them there too.
func hopBits(k []byte) uint16 {
	for i, h := range hopHeaders {
		// string(k) stays on the stack: no longer than h here.
		if len(k) == len(h) && strings.EqualFold(string(k), h) {
			return 1 << i
		}
	}
	if len(k) == len("Trailer") && strings.EqualFold(string(k), "Trailer") {
		return 1<<len(hopHeaders) - 1
	}
	return 0
}

// connectionBit is hopBits of Connection, hopHeaders[0]; teBit of Te,
// hopHeaders[5].
const (
	connectionBit = 1
	teBit         = 1 << 5
)

// hasToken reports whether the field values vs list token, as net/http
// reads them (httpguts.HeaderValuesContainsToken): for fasthttp's
// values, which are bytes.
func hasToken(vs [][]byte, token string) bool {
	ss := make([]string, len(vs))
	for i, v := range vs {
		ss[i] = string(v)
	}
	return httpguts.HeaderValuesContainsToken(ss, token)
}

// appendListed appends to dst the header names that a Connection header's
// value v lists, which are hop-by-hop too (RFC 9110 7.6.1), leaving out
// "close" and the names already in hopHeaders. A name costs an allocation;
// the usual values ("keep-alive", "close", "Upgrade") cost none.
func appendListed(dst []string, v []byte) []string {
	for len(v) > 0 {
		var tok []byte
		if i := bytes.IndexByte(v, ','); i >= 0 {
			tok, v = v[:i], v[i+1:]
		} else {
			tok, v = v, nil
		}
		tok = bytes.Trim(tok, " \t")
		if len(tok) == 0 || hopBits(tok) != 0 || (len(tok) == 5 && strings.EqualFold(string(tok), "close")) {
			continue
		}
		dst = append(dst, string(tok))
	}
	return dst
}

// delHop deletes the headers of hopHeaders whose bits are set in found.
func delHop(found uint16, del func(string)) {
	for i, h := range hopHeaders {
		if found&(1<<i) != 0 {
			del(h)
		}
	}
}

// errBodyTooLarge: the request body is over the engine's limit (413).
var errBodyTooLarge = errors.New("request body too large")

// readStreamed reads a streamed request body whole, up to limit bytes,
// and puts it back in req as a plain body, which the worker's client can
// send again. The buffer grows as the bytes come (readN), where
// fasthttp's own whole-body read allocates the announced length at once:
// a client that announces 4 MiB and sends nothing would have 4 MiB held
// for it until body_timeout. A request without a streamed body is left
// as it is.
func readStreamed(req *fasthttp.Request, limit int) error {
	if !req.IsBodyStream() {
		return nil
	}
	// ContentLength is -1 for a chunked body: read to its end.
	buf, fits, err := readWhole(req.BodyStream(), int64(req.Header.ContentLength()), int64(limit))
	switch {
	case err != nil:
		return fmt.Errorf("%w: %w", errClientBody, err)
	case !fits:
		return errBodyTooLarge
	}
	req.SetBodyRaw(buf)
	return nil
}

// bodyFailed answers a request whose body readStreamed could not take
// (400, 408, 413), and closes the connection: the rest of the body is
// never read. A 413 goes out with a lingering close.
func bodyFailed(ctx *fasthttp.RequestCtx, err error) {
	status, msg := statusOf(err, false)
	writeFastError(ctx, status, msg)
	ctx.SetConnectionClose() // after writeFastError, whose Reset clears it
	if status == http.StatusRequestEntityTooLarge {
		lingerClose(ctx)
	}
}

// Bounds of lingerClose's wait for the client to stop sending.
const (
	lingerTime  = 5 * time.Second
	lingerBytes = 16 << 20
)

// lingerClose sends ctx's response itself once fasthttp's server hands
// over the connection, then half-closes it and reads and discards what
// the client still sends, until it stops (lingerTime, lingerBytes at
// most), before closing it, as nginx's lingering_close does. A client
// still uploading a body too large would otherwise have its connection
// reset by the close with its bytes unread, and a reset makes its TCP
// stack drop the 413 before the client reads it. (fasthttp's server
// skips a hijack when the response says Connection: close, so the
// answer is written here, not by the server.)
func lingerClose(ctx *fasthttp.RequestCtx) {
	resp := new(fasthttp.Response)
	ctx.Response.CopyTo(resp)
	raw := ctx.Conn()
	ctx.HijackSetNoResponse(true)
	ctx.Hijack(func(c net.Conn) { linger(c, raw, resp) })
}

// linger writes resp on c, half-closes half (c, or the connection under
// the hijacked c, which passes no half-close on) and reads what the
// client still sends, for lingerTime and lingerBytes at most.
func linger(c, half net.Conn, resp *fasthttp.Response) {
	c.SetDeadline(time.Now().Add(lingerTime))
	bw := bufio.NewWriter(c)
	if resp.Write(bw) != nil || bw.Flush() != nil {
		return
	}
	if cw, ok := half.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
	io.Copy(io.Discard, io.LimitReader(c, lingerBytes))
}

// rejected answers and reports true when the guard found the request's
// framing faulty: 400 for an ambiguous one (Content-Length with
// Transfer-Encoding), 501 for a transfer coding other than chunked, as
// net/http's server answers it (fasthttp takes "identity"). It pops the
// guard's verdict: call it once per request.
func rejected(ctx *fasthttp.RequestCtx) bool {
	err := guard.CheckConn(ctx.Conn(), ctx.Method(), ctx.RequestURI())
	if err == nil {
		return false
	}
	writeFastError(ctx, guard.Status(err), err.Error())
	ctx.SetConnectionClose() // after writeFastError, whose Reset clears it
	return true
}

// appendClientIP appends the client's IP address to b, without
// allocating: net.IP.String would cost an allocation per request.
func appendClientIP(b []byte, ctx *fasthttp.RequestCtx) []byte {
	if a, ok := ctx.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap().AppendTo(b)
	}
	return append(b, ctx.RemoteIP().String()...)
}

func writeFastError(ctx *fasthttp.RequestCtx, status int, msg string) {
	ctx.Response.Reset()
	ctx.SetStatusCode(status)
	ctx.SetContentType("application/json")
	ctx.Response.Header.Set("Cache-Control", "no-store")
	if status == 503 {
		ctx.Response.Header.Set("Retry-After", "1")
	}
	ctx.SetBodyString(`{"error":` + strconv.Quote(msg) + "}\n")
}

// maxFastHeader caps the header block the fasthttp engine reads: fasthttp
// gives every client connection a read buffer of this size, so a
// max_header_bytes of 1 MiB would cost up to 1 MiB per connection (64
// MiB of RSS at 64 connections in the bench).
const maxFastHeader = 64 << 10

// ServerOptions hardens the fasthttp server in front.
type ServerOptions struct {
	// ReadTimeout bounds reading a request's header, so a slow client
	// (slowloris) is cut off; a request without a body, the whole request.
	ReadTimeout time.Duration
	// BodyTimeout bounds reading a request's body, once its header is in
	// (the engine reads the body whole): 408 after it. Zero means 60s.
	BodyTimeout time.Duration
	// IdleTimeout closes idle keep-alive client connections.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the request header block: larger gets 431.
	// The fasthttp engine caps it at 64 KiB (maxFastHeader).
	MaxHeaderBytes int
	// MaxBodyBytes bounds a request body, which the engine reads whole:
	// larger gets 413. Zero means 4 MiB.
	MaxBodyBytes int
}

// Server returns a fasthttp server that serves f, and other (a net/http
// handler, for /stats) for the paths in otherPaths.
func (f *Fast) Server(o ServerOptions, otherPaths []string, other http.Handler) *fasthttp.Server {
	if o.MaxBodyBytes <= 0 {
		o.MaxBodyBytes = defaultMaxBody
	}
	if o.BodyTimeout <= 0 {
		o.BodyTimeout = 60 * time.Second
	}
	bodyConf := fasthttp.RequestConfig{ReadTimeout: o.BodyTimeout}
	var side fasthttp.RequestHandler
	if other != nil {
		side = fasthttpadaptor.NewFastHTTPHandler(other)
	}
	// The path in net/http's spelling, as the httputil engine matches
	// it: unescaped, not cleaned ("//stats" is a worker's, not a
	// redirect to /stats as fasthttp's Path and the ServeMux made it).
	isSide := func(ctx *fasthttp.RequestCtx) bool {
		if side == nil {
			return false
		}
		path := ctx.URI().PathOriginal()
		if bytes.IndexByte(path, '%') < 0 {
			return slices.Contains(otherPaths, string(path))
		}
		p, err := url.PathUnescape(string(path))
		return err == nil && slices.Contains(otherPaths, p)
	}
	return &fasthttp.Server{
		Handler: func(ctx *fasthttp.RequestCtx) {
			if !isSide(ctx) {
				f.handle(ctx, o.MaxBodyBytes)
				return
			}
			if rejected(ctx) {
				return
			}
			// The same limit and timeout as a proxied body: the
			// adaptor would read a stream whole, without either.
			if err := readStreamed(&ctx.Request, o.MaxBodyBytes); err != nil {
				bodyFailed(ctx, err)
				return
			}
			side(ctx)
		},
		ReadTimeout: o.ReadTimeout,
		// A body gets its own time, from the end of the header on, not
		// what read_header_timeout leaves of it.
		HeaderReceived: func(h *fasthttp.RequestHeader) fasthttp.RequestConfig {
			if h.ContentLength() != 0 {
				return bodyConf
			}
			return fasthttp.RequestConfig{}
		},
		IdleTimeout:    o.IdleTimeout,
		ReadBufferSize: min(o.MaxHeaderBytes, maxFastHeader),
		// The body comes to the handler as a stream, which readStreamed
		// reads whole: the server reads only its first 8 KiB, and leaves
		// the 413 to the handler, which gives it once those have come.
		StreamRequestBody: true,
		// A client that waits for "100 Continue" before it sends a body
		// too large gets the 413 at once instead.
		ExpectHandler: func(ctx *fasthttp.RequestCtx) int {
			if ctx.Request.Header.ContentLength() <= o.MaxBodyBytes {
				return fasthttp.StatusContinue
			}
			status, msg := statusOf(errBodyTooLarge, false)
			writeFastError(ctx, status, msg)
			if !isSide(ctx) {
				// Counted and logged as handle would: the handler does
				// not run.
				f.pool.CountRequest(true)
				if f.opts.AccessLog != nil {
					f.accessLine(ctx, 0)
				}
			}
			return status
		},
		MaxRequestBodySize:           o.MaxBodyBytes,
		NoDefaultServerHeader:        true,
		NoDefaultContentType:         true,
		DisablePreParseMultipartForm: true,
		CloseOnShutdown:              true,
		ErrorHandler:                 fastServerError,
		Logger:                       fastLogger{f.log},
	}
}

// fastServerError answers a request that fasthttp could not read, with
// the status net/http's server gives and the JSON body of every other
// error. (A body over the limit is the handler's: readStreamed.)
func fastServerError(ctx *fasthttp.RequestCtx, err error) {
	switch {
	case smallBuffer(err):
		writeFastError(ctx, http.StatusRequestHeaderFieldsTooLarge, "request header too large")
		// The rest of the header is still coming: closed on it, the
		// connection would be reset, and the client would lose the 431
		// (net/http half-closes and waits too). The error handler cannot
		// hijack the connection, as lingerClose does: it lingers in
		// place, and fasthttp closes the connection after it, its own
		// write of the answer failing on the half-closed one.
		linger(ctx.Conn(), ctx.Conn(), &ctx.Response)
	case isTimeout(err):
		writeFastError(ctx, http.StatusRequestTimeout, "request timeout")
	case errors.Is(err, guard.ErrHeadEnd):
		writeFastError(ctx, http.StatusBadRequest, "bad request: the head must end in CRLF CRLF")
	case errors.Is(guard.CheckFailed(ctx.Conn()), guard.ErrTransferCoding):
		// A coding other than chunked, which net/http answers 501. The
		// guard's verdict tells, not fasthttp's error: fasthttp refuses
		// Content-Length with any Transfer-Encoding first, and gives
		// its sentinel for unsupported codings to HTTP/1.0's chunked.
		// fasthttp closes the connection after this answer.
		writeFastError(ctx, http.StatusNotImplemented, "unsupported transfer encoding")
	default:
		writeFastError(ctx, http.StatusBadRequest, "bad request")
	}
}

// fastLogger sends fasthttp's own log lines to the debug level.
type fastLogger struct{ log *slog.Logger }

func (l fastLogger) Printf(format string, args ...any) { l.log.Debug(fmt.Sprintf(format, args...)) }
