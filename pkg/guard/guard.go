package guard

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
)

// ErrAmbiguousLength means the request carried both Content-Length and Transfer-Encoding.
// net/http drops the Content-Length before a handler can see it (fixLength in
// net/http/transfer.go), so only the raw bytes tell.
var ErrAmbiguousLength = errors.New("guard: request has both Content-Length and Transfer-Encoding")

// ErrTransferEncodingHTTP10 means an HTTP/1.0 request carried Transfer-Encoding, which
// HTTP/1.0 does not have: RFC 9112 (section 6.1) says to treat its framing as faulty.
// net/http frames it by Content-Length, or as no body (Issue 12785), so a body sent
// chunked would be read as the next request, and a proxy in front that reads it
// chunked would see other requests than the balancer does.
var ErrTransferEncodingHTTP10 = errors.New("guard: HTTP/1.0 request has Transfer-Encoding")

// ErrRepeatedLength means the request carried Content-Length more than once, with the
// same value each time (differing values net/http refuses itself). RFC 9110 (section 8.6)
// lets a recipient take such a list as one value or reject it; net/http takes it, fasthttp
// rejects it, and nginx does: refused, so that both engines answer it alike, and a worker
// behind that reads repeats otherwise never sees one.
var ErrRepeatedLength = errors.New("guard: request has Content-Length more than once")

// ErrTransferCoding means an HTTP/1.1 request's Transfer-Encoding was other than one field
// "chunked": a coding the server does not know (RFC 9112 section 6.1 says 501), or chunked
// twice. net/http answers such a request 501 itself and closes the conn; a server that takes
// more codings (fasthttp takes "identity") reaches the handler with it, and Check says so.
// The framer cannot follow the body, so later requests on the conn fail with ErrUnverified.
var ErrTransferCoding = errors.New("guard: request has a transfer coding other than chunked")

// ErrHeadEnd means a request head did not end in CRLF CRLF, on a listener made with
// CRLFHeadEnd: a server that waits for those four bytes (fasthttp) would otherwise wait for
// the rest of a head it already has, until its read timeout.
var ErrHeadEnd = errors.New("guard: request head does not end in CRLF CRLF")

// ErrUnverified means the request came on a guarded conn whose framing the guard could no
// longer follow (a framing it does not accept, a head longer than its limit, a listener it
// does not see in plaintext), so it cannot vouch for the request. Check fails closed.
var ErrUnverified = errors.New("guard: request framing could not be verified")

// NewListener wraps l so every accepted conn's inbound bytes are scanned for HTTP/1.x
// request heads; the bytes themselves pass through unchanged.
//
// maxHeaderBytes should be the http.Server's MaxHeaderBytes; zero or less means
// http.DefaultMaxHeaderBytes, as it does for the server. The guard adds net/http's own
// read-ahead on top, so a head the server accepts is always inspected; a longer head stops
// inspection for that conn, and net/http answers it with 431 itself. A smaller value than the
// server's makes heads between the two fail Check with ErrUnverified.
//
// Serve the listener with ConnContext set on the server and Handler outermost. The guard
// must see plaintext: do not put tls.NewListener around it.
func NewListener(l net.Listener, maxHeaderBytes int, opts ...Option) net.Listener {
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = http.DefaultMaxHeaderBytes
	}
	gl := &listener{Listener: l, limit: maxHeaderBytes + bufioSlack}
	for _, o := range opts {
		o(gl)
	}
	return gl
}

// An Option changes what NewListener's conns accept.
type Option func(*listener)

// CRLFHeadEnd is for servers that find the end of a head by its last four bytes, CRLF
// CRLF, as fasthttp does; net/http also takes a bare LF there. A head that ends otherwise
// (its blank line, or the field line before it, ended by a bare LF; a CRLF right after the
// request line is an empty header block to fasthttp, however that line ended) stops the
// framer, so its request and any after it fail Check with ErrUnverified, and the conn's
// next Read fails with ErrHeadEnd: the server answers at once instead of waiting for bytes
// that the client will not send. Bare LFs inside a head still pass.
func CRLFHeadEnd() Option {
	return func(l *listener) { l.crlf = true }
}

type listener struct {
	net.Listener
	limit int  // largest head in bytes the framer follows
	crlf  bool // CRLFHeadEnd
}

func (l *listener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	f := newFramer(l.limit)
	f.crlf = l.crlf
	return &conn{Conn: c, f: f}, nil
}

// conn feeds what it reads to a framer. Reads come from one goroutine at a time (the
// server's, or its background read), Check from the handler's: mu orders the two.
type conn struct {
	net.Conn
	off    atomic.Bool // the framer is lost; reads skip the lock
	badEnd atomic.Bool // a head did not end in CRLF CRLF under CRLFHeadEnd; reads fail
	mu     sync.Mutex
	f      framer
}

func (c *conn) Read(b []byte) (int, error) {
	if c.badEnd.Load() {
		return 0, ErrHeadEnd
	}
	n, err := c.Conn.Read(b)
	if n > 0 && !c.off.Load() {
		c.mu.Lock()
		c.f.feed(b[:n])
		if c.f.lost() {
			c.off.Store(true)
			// The bytes read go to the server as they are; the next read tells it that
			// no more of this head will come.
			c.badEnd.Store(c.f.badEnd)
		}
		c.mu.Unlock()
	}
	return n, err
}

// NetConn returns the connection c wraps, as tls.Conn's does: for a look at the socket
// that reads nothing from it.
func (c *conn) NetConn() net.Conn { return c.Conn }

