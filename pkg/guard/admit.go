package guard

import (
	"errors"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clusterlb/clusterlb/internal/limits"
)

// Admit wraps l so that at most max of the connections it accepted are
// open at once: past that, Accept waits for one of them to close, and the
// new ones wait in the kernel's listen queue meanwhile (HAProxy's
// maxconn), so that the balancer keeps the descriptors its workers'
// connections, health checks and restarts need. max 0 sets no bound.
//
// An Accept that fails for a shortage (limits.Exhausted: out of
// descriptors, buffers or memory) is tried again after a pause, 5 ms
// doubling up to 1 s, as net/http's Serve does; fasthttp's Serve would
// return, and end the balancer. log, if not nil, hears of the first
// shortage after an Accept that succeeded, and of the bound when it is
// reached (at most once a minute).
//
// Put Admit under SendTimeout and NewListener, next to the socket.
func Admit(l net.Listener, max int, log *slog.Logger) *AdmitListener {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &AdmitListener{Listener: l, max: max, log: log, done: make(chan struct{})}
	if max > 0 {
		a.slots = make(chan struct{}, max)
	}
	return a
}

// AdmitListener is the listener Admit returns.
type AdmitListener struct {
	net.Listener
	max      int
	open     atomic.Int64  // conns accepted and not closed yet
	slots    chan struct{} // one per open conn; nil: no bound
	log      *slog.Logger
	done     chan struct{} // closed by Close
	doneOnce sync.Once
	lastFull atomic.Int64 // when the bound was last logged, in Unix nanoseconds
	short    atomic.Bool  // the last Accept failed for a shortage
}

// errClosed is what Accept returns once Close ran while it waited: the
// text servers look for (fasthttp compares it, net/http asks Close).
var errClosed = &net.OpError{Op: "accept", Net: "tcp", Err: net.ErrClosed}

// Open counts the connections accepted and not closed yet.
func (l *AdmitListener) Open() int64 { return l.open.Load() }

func (l *AdmitListener) Accept() (net.Conn, error) {
	if l.slots != nil {
		select {
		case l.slots <- struct{}{}:
		default:
			l.full()
			select {
			case l.slots <- struct{}{}:
			case <-l.done:
				return nil, errClosed
			}
		}
	}
	var pause time.Duration
	for {
		c, err := l.Listener.Accept()
		if err == nil {
			l.short.Store(false)
			l.open.Add(1)
			return &admitConn{Conn: c, l: l}, nil
		}
		if !limits.Exhausted(err) {
			l.release()
			return nil, err
		}
		if !l.short.Swap(true) {
			l.log.Warn("cannot accept a client connection; new connections wait", "err", err)
		}
		pause = min(max(2*pause, 5*time.Millisecond), time.Second)
		t := time.NewTimer(pause)
		select {
		case <-t.C:
		case <-l.done:
			t.Stop()
			l.release()
			return nil, errClosed
		}
	}
}

// full logs that the bound is reached, at most once a minute.
func (l *AdmitListener) full() {
	now := time.Now().UnixNano()
	last := l.lastFull.Load()
	if last != 0 && now-last < int64(time.Minute) || !l.lastFull.CompareAndSwap(last, now) {
		return
	}
	l.log.Warn("client connections at max_conns; new ones wait in the listen queue", "max_conns", l.max)
}

func (l *AdmitListener) release() {
	if l.slots != nil {
		<-l.slots
	}
}

func (l *AdmitListener) Close() error {
	l.doneOnce.Do(func() { close(l.done) })
	return l.Listener.Close()
}

// admitConn gives its place back when it is closed, once.
type admitConn struct {
	net.Conn
	l      *AdmitListener
	closed atomic.Bool
}

// NetConn returns the connection c wraps.
func (c *admitConn) NetConn() net.Conn { return c.Conn }

func (c *admitConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.l.open.Add(-1)
		c.l.release()
	}
	return c.Conn.Close()
}

// CloseWrite lets the server half-close before a lingering close.
func (c *admitConn) CloseWrite() error { return closeWrite(c.Conn) }

// closeWrite half-closes c, if it can.
func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}
