package proxy

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sync/atomic"
	"time"
)

// DefaultRetryBufferBytes is the largest request body buffered so that it
// can be replayed on another worker, when Options.RetryBufferBytes is 0.
const DefaultRetryBufferBytes = 1 << 20

// DefaultMaxResponseBytes is the largest body of a worker's answer the
// fasthttp engine takes (Options.MaxResponseBytes).
const DefaultMaxResponseBytes = 64 << 20

// errBodyRevoked is what a failed attempt's transport reads from a
// streamed body after the body was handed on to the next attempt.
var errBodyRevoked = errors.New("request body handed to another attempt")

// body is a request's body as the retry loop sees it. It lives on the
// stack of RoundTrip: a request without a body costs no allocation.
//
// A buffered body is held whole in buf and replayed to each attempt. It
// is a plain allocation, never pooled: the transport may go on reading an
// attempt's body after RoundTrip returned, whether with a response (the
// worker answered before reading all of it) or with an error (a timeout
// or a cancel returns without waiting for the write loop), and the
// handler may be gone by then, so no point is known where every reader
// of buf is done. Each attempt gets its own reader, so an old one moving
// its offset does not disturb the next; buf is never written after it was
// filled.
type body struct {
	buf    []byte    // the buffered body; nil when there is no body or it is streamed
	stream io.Reader // the body as read from the client while it is sent, when not buffered
	cur    *trackedBody
}

// readBody takes req's body for the retry loop, buffering it when it
// fits in limit bytes (limit < 0: never). A body of unknown length is
// read up to limit+1 bytes to learn whether it fits; when it does not,
// the part read is streamed ahead of the rest. An error means the client's
// body could not be read, and no worker was tried.
func readBody(req *http.Request, limit int64) (body, error) {
	if req.Body == nil || req.Body == http.NoBody {
		return body{}, nil
	}
	if limit < 0 {
		return body{stream: req.Body}, nil
	}
	buf, fits, err := readWhole(req.Body, req.ContentLength, limit)
	switch {
	case err != nil:
		return body{}, fmt.Errorf("%w: %w", errClientBody, err)
	case !fits && buf == nil:
		return body{stream: req.Body}, nil
	case !fits:
		return body{stream: io.MultiReader(bytes.NewReader(buf), req.Body)}, nil
	}
	return body{buf: buf}, nil
}

// readWhole reads a body of length n (< 0: unknown, read to its end)
// whole, if it has at most limit bytes. When it has more, fits is false
// and buf holds what was read of it: nothing of a body of known length,
// the first limit+1 bytes of one of unknown length, which tell that it
// does not fit.
func readWhole(r io.Reader, n, limit int64) (buf []byte, fits bool, err error) {
	switch {
	case n > limit:
		return nil, false, nil
	case n >= 0:
		buf, err = readN(r, int(n))
		return buf, true, err
	}
	probe := limit
	if probe < math.MaxInt64 {
		probe++
	}
	buf, err = io.ReadAll(io.LimitReader(r, probe))
	return buf, int64(len(buf)) <= limit, err
}

// readN reads the n bytes of a body of known length. The buffer grows
// as the bytes come (from 32 KiB, doubling), rather than being made n
// long at once: a client that announces a large body and sends none
// would otherwise have it held for it until it is cut off.
func readN(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, 0, min(n, 32<<10))
	for len(buf) < n {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(n-len(buf), cap(buf)))
		}
		m, err := r.Read(buf[len(buf):min(cap(buf), n)])
		buf = buf[:len(buf)+m]
		if err == io.EOF && len(buf) < n {
			err = io.ErrUnexpectedEOF
		}
		if err != nil && err != io.EOF {
			return nil, err
		}
		if err == io.EOF {
			break
		}
	}
	return buf, nil
}

// attach gives out the body for one attempt.
func (b *body) attach(out *http.Request) {
	switch {
	case b.stream != nil:
		b.cur = &trackedBody{r: b.stream}
		out.Body = b.cur
	case b.buf != nil:
		if len(b.buf) == 0 {
			out.Body = http.NoBody // a chunked body that turned out empty
		} else {
			// A NopCloser over a bytes.Reader is a reader the transport
			// knows not to block, so it sends a small body in the same
			// packet as the headers (Issue 22088).
			out.Body = io.NopCloser(bytes.NewReader(b.buf))
		}
		// The transports may send it again, on a new connection, when
		// the worker had closed the kept-alive one. (Over buf, not b, so
		// that b stays on the stack.)
		buf := b.buf
		out.GetBody = func() (io.ReadCloser, error) {
			if len(buf) == 0 {
				return http.NoBody, nil
			}
			return io.NopCloser(bytes.NewReader(buf)), nil
		}
		if len(out.Trailer) > 0 {
			// Trailers need chunked framing; http.Transport writes them
			// (h1 takes no body of unknown length).
			out.ContentLength = -1
			out.TransferEncoding = []string{"chunked"}
			break
		}
		// A body that came chunked goes out with its length now.
		out.ContentLength = int64(len(b.buf))
		out.TransferEncoding = nil
	}
}

