package health

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"syscall"
	"time"

	"github.com/clusterlb/clusterlb/internal/limits"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Checker checks one worker's address once.
type Checker interface {
	Check(ctx context.Context, addr string) error
}

// TCP passes when a TCP connection to the worker opens.
type TCP struct{}

// Check dials addr.
func (TCP) Check(ctx context.Context, addr string) error {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}

// HTTP passes when GET Path answers 2xx or 3xx. Path "*" (Ping) sends
// OPTIONS * instead, a request to the server itself (RFC 9110 9.3.7), and
// passes on any answer at all: for a worker whose paths are not known, it
// tells a process that answers HTTP from one that only lets the kernel
// accept its connections (stopped, or stuck in an endless loop), which a
// TCP connect cannot.
type HTTP struct {
	Path   string
	Client *http.Client // nil: a client without keep-alive
}

// NewHTTP returns an HTTP check of path. Each check opens a new connection,
// so a worker that stopped accepting fails even if an old connection
// still answers.
func NewHTTP(path string) *HTTP {
	return &HTTP{Path: path, Client: &http.Client{
		Transport: &http.Transport{DisableKeepAlives: true, Proxy: nil},
		// Redirects are answers: 3xx passes as it is.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
}

// Ping is the HTTP path that asks for an OPTIONS * check.
const Ping = "*"

// Check GETs the path on addr.
func (h *HTTP) Check(ctx context.Context, addr string) error {
	var req *http.Request
	var err error
	if h.Path == Ping {
		req, err = http.NewRequestWithContext(ctx, http.MethodOptions, "http://"+addr, nil)
		if err == nil {
			req.URL = &url.URL{Scheme: "http", Host: addr, Opaque: "*"}
		}
	} else {
		req, err = http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+h.Path, nil)
	}
	if err != nil {
		return err
	}
	resp, err := h.Client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its text would show the URL, "http:*" for OPTIONS *
		}
		return fmt.Errorf("%s %s on %s: %w", req.Method, req.URL.RequestURI(), addr, err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	if h.Path != Ping && resp.StatusCode >= 400 {
		return &StatusError{Path: h.Path, Code: resp.StatusCode}
	}
	return nil
}

// StatusError is a check the worker answered with a failure status: its
// own word that it is not healthy.
type StatusError struct {
	Path string
	Code int
}

func (e *StatusError) Error() string { return fmt.Sprintf("GET %s: status %d", e.Path, e.Code) }

// Counter turns a run of check results into up and down verdicts: rise
// passes in a row mean up, fall failures in a row mean down.
type Counter struct {
	Rise, Fall int
	passes     int
	fails      int
}

// Verdict is what one check result means for the worker.
type Verdict int

const (
	// Hold: not enough results in a row to change anything.
	Hold Verdict = iota
	// Pass: rise passes in a row.
	Pass
	// Fail: fall failures in a row.
	Fail
)

// Observe records one result and returns the verdict it completes.
func (c *Counter) Observe(ok bool) Verdict {
	if ok {
		c.fails = 0
		c.passes++
		if c.passes >= c.Rise {
			return Pass
		}
		return Hold
	}
	c.passes = 0
	c.fails++
	if c.fails >= c.Fall {
		return Fail
	}
	return Hold
}

// Options configures Monitor.
type Options struct {
	Interval time.Duration // between checks of a worker that is up or down
	Timeout  time.Duration // one check
	Rise     int
	Fall     int
	// StartInterval is the time between checks of a starting worker;
	// 0 means 25ms.
	StartInterval time.Duration
	Log           *slog.Logger
	// OnDown, if not nil, is called once when the worker's checks fail
	// fall times in a row while it is down or up: it went down, or stays
	// down although its process runs (the supervisor may replace it).
	// It is called again only after the worker was up in between.
	OnDown func(w *pool.Worker)
	// OnUp, if not nil, is called when the checks mark the worker up.
	OnUp func(w *pool.Worker)
	// Starting, if not nil, is told the failure of each check made while
	// the worker is starting, so that a start that times out can say
	// why (nothing listens on its port, its health path answers 404).
	Starting func(err error)
	// Progress, if not nil, counts the responses the worker gave. A
	// check that failed while the count grew since the last check is
	// taken as passed: the worker is busy, not hung (a CPU-bound request
	// queue can delay /health past its timeout; a Node worker at its
	// maxConnections drops the check's connection). Not a check the
	// worker answered with a failure status (a 503 from its /health),
	// which is its own word, nor a refused connection (nothing listens).
	Progress func() int64
}

// Monitor checks w's current process at addr until ctx is done, moving w
// between starting, up and down. The caller cancels ctx when the process
// exits and waits for Monitor to return before starting the next one.
func Monitor(ctx context.Context, w *pool.Worker, addr string, check Checker, o Options) {
	startEvery := o.StartInterval
	if startEvery <= 0 {
		startEvery = 25 * time.Millisecond
	}
	log := o.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	c := &Counter{Rise: o.Rise, Fall: o.Fall}
	last := w.State()
	reported := false // OnDown was called since the worker was last up
	short := false    // the last check could not be made (limits.Exhausted)
	var progress int64
	next := func(w *pool.Worker) time.Duration {
		if w.State() == pool.Starting {
			return startEvery
		}
		return o.Interval
	}
	t := time.NewTimer(0)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		before := w.State()
		cctx, cancel := context.WithTimeout(ctx, o.Timeout)
		err := check.Check(cctx, addr)
		cancel()
		if ctx.Err() != nil {
			return
		}
		if limits.Exhausted(err) {
			// The balancer could not open the check's socket: that says
			// nothing of the worker, which must not be marked down and
			// replaced, its requests cut, for the balancer's shortage.
			if !short {
				short = true
				log.Warn("health check not made: the balancer is out of descriptors, memory or ports", "worker", w.ID(), "pid", w.Pid(), "err", err)
			}
			t.Reset(next(w))
			continue
		}
		short = false
		if now := w.State(); now != before {
			// Moved while the check ran (the proxy found the worker
			// refusing connections, as its process died): the check's
			// answer may be from before, and a pass would bring a dead
			// process back up. Count afresh from the next one.
			c = &Counter{Rise: o.Rise, Fall: o.Fall}
			last = now
			t.Reset(startEvery)
			continue
		}
		if o.Progress != nil {
			n := o.Progress()
			if err != nil && excusable(err) && n > progress && w.State() != pool.Starting {
				err = nil // answering requests, so alive: only slow to check
			}
			progress = n
		}
		state := w.State()
		if state != last {
			// Someone else moved the worker (the proxy saw a refused
			// connection, the supervisor restarted it): count afresh.
			c = &Counter{Rise: o.Rise, Fall: o.Fall}
			last = state
		}
		if state == pool.Starting && err != nil {
			// A process that has not listened yet is not failing:
			// its start is bounded elsewhere.
			c = &Counter{Rise: o.Rise, Fall: o.Fall}
			if o.Starting != nil {
				o.Starting(err)
			}
		} else {
			switch c.Observe(err == nil) {
			case Pass:
				if state != pool.Up && (w.CompareAndSwapState(pool.Starting, pool.Up) || w.CompareAndSwapState(pool.Down, pool.Up)) {
					log.Info("worker up", "worker", w.ID(), "pid", w.Pid(), "addr", addr)
					last = pool.Up
					reported = false
					if o.OnUp != nil {
						o.OnUp(w)
					}
				}
			case Fail:
				if w.CompareAndSwapState(pool.Up, pool.Down) {
					log.Warn("worker down", "worker", w.ID(), "pid", w.Pid(), "addr", addr, "reason", err)
					last = pool.Down
				}
				if w.State() == pool.Down && !reported {
					reported = true
					if o.OnDown != nil {
						o.OnDown(w)
					}
				}
			}
		}
		t.Reset(next(w))
	}
}

// excusable reports whether a failed check may be the worker's being busy
// rather than hung: not a failure status it answered, nor a refusal.
func excusable(err error) bool {
	var se *StatusError
	return !errors.As(err, &se) && !errors.Is(err, syscall.ECONNREFUSED)
}