// CloseWrite lets net/http half-close before its lingering close (closeWriteAndWait), so
// a client still sending gets the 431 or 400 instead of a reset.
func (c *conn) CloseWrite() error { return closeWrite(c.Conn) }

// ReadFrom keeps the underlying conn's own ReadFrom for outbound copies (a TCP conn's
// sendfile and splice; SendTimeout's, which copies through its Write); only inbound bytes
// need inspecting.
func (c *conn) ReadFrom(r io.Reader) (int64, error) {
	if rf, ok := c.Conn.(io.ReaderFrom); ok {
		return rf.ReadFrom(r)
	}
	return io.Copy(struct{ io.Writer }{c.Conn}, r)
}

// verdict takes the verdict for the request with fingerprint fp. Verdicts of heads the
// handler never saw (net/http answers "OPTIONS *" itself) are skipped, but an error among
// them is kept: a skipped bad head fails the request after it.
func (c *conn) verdict(fp uint64) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var skipped error
	for {
		v, ok := c.f.pop()
		if !ok {
			return ErrUnverified
		}
		if v.fp != fp {
			if v.err != nil {
				skipped = v.err
			}
			continue
		}
		if v.err != nil {
			return v.err
		}
		return skipped
	}
}

type connKey struct{}

// ConnContext is meant for http.Server.ConnContext: it stores the guarded conn in ctx for
// Check. A conn that NewListener did not wrap leaves ctx as it is, and its requests pass
// Check unguarded. To combine with another ConnContext, call one inside the other.
func ConnContext(ctx context.Context, c net.Conn) context.Context {
	// A *tls.Conn over a guarded conn is a misconfiguration (the guard would see ciphertext);
	// storing the guarded conn anyway makes it fail loudly with ErrUnverified, not silently.
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	gc, ok := c.(*conn)
	if !ok {
		return ctx
	}
	return context.WithValue(ctx, connKey{}, gc)
}

// Check reports the verdict for r: nil if its head was fine, ErrAmbiguousLength if it had
// both Content-Length and Transfer-Encoding, ErrTransferEncodingHTTP10 if it was HTTP/1.0
// with Transfer-Encoding, ErrRepeatedLength if it had Content-Length twice,
// ErrTransferCoding if it was HTTP/1.1 with a Transfer-Encoding other than "chunked",
// ErrUnverified if the guard lost the conn's framing. It is nil for
// requests on conns the guard does not see (no ConnContext, or a listener NewListener did
// not wrap) and for HTTP/2 requests, whose framing is not HTTP/1's.
//
// Check pops the oldest verdict of r's conn: call it exactly once per request, before
// anything reads the body. Handler does.
func Check(r *http.Request) error {
	// "PRI * HTTP/2.0" read as HTTP/1 still reaches handlers as ProtoMajor 2 (net/http's
	// http1ServerSupportsRequest); it went through the framer, so it is checked.
	if r.ProtoMajor != 1 && r.Method != "PRI" {
		return nil
	}
	c, _ := r.Context().Value(connKey{}).(*conn)
	if c == nil {
		return nil
	}
	fp := fingerprint(fnvOffset, r.Method)
	fp = fingerprint(fp, " ")
	fp = fingerprint(fp, r.RequestURI)
	return c.verdict(fp)
}

// Handler wraps next, which must not be nil: on a Check error it answers 400 (501 for
// ErrTransferCoding) with a JSON body {"error":"..."} and "Connection: close", and never
// calls next. It must be the outermost handler, so that it sees every request the server
// reads.
func Handler(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := Check(r); err != nil {
			reject(w, err)
			return
		}
		next.ServeHTTP(w, r)
	})
}

func reject(w http.ResponseWriter, err error) {
	body, _ := json.Marshal(struct {
		Error string `json:"error"`
	}{err.Error()})
	body = append(body, '\n')
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	// The rest of the conn's bytes cannot be trusted to frame the next request.
	h.Set("Connection", "close")
	w.WriteHeader(Status(err))
	_, _ = w.Write(body)
}

// Status is the HTTP status that answers a Check error: 501 for ErrTransferCoding, as
// net/http answers a coding it does not know (RFC 9112 section 6.1), 400 for the others.
func Status(err error) int {
	if errors.Is(err, ErrTransferCoding) {
		return http.StatusNotImplemented
	}
	return http.StatusBadRequest
}

// CheckConn is Check for servers that are not net/http (the fasthttp
// engine): c is the conn the request came on, method and requestURI are
// its request line as sent. It pops the conn's oldest verdict like Check:
// call it exactly once per request. A conn NewListener did not wrap is
// not guarded: nil.
func CheckConn(c net.Conn, method, requestURI []byte) error {
	gc, ok := c.(*conn)
	if !ok {
		return nil
	}
	fp := fingerprint(fnvOffset, method)
	fp = fingerprint(fp, " ")
	fp = fingerprint(fp, requestURI)
	return gc.verdict(fp)
}

// CheckFailed is for a server that failed to read a request's head and
// so cannot name it (fasthttp resets the request it failed to parse): it
// takes the conn's oldest verdict, whichever head it was for, which is
// that head's when every request read before it was checked. The server
// must close the conn after it: the verdicts are out of step from then.
// A conn NewListener did not wrap, or no verdict: nil.
func CheckFailed(c net.Conn) error {
	gc, ok := c.(*conn)
	if !ok {
		return nil
	}
	gc.mu.Lock()
	defer gc.mu.Unlock()
	v, _ := gc.f.pop()
	return v.err
}
