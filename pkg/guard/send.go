package guard

import (
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"time"
)

// SendTimeout wraps l so that a write to an accepted conn fails when the
// client takes none of its bytes for d: each write gets a deadline, and a
// write that times out having sent some bytes goes on with a new one, so
// that only a client that stopped reading is cut off, not a slow one (as
// nginx's send_timeout, between two successive writes). A client that
// stops reading would otherwise hold its connection, and the worker's
// answer it is sent, for as long as it likes: the kernel keeps probing a
// zero window for ever. d must be above 0.
//
// A deadline set on the conn by its user (a lingering close's) stands
// until the user clears it. Put SendTimeout under NewListener: the guard
// must be the conn the server sees.
func SendTimeout(l net.Listener, d time.Duration) net.Listener {
	return &sendListener{Listener: l, d: d}
}

type sendListener struct {
	net.Listener
	d time.Duration
}

func (l *sendListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &sendConn{Conn: c, d: l.d}, nil
}

type sendConn struct {
	net.Conn
	d    time.Duration
	held atomic.Bool // the user set a write deadline of its own
}

// NetConn returns the connection c wraps.
func (c *sendConn) NetConn() net.Conn { return c.Conn }

func (c *sendConn) Write(b []byte) (int, error) {
	if c.held.Load() {
		return c.Conn.Write(b)
	}
	n := 0
	for {
		c.Conn.SetWriteDeadline(time.Now().Add(c.d))
		m, err := c.Conn.Write(b[n:])
		n += m
		if err == nil || m == 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			return n, err
		}
		// Some bytes went: the client reads, slowly. (net/http's
		// HTTP/2 server does the same with its WriteByteTimeout.)
	}
}

// SetDeadline and SetWriteDeadline: a deadline of the user's own holds
// until it clears it (the zero time), when the send timeout applies
// again.
func (c *sendConn) SetDeadline(t time.Time) error {
	c.held.Store(!t.IsZero())
	return c.Conn.SetDeadline(t)
}

func (c *sendConn) SetWriteDeadline(t time.Time) error {
	c.held.Store(!t.IsZero())
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite lets the server half-close before a lingering close.
func (c *sendConn) CloseWrite() error { return closeWrite(c.Conn) }

// ReadFrom copies through Write, so that each chunk gets its deadline (a
// tunnel's copy would otherwise splice with none).
func (c *sendConn) ReadFrom(r io.Reader) (int64, error) {
	return io.Copy(struct{ io.Writer }{c}, r)
}
