// Package asyncout passes the balancer's output on to its stdout or stderr
// from a goroutine of its own, so that an output that stalls never stalls
// the balancer.
//
// A terminal paused with Ctrl-S, or a pipe whose reader stopped reading,
// takes no more bytes once its buffer is full, and each write to it then
// blocks. Written in place, a log line would block the goroutine that
// logs it: with -access-log, every request, and without, a worker's
// restart or the graceful stop. Worse, the workers' own output, which the
// balancer relays, would block them. A Writer takes each write into a
// bounded queue instead and returns at once; past the bound, writes are
// dropped and counted, and once the output takes bytes again the count is
// reported (HAProxy drops its log lines the same way rather than hold its
// traffic for them).
package asyncout

import (
	"io"
	"sync"
	"time"
)

// Writer queues what is written to it for out. Its zero value is not
// usable; see New.
type Writer struct {
	out    io.Writer
	max    int
	onDrop func(lost int64)

	mu      sync.Mutex
	queue   []byte // waiting for out
	lost    int64  // writes dropped since the last report
	closing bool   // Close ran: the goroutine ends once the queue is empty
	wake    chan struct{}
	done    chan struct{} // closed when the goroutine has ended
	spare   []byte        // the buffer the goroutine wrote last, for reuse
}

// New returns a Writer to out that holds at most max bytes not yet
// written. onDrop, if not nil, is called from the Writer's goroutine with
// the number of writes dropped, once a write to out has succeeded after
// them; it may write to the Writer (a log line that says so).
func New(out io.Writer, max int, onDrop func(lost int64)) *Writer {
	w := &Writer{out: out, max: max, onDrop: onDrop, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go w.run()
	return w
}

// Write queues a copy of p and returns len(p) and no error, or drops p
// whole when the queue would pass its bound: a line is written whole or
// not at all.
func (w *Writer) Write(p []byte) (int, error) {
	w.mu.Lock()
	if len(w.queue)+len(p) > w.max {
		w.lost++
		w.mu.Unlock()
		return len(p), nil
	}
	w.queue = append(w.queue, p...)
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *Writer) run() {
	defer close(w.done)
	for {
		w.mu.Lock()
		for len(w.queue) == 0 {
			if w.closing {
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			<-w.wake
			w.mu.Lock()
		}
		buf := w.queue
		w.queue = w.spare[:0]
		w.mu.Unlock()

		_, err := w.out.Write(buf)

		w.mu.Lock()
		w.spare = buf
		lost := w.lost
		if err == nil && lost > 0 {
			w.lost = 0
		}
		w.mu.Unlock()
		if err == nil && lost > 0 && w.onDrop != nil {
			w.onDrop(lost)
		}
	}
}

// Close writes out what is queued, waiting at most timeout for an output
// that stalls, and then stops the Writer's goroutine (one blocked in a
// write to out stays so). What is written after Close may be lost.
func (w *Writer) Close(timeout time.Duration) {
	w.mu.Lock()
	w.closing = true
	w.mu.Unlock()
	select {
	case w.wake <- struct{}{}:
	default:
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-w.done:
	case <-t.C:
	}
}
