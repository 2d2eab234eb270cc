package proxy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// h1MaxBody is the largest request body h1 takes: it writes the whole
// request before it reads the response, so the body must fit in the
// loopback socket's buffers even if the worker answers without reading it.
// Larger and streamed bodies go to http.Transport, which reads and writes
// at once.
const h1MaxBody = 64 << 10

// h1 is the httputil engine's round trip to a worker in the common case:
// HTTP/1.1 on a kept-alive loopback connection, the request written and
// the response header read on the caller's goroutine, with net/http's own
// Request.Write and ReadResponse. http.Transport gives each connection a
// read and a write goroutine and hands every request between them and
// the caller over channels; on loopback, where a round trip costs tens of
// microseconds, those handoffs were a large part of the engine's CPU
// (docs/bench/README.md has the figures). Upgrades and large or streamed
// bodies are not taken (takes): http.Transport handles them.
type h1 struct {
	dialer         net.Dialer
	headerTimeout  time.Duration // for the response header; 0: none
	idleTimeout    time.Duration // an idle connection older than this is closed, never reused
	maxIdlePerHost int

	links    sync.Map    // worker address → *h1Link
	sweeping atomic.Bool // a sweep is scheduled
}

// h1Link is h1's tie to the worker at one address: its open connections,
// and those of them that are free for the next request. The open ones
// are all closed at once when the worker is marked down (its process's
// UpContext ends), so that the requests on them go to another worker
// instead of waiting for the header timeout. One watch per up stretch of
// the worker, as the fasthttp engine's cutConns, rather than one per
// request on a context that all the worker's requests share.
type h1Link struct {
	stretch upStretch // the one whose end closes the connections

	mu    sync.Mutex
	conns map[*h1Conn]struct{}
	idle  []*h1Conn // free, oldest first
}

// watch makes sure l's connections are closed when up, the process's
// current UpContext, ends: all of them, unless it ends because the
// worker is gone (pool.ErrWorkerGone), when the busy ones read what the
// worker sent before the kernel ends them.
func (l *h1Link) watch(up context.Context) {
	if l.stretch.fresh(up) {
		context.AfterFunc(up, func() { l.cut(!pool.Gone(up)) })
	}
}

// cut closes l's idle connections, and its busy ones too when busy, an
// abort for the request on each (abortDown).
func (l *h1Link) cut(busy bool) {
	l.mu.Lock()
	var conns []*h1Conn
	if busy {
		conns = slices.Collect(maps.Keys(l.conns))
	} else {
		conns = slices.Clone(l.idle)
	}
	clear(l.idle)
	l.idle = l.idle[:0]
	l.mu.Unlock()
	for _, c := range conns {
		c.abortedBy.CompareAndSwap(0, abortDown)
		c.close()
	}
}

func newH1(headerTimeout time.Duration) *h1 {
	return &h1{
		dialer:         workerDialer(),
		headerTimeout:  headerTimeout,
		idleTimeout:    workerIdleTimeout,
		maxIdlePerHost: maxIdlePerWorker,
	}
}

// takes reports whether h1 can carry req: not an upgrade, and no body or
// a small one held in memory (GetBody set by body.attach).
func (t *h1) takes(req *http.Request) bool {
	if req.Header.Get("Upgrade") != "" {
		return false
	}
	return req.Body == nil || req.Body == http.NoBody ||
		(req.GetBody != nil && req.ContentLength >= 0 && req.ContentLength <= h1MaxBody)
}

// h1Conn is one kept-alive connection to a worker.
type h1Conn struct {
	t      *h1
	link   *h1Link   // its worker address's
	gate   *dialGate // its worker address's
	nc     net.Conn
	in     capReader // nc, as br reads it
	br     *bufio.Reader
	bw     *bufio.Writer
	idleAt time.Time
	reused bool

	// One request at a time: the watch on the client's context, and
	// why the request was aborted, if it was (the link's cut aborts it
	// when the worker goes down).
	stopClient func() bool
	abortedBy  atomic.Int32 // 0, abortClient or abortDown
	onClient   func()       // made once per connection, so arming the watch allocates less

	// The look at an idle connection before it is reused.
	peek idlePeek
}

