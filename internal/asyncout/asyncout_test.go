package asyncout

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pipe is an output whose reader reads nothing until the test reads it:
// the output of a balancer whose terminal was paused.
func pipe(t *testing.T) (r, w *os.File) {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return r, w
}

// readAll reads r until EOF on a goroutine of its own; the result comes
// on the channel.
func readAll(r io.Reader) <-chan string {
	got := make(chan string, 1)
	go func() {
		var b bytes.Buffer
		io.Copy(&b, r)
		got <- b.String()
	}()
	return got
}

// closed runs Close and fails the test if it does not return.
func closed(t *testing.T, timeout time.Duration, ws ...*Writer) {
	t.Helper()
	done := make(chan struct{})
	go func() { Close(timeout, ws...); close(done) }()
	select {
	case <-done:
	case <-time.After(timeout + 10*time.Second):
		t.Fatalf("Close did not return %v past its timeout", 10*time.Second)
	}
}

func TestWritesPassInOrder(t *testing.T) {
	r, pw := pipe(t)
	got := readAll(r)
	w := New(pw, 1<<20, nil)
	var want strings.Builder
	// Many times what the pipe holds: many batches.
	for i := range 50000 {
		line := fmt.Sprintf("line %d\n", i)
		want.WriteString(line)
		w.Write([]byte(line))
	}
	closed(t, 10*time.Second, w)
	pw.Close()
	if s := <-got; s != want.String() {
		t.Errorf("got %d bytes, not the lines in order; want %d", len(s), want.Len())
	}
}

// TestStalledOutputDropsAndTells: writes to an output that takes nothing
// neither block nor pass the bound; once it takes bytes again, one line
// tells how many were dropped, and every line is either written or
// counted in it.
func TestStalledOutputDropsAndTells(t *testing.T) {
	r, pw := pipe(t)
	w := New(pw, 64<<10, func(lost int64) []byte { return []byte("lost " + strconv.FormatInt(lost, 10) + "\n") })
	line := []byte(strings.Repeat("x", 63) + "\n")
	const n = 10000 // 640 KB: the pipe's 64 KiB and the queue's, many times over
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
	got := readAll(r)
	closed(t, 10*time.Second, w)
	pw.Close()
	out := <-got
	written := strings.Count(out, string(line))
	var lost int
	for l := range strings.Lines(out) {
		if rest, ok := strings.CutPrefix(l, "lost "); ok {
			k, err := strconv.Atoi(strings.TrimSpace(rest))
			if err != nil {
				t.Fatalf("notice %q", l)
			}
			lost += k
		}
	}
	if lost == 0 || written+lost != n {
		t.Errorf("%d lines written and %d told lost; want some lost, and %d in all", written, lost, n)
	}
}

func TestCloseGivesUpOnStalledOutputsAtOnce(t *testing.T) {
	_, pw1 := pipe(t)
	_, pw2 := pipe(t)
	w1, w2 := New(pw1, 1<<20, nil), New(pw2, 1<<20, nil)
	for _, w := range []*Writer{w1, w2} {
		w.Write(bytes.Repeat([]byte("y"), 200<<10)) // more than the pipe holds
	}
	start := time.Now()
	closed(t, 200*time.Millisecond, w1, w2)
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("Close returned after %v with both outputs stalled; want its timeout", d)
	}
}
