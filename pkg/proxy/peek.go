package proxy

import (
	"net"
	"syscall"
)

// idlePeek looks at an idle connection to a worker before it is reused:
// whether the worker sent anything on it, or closed it. Bytes that no
// request asked for (a body after a HEAD answer, a 204 or a 304, which a
// worker must not send) would be read as the answer to the next request,
// another client's; net/http's Transport, whose read loop watches every
// idle connection, closes such a connection too. A connection the worker
// closed would fail the request after it was written, when the worker
// may or may not have seen it; found before, the request was not sent.
// The same look at a client's connection (peerClosed) tells the fasthttp
// engine that the client of a request held back left.
type idlePeek struct {
	raw syscall.RawConn
	fn  func(fd uintptr) // made once per connection, so a look allocates nothing
	n   int
	err error
	buf [1]byte
}

// init readies p to look at nc's socket; p.raw stays nil, and no look
// finds anything, if nc has none that rawConn finds.
func (p *idlePeek) init(nc net.Conn) {
	p.raw = rawConn(nc)
	p.fn = func(fd uintptr) {
		p.n, _, p.err = syscall.Recvfrom(int(fd), p.buf[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	}
}

// unsolicited reports whether the worker sent anything on the idle
// connection, or closed it. One non-blocking peek.
func (p *idlePeek) unsolicited() bool {
	if p.raw == nil {
		return false
	}
	if err := p.raw.Control(p.fn); err != nil {
		return true
	}
	// EAGAIN: nothing there, the usual case. Anything else is data
	// (n > 0), the worker's close (n == 0) or a socket error.
	return p.err != syscall.EAGAIN
}

// rawConn returns the socket under nc, unwrapping the connections that
// wrap another (NetConn, as the guard's and tls.Conn have), or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	for {
		if sc, ok := nc.(syscall.Conn); ok {
			raw, err := sc.SyscallConn()
			if err != nil {
				return nil
			}
			return raw
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
}

// peerClosed reports whether the peer closed the connection, or it
// broke: one non-blocking peek, which reads nothing. Bytes waiting (a
// client's next request) are not a close. A client on the other side
// is what it looks at: the request held back of a client that left.
func (p *idlePeek) peerClosed() bool {
	if p.raw == nil {
		return false
	}
	if err := p.raw.Control(p.fn); err != nil {
		return true // closed on our side
	}
	switch {
	case p.err == syscall.EAGAIN:
		return false
	case p.err != nil:
		return true
	}
	return p.n == 0
}