const (
	abortClient = 1
	abortDown   = 2
)

// aLongTimeAgo is a deadline in the past: setting it makes every blocked
// read and write on the connection return at once.
var aLongTimeAgo = time.Unix(1, 0)

func (c *h1Conn) abort(by int32) {
	c.abortedBy.CompareAndSwap(0, by)
	c.nc.SetDeadline(aLongTimeAgo)
}

// close closes c and takes it out of its link.
func (c *h1Conn) close() {
	c.link.mu.Lock()
	delete(c.link.conns, c)
	c.link.mu.Unlock()
	c.nc.Close()
}

// roundTrip sends req to the worker at req.URL.Host and returns its
// response, whose body gives the connection back when read to the end.
// The request is aborted when the client goes away (req's context) or
// the worker is marked down (down, its process's UpContext), the latter
// with an error that wraps pool.ErrWorkerDown.
func (t *h1) roundTrip(req *http.Request, down context.Context) (*http.Response, error) {
	addr := req.URL.Host
	fresh := false
	for {
		c, err := t.conn(req.Context(), down, addr, fresh)
		if err != nil {
			return nil, err
		}
		resp, err := c.roundTrip(req, down)
		if err == nil {
			return resp, nil
		}
		if errors.Is(err, errStale) && req.Context().Err() == nil && resendable(req) {
			// The worker closed the kept-alive connection after it
			// passed the look before reuse: most likely before it read
			// the request, but it may have acted on it and died, so
			// the request goes again, on a new connection, once, only
			// if it may be sent twice (as net/http's retry on
			// errServerClosedIdle). The other idle connections may be
			// as stale: the next one is new.
			if req.GetBody != nil {
				if req.Body, err = req.GetBody(); err != nil {
					return nil, err
				}
			}
			fresh = true
			continue
		}
		return nil, err
	}
}

// h1BufSize is the size of an h1 connection's buffers.
const h1BufSize = 4 << 10

// capReader is r with a cap on the bytes read while left >= 0: past it,
// errHeaderTooLarge. h1 sets the cap around a response's header blocks,
// which net/http's ReadResponse would read whatever their size.
type capReader struct {
	r    io.Reader
	left int
}

func (r *capReader) Read(p []byte) (int, error) {
	if r.left < 0 {
		return r.r.Read(p)
	}
	if r.left == 0 {
		return 0, errHeaderTooLarge
	}
	if len(p) > r.left {
		p = p[:r.left]
	}
	n, err := r.r.Read(p)
	r.left -= n
	return n, err
}

// connectionFrom returns the values of the Connection fields of the
// header block at the start of raw, or nil when raw does not hold the
// whole block. raw is what the connection's buffer held before
// ReadResponse, which is still in place if ReadResponse read nothing
// more from the connection (the buffer was not refilled): the caller
// checks that. A block that came in more than one read is left as
// ReadResponse made it. A field folded over lines (obsolete, but
// net/http joins them) counts whole.
func connectionFrom(raw []byte) []string {
	end := headerEnd(raw)
	if end < 0 {
		return nil
	}
	var vals []string
	in := false // the last field was a Connection field
	lines := bytes.Split(raw[:end], []byte("\n"))
	for _, line := range lines[1:] { // after the status line
		line = bytes.TrimSuffix(line, []byte("\r"))
		if len(line) > 0 && (line[0] == ' ' || line[0] == '\t') {
			if in {
				vals[len(vals)-1] += " " + string(bytes.TrimSpace(line))
			}
			continue
		}
		name, value, ok := bytes.Cut(line, []byte(":"))
		in = ok && bytes.EqualFold(name, []byte("Connection"))
		if in {
			vals = append(vals, string(bytes.TrimSpace(value)))
		}
	}
	return vals
}

// errStale means a reused connection failed before any byte of the
// response: the worker closed it, most likely while it sat idle (after
// the look before reuse, which would have found it closed).
var errStale = errors.New("kept-alive connection closed by the worker before it answered")