// replayable reports whether the body can be sent again whole: there is
// none, or it is buffered.
func (b *body) replayable() bool { return b.stream == nil }

// clientErr is the error the client's streamed body gave the last
// attempt, if any: that attempt failed by the client's fault.
func (b *body) clientErr() error {
	if b.cur == nil {
		return nil
	}
	if e := b.cur.err.Load(); e != nil {
		return *e
	}
	return nil
}

// failed reports, after an attempt failed, whether an attempt read any of
// a streamed body; from then on the body can go to no other worker. It
// also makes sure the failed attempt reads nothing more.
func (b *body) failed() (bodyRead bool) {
	return b.cur != nil && !b.cur.revoke()
}

// trackedBody is one attempt's hold on a streamed body. It records
// whether the attempt read from it, and lets the retry loop take the body
// back for the next attempt only if it did not, atomically, so a write
// loop that outlives its RoundTrip cannot read a byte meant for the next
// worker. Close is ignored: the transport closes the body after a failed
// attempt, and the ReverseProxy closes the client's body at the end.
type trackedBody struct {
	r     io.Reader
	state atomic.Int32          // unread, read or revoked
	err   atomic.Pointer[error] // the client's read error, other than EOF
}

const (
	unread int32 = iota
	read
	revoked
)

func (b *trackedBody) Read(p []byte) (int, error) {
	if b.state.Load() != read && !b.state.CompareAndSwap(unread, read) {
		return 0, errBodyRevoked
	}
	n, err := b.r.Read(p)
	if err != nil && err != io.EOF {
		b.err.CompareAndSwap(nil, &err)
	}
	return n, err
}

func (b *trackedBody) Close() error { return nil }

// revoke reports whether the attempt never read from the body, and if so
// makes sure it never will.
func (b *trackedBody) revoke() bool {
	return b.state.CompareAndSwap(unread, revoked) || b.state.Load() == revoked
}

// stallGuard bounds each read of a client's request body: the
// connection's read deadline is set d ahead before the read, so a stalled
// body fails with a timeout (408). Once the body has ended it sets no
// more: net/http's background read, which watches from then on for the
// client leaving while the worker answers, must not time out. After a
// failed read the deadline stays, so that the server's draining of the
// rest cannot wait for ever either.
//
// In HTTP/2 a read deadline is a stream's timer that runs whether a read
// waits or not (a client held back by a slow worker is not stalling),
// and setting one is a message to the connection's goroutine: there a
// timer of the guard's own, armed only while a read waits, sets a
// deadline in the past when it fires.
type stallGuard struct {
	io.ReadCloser
	rc    *http.ResponseController
	d     time.Duration
	h2    bool
	ended bool

	timer   *time.Timer // HTTP/2
	reading atomic.Bool // HTTP/2: a read waits
}

func (g *stallGuard) Read(p []byte) (int, error) {
	if g.ended {
		return g.ReadCloser.Read(p)
	}
	if g.h2 {
		return g.readH2(p)
	}
	g.rc.SetReadDeadline(time.Now().Add(g.d)) // not supported: no guard
	n, err := g.ReadCloser.Read(p)
	if err == io.EOF {
		g.ended = true
		g.rc.SetReadDeadline(time.Time{}) // as the background read does
	}
	return n, err
}

func (g *stallGuard) readH2(p []byte) (int, error) {
	g.reading.Store(true)
	if g.timer == nil {
		g.timer = time.AfterFunc(g.d, g.expire)
	} else {
		g.timer.Reset(g.d)
	}
	n, err := g.ReadCloser.Read(p)
	g.reading.Store(false)
	g.timer.Stop()
	if err == io.EOF {
		g.ended = true
	}
	return n, err
}

func (g *stallGuard) expire() {
	if g.reading.Load() {
		g.rc.SetReadDeadline(time.Now())
	}
}

// trailerScrub removes the hop-by-hop fields from a request's trailers
// when its body ends: those of hopHeaders, Trailer, and those the
// request's Connection header names (RFC 9110 7.6.1). net/http's server
// puts every trailer field that came into the request's Trailer map at
// the body's end, declared or not, and the ReverseProxy cleans the
// header section only.
type trailerScrub struct {
	io.ReadCloser
	trailer    http.Header
	connection []string // the Connection header's values
	done       bool
}

func (t *trailerScrub) Read(p []byte) (int, error) {
	n, err := t.ReadCloser.Read(p)
	if err == io.EOF && !t.done {
		t.done = true
		scrubTrailer(t.trailer, t.connection)
	}
	return n, err
}

// scrubTrailer deletes from trailer the hop-by-hop fields: those of
// hopHeaders, Trailer, and those named by connection, the values of the
// Connection header of the message it ends. (answerWriter uses it on a
// 1xx answer's fields too, with their own Connection header.)
func scrubTrailer(trailer http.Header, connection []string) {
	if len(trailer) == 0 {
		return
	}
	for _, h := range hopHeaders {
		trailer.Del(h)
	}
	trailer.Del("Trailer")
	for name := range connectionTokens(connection) {
		trailer.Del(name)
	}
}
