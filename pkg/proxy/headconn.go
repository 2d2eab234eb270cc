package proxy

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
)

// headConn is a connection of the http.Transport to a worker that keeps
// the header block of the answer to the request it was last handed to.
// The Transport, like ReadResponse, deletes a Connection header that
// holds "close", and with it the other names it lists, which are
// hop-by-hop and which the ReverseProxy must then remove: the block
// gives them back (connection). h1 finds them in its own buffer instead.
type headConn struct {
	net.Conn
	on   atomic.Bool // keeping: from begin until the final block is whole; set false under mu
	mu   sync.Mutex
	head []byte   // what was read since begin, while the final block is not whole
	vals []string // the final block's Connection values, once it is whole
}

// CloseWrite half-closes the connection, as the ReverseProxy does to a
// worker's upgraded connection when the client half-closed its own:
// without it, the worker's last answer after the client's end was lost.
func (c *headConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// dialHead wraps dial so that every connection it makes is a headConn.
func dialHead(dial func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		return &headConn{Conn: c}, nil
	}
}

func (c *headConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 && c.on.Load() {
		c.keep(p[:n])
	}
	return n, err
}

// begin starts keeping what the connection reads: the transport has
// just handed it to a request, so the next bytes are that request's
// answer.
func (c *headConn) begin() {
	c.mu.Lock()
	c.head, c.vals = c.head[:0], nil
	c.mu.Unlock()
	c.on.Store(true)
}

// keep adds b to head, drops interim (1xx) blocks, and stops keeping once
// the final block is whole (its Connection values kept, the bytes let
// go) or head is past the header bound (the Transport refuses such an
// answer anyway).
func (c *headConn) keep(b []byte) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.on.Load() { // the block was whole, or past the bound, as b was read
		return
	}
	c.head = append(c.head, b...)
	for {
		end := headerEnd(c.head)
		if end < 0 {
			if len(c.head) > maxWorkerHeader {
				c.head = nil
				c.on.Store(false)
			}
			return
		}
		if interim(c.head) {
			c.head = append(c.head[:0], c.head[end:]...)
			continue
		}
		c.vals, c.head = connectionFrom(c.head[:end]), nil
		c.on.Store(false)
		return
	}
}

// connection returns the values of the Connection fields of the final
// answer's header block, or nil if the block was not kept whole.
func (c *headConn) connection() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.vals
}

// headerEnd returns the offset just past the blank line that ends the
// header block at the start of b, or -1 if b does not hold it yet. A
// line ends in LF, with or without a CR before it, as net/http reads
// them, so the block ends at the first LF followed by LF or CRLF.
func headerEnd(b []byte) int {
	end, n := bytes.Index(b, []byte("\n\r\n")), 3
	if lf := bytes.Index(b, []byte("\n\n")); lf >= 0 && (end < 0 || lf < end) {
		end, n = lf, 2
	}
	if end < 0 {
		return -1
	}
	return end + n
}

// interim reports whether the block at the start of b is a 1xx answer
// other than 101, which the Transport reads past to the final one.
func interim(b []byte) bool {
	_, rest, ok := bytes.Cut(b, []byte(" "))
	return ok && len(rest) >= 3 && rest[0] == '1' && !bytes.HasPrefix(rest, []byte("101"))
}

// traceHead returns ctx with a trace that, when the Transport hands a
// connection to the request, starts keeping its answer's header block;
// a function that returns the Connection values of that block; and one
// that reports whether the request got a connection at all (if not,
// nothing of it was sent). Both are called after RoundTrip returned.
func traceHead(ctx context.Context) (context.Context, func() []string, func() bool) {
	var got *headConn
	gotAny := false
	trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) {
		gotAny = true
		if hc, ok := info.Conn.(*headConn); ok {
			hc.begin()
			got = hc
		}
	}}
	return httptrace.WithClientTrace(ctx, trace), func() []string {
			if got == nil {
				return nil
			}
			return got.connection()
		}, func() bool {
			return gotAny
		}
}

// restoreConnection gives resp back the Connection header that the
// Transport deleted for its "close".
func restoreConnection(resp *http.Response, connection func() []string) {
	if resp.Close && resp.ProtoAtLeast(1, 1) && resp.Header["Connection"] == nil {
		if vals := connection(); vals != nil {
			resp.Header["Connection"] = vals
		}
	}
}