func (c *h1Conn) roundTrip(req *http.Request, down context.Context) (*http.Response, error) {
	if c.t.headerTimeout > 0 {
		c.nc.SetReadDeadline(time.Now().Add(c.t.headerTimeout))
	}
	c.abortedBy.Store(0)
	// The answer's header blocks, 1xx ones included, get maxWorkerHeader
	// bytes between them: what the buffer reads past them counts too.
	// (http.Transport's MaxResponseHeaderBytes starts again after each
	// 1xx it gives to the ReverseProxy's trace; one budget for all bounds
	// a worker that sends 1xx answers without end.)
	c.in.left = maxWorkerHeader
	c.stopClient = context.AfterFunc(req.Context(), c.onClient)
	c.link.watch(down)
	if down.Err() != nil {
		// Marked down before the watch above, or its cut took the
		// link's connections before this one was added.
		c.abort(abortDown)
	}

	var err error
	if !writeHead(c.bw, req) {
		err = req.Write(c.bw)
	}
	if err == nil {
		err = c.bw.Flush()
	}
	if err == nil {
		_, err = c.br.Peek(1)
	}
	if err != nil && c.reused && c.abortedBy.Load() == 0 && connLost(err) {
		c.in.left = -1
		c.release(false)
		return nil, fmt.Errorf("%w: %w", errStale, err)
	}
	var resp *http.Response
	// The answer's first bytes, in the buffer: they stay in place if
	// ReadResponse reads no more from the connection (see connectionFrom).
	raw, _ := c.br.Peek(c.br.Buffered())
	unread := c.in.left
	informational := false
	trace := httptrace.ContextClientTrace(req.Context())
	for err == nil {
		resp, err = http.ReadResponse(c.br, req)
		// 1xx answers (100 Continue, 103 Early Hints) come before
		// the response; the body was sent whole already. Each goes to
		// the trace as http.Transport gives it, which is how the
		// ReverseProxy passes it on to the client (answerWriter says
		// which reach it).
		if err != nil || resp.StatusCode >= 200 || resp.StatusCode < 100 || resp.StatusCode == http.StatusSwitchingProtocols {
			break
		}
		informational = true
		if trace != nil && trace.Got1xxResponse != nil {
			err = trace.Got1xxResponse(resp.StatusCode, textproto.MIMEHeader(resp.Header))
		}
	}
	inPlace := c.in.left == unread
	c.in.left = -1
	if err == nil && inPlace && resp.Close && !informational && resp.ProtoAtLeast(1, 1) && resp.Header["Connection"] == nil {
		// ReadResponse deletes a Connection header that holds
		// "close", and with it the other names it lists, which the
		// ReverseProxy must remove: it gets them back.
		resp.Header["Connection"] = connectionFrom(raw)
	}
	if err == nil {
		// h1 carries no upgrade (takes): any 101 is unasked.
		err = badAnswer(req, resp)
	}
	if err != nil {
		c.release(false)
		return nil, c.cause(req.Context(), err)
	}
	inBuffer := resp.Body == http.NoBody ||
		(resp.ContentLength >= 0 && int64(c.br.Buffered()) >= resp.ContentLength)
	if c.t.headerTimeout > 0 && !inBuffer {
		// The header timeout must not cut a long body short. (A body
		// already in the buffer, the usual small answer, reads nothing
		// more from the socket before the next request sets its own
		// deadline: the clearing's cost is saved.)
		c.nc.SetReadDeadline(time.Time{})
		if c.abortedBy.Load() != 0 {
			// The abort came between the header and the line above,
			// which undid its deadline.
			c.nc.SetDeadline(aLongTimeAgo)
		}
	}
	if !inBuffer && resp.ContentLength > 0 && resp.ContentLength <= int64(c.br.Size()) {
		// A short answer that came in parts is read whole before its
		// header goes on (as long as it takes, as a longer body would
		// be streamed; the watches still abort it): one the worker
		// cuts off is then a failed attempt, for another worker or a
		// 502, where the client had got a connection closed without a
		// byte. (The fasthttp engine reads every answer whole.)
		if _, err := c.br.Peek(int(resp.ContentLength)); err != nil {
			c.release(false)
			return nil, c.cause(req.Context(), err)
		}
	}
	keep := !resp.Close && !req.Close
	if resp.Body == http.NoBody {
		c.release(keep)
		return resp, nil
	}
	resp.Body = &h1Body{rc: resp.Body, c: c, keep: keep, ctx: req.Context()}
	return resp, nil
}

