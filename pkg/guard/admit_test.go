package guard

import (
	"errors"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/internal/testutil"
)

// acceptAll accepts on l until it fails, handing each conn to the channel.
func acceptAll(t *testing.T, l net.Listener) <-chan net.Conn {
	t.Helper()
	got := make(chan net.Conn, 16)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			got <- c
		}
	}()
	t.Cleanup(func() {
		l.Close()
		<-done
		close(got)
		for c := range got {
			c.Close()
		}
	})
	return got
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// accepted waits up to d for a conn from got; nil if none came.
func accepted(got <-chan net.Conn, d time.Duration) net.Conn {
	select {
	case c := <-got:
		return c
	case <-time.After(d):
		return nil
	}
}

func TestAdmitBoundsOpenConnections(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var logged testutil.SyncBuffer
	l := Admit(inner, 2, slog.New(slog.NewTextHandler(&logged, nil)))
	got := acceptAll(t, l)
	addr := inner.Addr().String()

	for range 3 {
		dial(t, addr) // the kernel completes all three
	}
	first := accepted(got, 5*time.Second)
	if first == nil || accepted(got, 5*time.Second) == nil {
		t.Fatal("the first two connections were not accepted")
	}
	if c := accepted(got, 200*time.Millisecond); c != nil {
		t.Fatal("a third connection was accepted past the bound of 2")
	}
	if n := l.Open(); n != 2 {
		t.Errorf("Open() = %d with two connections accepted; want 2", n)
	}
	if !strings.Contains(logged.String(), "max_conns=2") {
		t.Errorf("the bound was not logged: %q", logged.String())
	}
	// A close, twice, frees one place.
	first.Close()
	first.Close()
	if accepted(got, 5*time.Second) == nil {
		t.Fatal("the third connection was not accepted after one closed")
	}
	if n := l.Open(); n != 2 {
		t.Errorf("Open() = %d with the second and third open; want 2", n)
	}
	dial(t, addr)
	if c := accepted(got, 200*time.Millisecond); c != nil {
		t.Fatal("a second close of one connection freed a second place")
	}
}

func TestAdmitCloseEndsAWaitForAPlace(t *testing.T) {
	inner, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	l := Admit(inner, 1, nil)
	dial(t, inner.Addr().String())
	c, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	errc := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if c != nil {
			c.Close()
		}
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond) // let it wait; it returns either way
	l.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) || !strings.Contains(err.Error(), "use of closed network connection") {
			t.Errorf("got %v; want net.ErrClosed, as fasthttp's Serve reads it", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Accept still waits for a place after Close")
	}
}

// shortListener fails its first n Accepts with err, then accepts from
// the listener it wraps.
type shortListener struct {
	net.Listener
	mu  sync.Mutex
	n   int
	err error
}

func (l *shortListener) Accept() (net.Conn, error) {
	l.mu.Lock()
	if l.n > 0 {
		l.n--
		l.mu.Unlock()
		return nil, l.err
	}
	l.mu.Unlock()
	return l.Listener.Accept()
}

func TestAdmitWaitsOutAShortage(t *testing.T) {
	emfile := &net.OpError{Op: "accept", Net: "tcp", Err: os.NewSyscallError("accept4", syscall.EMFILE)}
	for _, tt := range []struct {
		name    string
		max     int
		err     error
		wantErr bool
	}{
		{"out of descriptors", 0, emfile, false},
		{"out of descriptors, bounded", 1, emfile, false},
		{"out of memory", 0, os.NewSyscallError("accept4", syscall.ENOMEM), false},
		{"another error", 1, errors.New("broken"), true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			inner, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var logged testutil.SyncBuffer
			l := Admit(&shortListener{Listener: inner, n: 3, err: tt.err}, tt.max, slog.New(slog.NewTextHandler(&logged, nil)))
			defer l.Close()
			dial(t, inner.Addr().String())
			c, err := l.Accept()
			if tt.wantErr {
				if err != tt.err {
					t.Fatalf("got %v; want %v", err, tt.err)
				}
				// Its place was given back: the next Accept gets one
				// (a place kept would hold it until the Close below).
				stop := time.AfterFunc(5*time.Second, func() { l.Close() })
				defer stop.Stop()
				sl := l.Listener.(*shortListener)
				sl.mu.Lock()
				sl.n = 0
				sl.mu.Unlock()
				if c, err = l.Accept(); err != nil {
					t.Fatalf("after a failed Accept: %v; want the connection, its place given back", err)
				}
				c.Close()
				return
			}
			if err != nil {
				t.Fatalf("got %v; want the connection after the shortage", err)
			}
			c.Close()
			if n := strings.Count(logged.String(), "cannot accept"); n != 1 {
				t.Errorf("the shortage was logged %d times; want once: %q", n, logged.String())
			}
		})
	}
}
