package proxy

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/clusterlb/clusterlb/internal/limits"
	"github.com/clusterlb/clusterlb/pkg/pool"
)

// replayer tells the retry loop what it needs of a request body.
type replayer interface {
	// replayable: there is no body, or it is held whole.
	replayable() bool
	// failed is called after a failed attempt; it reports whether the
	// attempt read from a body that cannot be replayed.
	failed() bool
	// clientErr is, after a failed attempt, the error reading the
	// client's body gave it, if any.
	clientErr() error
}

// wholeBody is a body the engine holds whole (fasthttp reads every body
// into memory): always replayable.
type wholeBody struct{}

func (wholeBody) replayable() bool { return true }
func (wholeBody) failed() bool     { return false }
func (wholeBody) clientErr() error { return nil }

// forward is the request path both engines share: pick a worker, count
// the attempt and its response time (to the response headers), run try on the worker's current process, and when it fails, apply
// the retry rule and go on with the next worker. On success it returns
// the worker and process that answered, whose End the caller owes once
// the response is done; pool.CountRequest(true) is already counted. On
// failure it returns the error to map with Status; the worker's End is
// done. clientGone wraps err with the client's cancel, if any.
// resendable says whether the request may be sent twice (see resendable).
// When the pool bounds the requests at a worker, a request past the bound
// waits for its turn there, until ctx ends or queueWait passes (503); and
// when no worker is up but one is on its way (pool.PickWait), a request
// or its retry waits as long for one. A request that never reached its
// worker gets one try more than tried allows, on any worker, the same
// one's next process too; and a request that may be sent twice gets one
// try again on the balancer's only worker.
func forward(ctx context.Context, queueWait time.Duration, p *pool.Pool, maxRetries int, log *slog.Logger, resendable bool, body replayer,
	clientGone func(error) error, try func(proc *pool.Process, retry bool) error) (*pool.Worker, *pool.Process, error) {
	if maxRetries == 0 {
		maxRetries = len(p.Workers()) - 1
	}
	var triedBuf [8]*pool.Worker
	tried := triedBuf[:0]
	again := false // the one try past tried was made
	lone := false  // the lone worker's one try again was made
	w := p.PickWait(ctx, queueWait)
	for {
		if w == nil {
			return nil, nil, ErrNoWorker
		}
		proc, err := w.BeginWait(ctx, queueWait)
		if errors.Is(err, pool.ErrQueueTimeout) {
			return nil, nil, fmt.Errorf("%w: worker %d kept every place taken for %v", ErrNoWorker, w.ID(), queueWait)
		}
		if err != nil {
			return nil, nil, err // the client left while it waited
		}
		if proc == nil {
			// The process went away between the pick and now.
			tried = append(tried, w)
			w = p.PickExcept(tried)
			continue
		}
		start := time.Now()
		err = try(proc, len(tried) > 0)
		if err == nil {
			now := time.Now()
			w.Latency().Observe(now.Sub(start), now)
			p.CountRequest(true)
			return w, proc, nil
		}
		if limits.Exhausted(err) {
			// The balancer could not open a connection (out of
			// descriptors): not the worker's failure, and a retry's
			// connection would want one too. A 503.
			w.Abandon(proc)
			return nil, nil, err
		}
		if workerUnreachable(err) && w.Process() == proc {
			if !isTimeout(err) {
				// Refused: it closed its listener, exiting or stopping.
				// Its open connections are left to end on their own,
				// with what it sent on them first (pool.ErrWorkerGone).
				proc.MarkGone()
			}
			if w.CompareAndSwapState(pool.Up, pool.Down) {
				reason := "connection refused"
				if isTimeout(err) {
					reason = "connect timed out"
				}
				log.Warn("worker down", "worker", w.ID(), "pid", proc.Pid(), "addr", proc.Addr(), "reason", reason)
			}
		}
		tried = append(tried, w)
		bodyRead := body.failed()
		if cerr := body.clientErr(); cerr != nil {
			err = fmt.Errorf("%w: %w", errClientBody, cerr)
		}
		cause := clientGone(err)
		if errors.Is(cause, context.Canceled) || errors.Is(cause, errClientBody) {
			// The client left, or sent a broken body: the worker did
			// not fail, nor answer, and no other worker would do better.
			w.Abandon(proc)
			return nil, nil, err
		}
		var next *pool.Worker
		if maxRetries >= 0 && retryable(resendable, cause, body.replayable(), bodyRead) {
			if len(tried) <= maxRetries {
				next = p.PickExceptWait(ctx, tried, queueWait)
			}
			if next == nil && !again && notSent(cause) {
				// No other worker to try, but this one never got the
				// request: one more try, on whichever worker comes up
				// first, this one's next process too (a lone worker's
				// restart, or every worker's at once). Once only, so
				// that a worker that refuses every connection while
				// its health check passes cannot keep it going round.
				again = true
				next = p.PickWait(ctx, queueWait)
			}
			if next == nil && !lone && len(p.Workers()) == 1 && !w.Remote() {
				// The balancer's only worker died with the request
				// (reset, EOF), or closed its connection: one try
				// again, on the same worker, whose next process it
				// reaches if this one is gone (refused, then the try
				// above). Once only: a request that kills the worker
				// kills two processes at most, as with two workers.
				lone = true
				next = p.PickWait(ctx, queueWait)
			}
		}
		if next == nil {
			// Not to be retried, or no other worker to retry on: the
			// client gets this attempt's failure (502), not a retry
			// that never happened.
			w.End(proc, false, false)
			return nil, nil, err
		}
		w.End(proc, false, true)
		p.CountRetry()
		log.Debug("retrying on another worker", "worker", w.ID(), "err", err)
		w = next
	}
}