// cause returns the reason for a failed I/O: the client's cancel or the
// worker's going down when one aborted it (the deadline error alone would
// read as a timeout), else err.
func (c *h1Conn) cause(ctx context.Context, err error) error {
	switch c.abortedBy.Load() {
	case abortClient:
		return fmt.Errorf("%w (%v)", context.Cause(ctx), err)
	case abortDown:
		return workerDown(err)
	}
	return err
}

// release ends the connection's request: it goes back to the idle list
// when keep is true and neither watch fired, else it is closed.
func (c *h1Conn) release(keep bool) {
	if !c.stopClient() || c.abortedBy.Load() != 0 {
		keep = false
	}
	if keep && c.br.Buffered() > 0 {
		// More than the answer came: see unsolicited.
		keep = false
	}
	if keep {
		c.t.put(c)
	} else {
		c.close()
	}
}

// h1Body is a response body read straight from the worker's connection.
type h1Body struct {
	rc   io.ReadCloser
	c    *h1Conn
	ctx  context.Context
	keep bool
	done atomic.Bool
}

func (b *h1Body) Read(p []byte) (int, error) {
	if b.done.Load() {
		return 0, io.EOF
	}
	n, err := b.rc.Read(p)
	if err == io.EOF {
		if b.done.CompareAndSwap(false, true) {
			b.c.release(b.keep)
		}
	} else if err != nil {
		if b.done.CompareAndSwap(false, true) {
			b.c.release(false)
		}
		err = b.c.cause(b.ctx, err)
	}
	return n, err
}

// Close closes the connection unless the body was read to its end:
// net/http's body would read the rest first, however long.
func (b *h1Body) Close() error {
	if b.done.CompareAndSwap(false, true) {
		b.c.release(false)
	}
	return nil
}

// conn returns an idle connection to addr, or a new one (always, when
// fresh is true). A new one waits for the worker to have accepted those
// opened before (its dialGate), taking meanwhile a connection handed
// over as it comes back (put), or stops waiting when down ends.
func (t *h1) conn(ctx, down context.Context, addr string, fresh bool) (*h1Conn, error) {
	if !fresh {
		if c := t.idleConn(addr); c != nil {
			return c, nil
		}
	}
	return t.newConn(ctx, down, addr, fresh)
}

// newConn is conn when no idle connection was there.
func (t *h1) newConn(ctx, down context.Context, addr string, fresh bool) (*h1Conn, error) {
	ap := gateAddr(addr)
	g := gateFor(ap)
	var wt *want
	if !fresh {
		wt = &want{from: t, back: t.putBack, take: func() any {
			if c := t.idleConn(addr); c != nil {
				return c
			}
			return nil
		}}
	}
	for {
		leave, got, err := g.enter(ctx, down, ap, wt, t.headerTimeout)
		if err != nil {
			return nil, err
		}
		if got != nil {
			c := got.(*h1Conn)
			if c.reused {
				return c, nil // from idleConn
			}
			// Handed over by put, as it came back: looked at as
			// idleConn looks.
			if c.peek.unsolicited() {
				c.close()
				continue
			}
			c.reused = true
			return c, nil
		}
		nc, err := t.dialer.DialContext(ctx, "tcp", addr)
		leave()
		if err != nil {
			if ctx.Err() != nil {
				// The client left during the dial: no fault of the
				// worker's, which a dial error would mark down.
				return nil, fmt.Errorf("%w (%v)", context.Cause(ctx), err)
			}
			return nil, err
		}
		c := &h1Conn{t: t, link: t.link(addr), gate: g, nc: nc, bw: bufio.NewWriterSize(nc, h1BufSize)}
		if !ap.IsValid() {
			c.gate = nil // no request is ever held back for it
		}
		c.in = capReader{r: nc, left: -1}
		c.br = bufio.NewReaderSize(&c.in, h1BufSize)
		c.onClient = func() { c.abort(abortClient) }
		c.peek.init(nc)
		c.link.mu.Lock()
		c.link.conns[c] = struct{}{}
		c.link.mu.Unlock()
		return c, nil
	}
}

