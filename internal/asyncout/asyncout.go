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
// dropped and counted, and once the output takes bytes again a line says
// how many (HAProxy drops its log lines the same way rather than hold its
// traffic for them).
//
// Caveat: what is queued is lost if the process ends without Close: a Go
// runtime crash writes its trace to stderr at once, and the lines queued
// just before it (up to the bound) never come out.
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
	notice func(lost int64) []byte

	mu      sync.Mutex
	queue   []byte // waiting for out
	lost    int64  // writes dropped since the last notice
	closing bool   // Close ran: the goroutine ends once the queue is empty
	wake    chan struct{}
	done    chan struct{} // closed when the goroutine has ended
	spare   []byte        // the buffer the goroutine wrote last, for reuse
}

// New returns a Writer to out that holds at most max bytes not yet
// written (and writes up to max more at once). notice, if not nil, gives
// the line that tells of lost writes dropped: the Writer's goroutine
// writes it to out itself, past the bound, once a write to out has
// succeeded after them.
func New(out io.Writer, max int, notice func(lost int64) []byte) *Writer {
	w := &Writer{out: out, max: max, notice: notice, wake: make(chan struct{}, 1), done: make(chan struct{})}
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
	w.poke()
	return len(p), nil
}

func (w *Writer) poke() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
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
		if err == nil {
			w.lost = 0
		}
		w.mu.Unlock()
		if err == nil && lost > 0 && w.notice != nil {
			w.out.Write(w.notice(lost))
		}
	}
}

// Close writes out what is queued in each of ws, waiting at most timeout
// in all for outputs that stall, and then stops their goroutines (one
// blocked in a write to its output stays so). What is written to them
// after Close may be lost.
func Close(timeout time.Duration, ws ...*Writer) {
	for _, w := range ws {
		w.mu.Lock()
		w.closing = true
		w.mu.Unlock()
		w.poke()
	}
	t := time.NewTimer(timeout)
	defer t.Stop()
	for _, w := range ws {
		select {
		case <-w.done:
		case <-t.C:
			return
		}
	}
}
