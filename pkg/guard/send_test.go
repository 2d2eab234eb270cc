package guard

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"
)

// sendPair returns the server's side of a connection accepted through
// SendTimeout(d), and the client's.
func sendPair(t *testing.T, d time.Duration) (server, client net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	sl := SendTimeout(ln, d)
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := sl.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	client, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	server, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { server.Close(); client.Close() })
	return server, client
}

// TestSendTimeoutCutsAClientThatStopsReading: a write to a client that
// reads nothing fails once the timeout passes with none of its bytes
// taken, instead of blocking for ever.
func TestSendTimeoutCutsAClientThatStopsReading(t *testing.T) {
	server, _ := sendPair(t, 200*time.Millisecond)
	errc := make(chan error, 1)
	go func() {
		buf := make([]byte, 1<<20)
		for range 256 { // 256 MiB: far past what the sockets' buffers hold
			if _, err := server.Write(buf); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	select {
	case err := <-errc:
		if !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("got %v; want the write to time out", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the write still blocks after 20 s")
	}
}

// TestSendTimeoutSparesASlowReader: a client that keeps reading, slowly,
// is not cut off though one write takes it many timeouts: a write that
// timed out having sent some bytes goes on with a new deadline. (Over a
// pipe, which holds no byte the reader has not taken.)
func TestSendTimeoutSparesASlowReader(t *testing.T) {
	const size = 256 << 10
	server, client := net.Pipe()
	defer client.Close()
	sc := &sendConn{Conn: server, d: 200 * time.Millisecond}
	defer sc.Close()
	read := make(chan int64, 1)
	go func() {
		var n int64
		buf := make([]byte, 8<<10)
		for {
			m, err := client.Read(buf)
			n += int64(m)
			if err != nil {
				read <- n
				return
			}
			time.Sleep(50 * time.Millisecond) // 8 KiB per 50 ms: 256 KiB in over 1.5 s
		}
	}()
	if n, err := sc.Write(make([]byte, size)); err != nil {
		t.Fatalf("wrote %d of %d bytes: %v", n, size, err)
	}
	sc.Close()
	if n := <-read; n != size {
		t.Errorf("the client read %d bytes; want %d", n, size)
	}
}

// TestSendTimeoutLeavesTheUsersDeadline: a write deadline set on the conn
// stands (a lingering close bounds its own write) until it is cleared.
func TestSendTimeoutLeavesTheUsersDeadline(t *testing.T) {
	server, client := sendPair(t, time.Minute)
	server.SetWriteDeadline(time.Now().Add(-time.Second))
	if _, err := server.Write([]byte("x")); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("with a deadline passed: got %v; want the write to time out", err)
	}
	server.SetWriteDeadline(time.Time{})
	if _, err := server.Write([]byte("y")); err != nil {
		t.Errorf("with the deadline cleared: %v", err)
	}
	b := make([]byte, 1)
	client.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(client, b); err != nil || b[0] != 'y' {
		t.Errorf("the client read %q, %v; want y", b, err)
	}
}