// idleConn returns the newest idle connection to addr fit for reuse, or
// nil.
func (t *h1) idleConn(addr string) *h1Conn {
	l := t.link(addr)
	for {
		now := time.Now()
		var stale []*h1Conn
		var c *h1Conn
		l.mu.Lock()
		if n := len(l.idle); n > 0 {
			if now.Sub(l.idle[n-1].idleAt) < t.idleTimeout {
				c = l.idle[n-1]
				l.idle[n-1] = nil
				l.idle = l.idle[:n-1]
			} else {
				// The newest is too old, so all are.
				stale = l.idle
				l.idle = nil
			}
		}
		l.mu.Unlock()
		for _, s := range stale {
			s.close()
		}
		if c == nil {
			return nil
		}
		if !c.peek.unsolicited() { // (release kept none with bytes in its buffer)
			c.reused = true
			return c
		}
		c.close()
	}
}

// put keeps c for the next request to its worker: it hands c to the
// request held back longest for a connection to that worker, if one
// is, else puts it in the idle list.
func (t *h1) put(c *h1Conn) {
	c.reused = false // (a request handed c looks at it first)
	if c.gate == nil {
		t.keep(c)
		return
	}
	c.gate.give(t, c, func() { t.keep(c) })
}

// putBack is put for a connection handed to a request that stopped
// waiting for it.
func (t *h1) putBack(v any) {
	t.put(v.(*h1Conn))
}

// keep puts c in its link's idle list.
func (t *h1) keep(c *h1Conn) {
	c.idleAt = time.Now()
	l := c.link
	l.mu.Lock()
	if len(l.idle) >= t.maxIdlePerHost {
		l.mu.Unlock()
		c.close()
		return
	}
	l.idle = append(l.idle, c)
	l.mu.Unlock()
	if !t.sweeping.Load() && t.sweeping.CompareAndSwap(false, true) {
		time.AfterFunc(t.idleTimeout, t.sweep)
	}
}

// sweep closes the connections idle for idleTimeout, those of workers
// that are gone among them, and comes back while any are left.
func (t *h1) sweep() {
	// Unmarked first: a connection kept while the sweep goes over the
	// links, behind it, schedules the next one.
	t.sweeping.Store(false)
	cutoff := time.Now().Add(-t.idleTimeout)
	var stale []*h1Conn
	left := false
	t.links.Range(func(_, v any) bool {
		l := v.(*h1Link)
		l.mu.Lock()
		i := 0
		for i < len(l.idle) && !l.idle[i].idleAt.After(cutoff) {
			i++
		}
		stale = append(stale, l.idle[:i]...)
		n := copy(l.idle, l.idle[i:])
		clear(l.idle[n:])
		l.idle = l.idle[:n]
		left = left || n > 0
		l.mu.Unlock()
		return true
	})
	if left && t.sweeping.CompareAndSwap(false, true) {
		time.AfterFunc(t.idleTimeout, t.sweep)
	}
	for _, c := range stale {
		c.close()
	}
}

// closeIdle closes every idle connection.
func (t *h1) closeIdle() {
	var idle []*h1Conn
	t.links.Range(func(_, v any) bool {
		l := v.(*h1Link)
		l.mu.Lock()
		idle = append(idle, l.idle...)
		l.idle = nil
		l.mu.Unlock()
		return true
	})
	for _, c := range idle {
		c.close()
	}
}

// link returns the link to the worker at addr. A restarted worker gets
// a new port, so the map keeps a link per address a worker ever had: a
// small struct, empty once its connections are closed.
func (t *h1) link(addr string) *h1Link {
	if l, ok := t.links.Load(addr); ok {
		return l.(*h1Link)
	}
	l, _ := t.links.LoadOrStore(addr, &h1Link{conns: make(map[*h1Conn]struct{})})
	return l.(*h1Link)
}
