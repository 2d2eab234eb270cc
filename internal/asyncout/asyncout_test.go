package asyncout

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stalledPipe is a pipe whose reader reads nothing until it is let go:
// the output of a balancer whose terminal was paused.
func stalledPipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

func TestWritesPassInOrder(t *testing.T) {
	var out bytes.Buffer
	r, pw := stalledPipe(t)
	w := New(pw, 1<<20, nil)
	var want strings.Builder
	for i := range 1000 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		w.Write([]byte(line))
	}
	w.Close(5 * time.Second)
	pw.Close()
	if _, err := io.Copy(&out, r); err != nil {
		t.Fatal(err)
	}
	if out.String() != want.String() {
		t.Errorf("got %d bytes, not the lines in order; want %d", out.Len(), want.Len())
	}
}

func TestStalledOutputDropsInsteadOfBlocking(t *testing.T) {
	r, pw := stalledPipe(t)
	var reported atomic.Int64
	w := New(pw, 64<<10, func(lost int64) { reported.Add(lost) })
	line := []byte(strings.Repeat("x", 99) + "\n")
	// The pipe's buffer (64 KiB) and the queue's take about 1 300 lines;
	// the rest must be dropped, and no Write may block.
	const n = 5000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			w.Write(line)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Write blocked on an output that takes nothing")
	}
	// Let the output go: what was queued arrives, and the loss is told.
	var got atomic.Int64
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		n, _ := io.Copy(io.Discard, r)
		got.Store(n)
	}()
	deadline := time.Now().Add(10 * time.Second)
	for reported.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	w.Close(5 * time.Second)
	pw.Close()
	<-readDone
	written := got.Load() / int64(len(line))
	if lost := reported.Load(); lost == 0 || written+lost != n {
		t.Errorf("%d lines written and %d reported lost; want some lost, and %d in all", written, lost, n)
	}
}

func TestCloseGivesUpOnAStalledOutput(t *testing.T) {
	_, pw := stalledPipe(t)
	w := New(pw, 1<<20, nil)
	w.Write(bytes.Repeat([]byte("y"), 200<<10)) // more than the pipe holds
	start := time.Now()
	w.Close(100 * time.Millisecond)
	if time.Since(start) > 5*time.Second {
		t.Errorf("Close waited %v for an output that takes nothing; want about its timeout", time.Since(start))
	}
}
