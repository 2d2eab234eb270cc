package guard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

// replayConn serves msg over and over to Read; nothing else is used.
type replayConn struct {
	net.Conn
	msg []byte
	off int
}

func (c *replayConn) Read(b []byte) (int, error) {
	n := copy(b, c.msg[c.off:])
	c.off = (c.off + n) % len(c.msg)
	return n, nil
}

const benchHead = "GET /api/v1/items?id=42&sort=name HTTP/1.1\r\n" +
	"Host: lb.internal:8080\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Accept-Language: en-US,en;q=0.9\r\n" +
	"Cookie: session=0123456789abcdef0123456789abcdef; theme=dark\r\n" +
	"X-Request-Id: 7f3c9a2e-4b1d-4e8a-9c6f-2d5b8e1a0c3f\r\n" +
	"\r\n"

func chunkedBody(size, chunk int) string {
	var sb strings.Builder
	for size > 0 {
		n := min(size, chunk)
		fmt.Fprintf(&sb, "%x\r\n%s\r\n", n, strings.Repeat("b", n))
		size -= n
	}
	sb.WriteString("0\r\n\r\n")
	return sb.String()
}

// BenchmarkGuardedRequest measures what the guard adds to one request: conn/* runs the
// wrapped conn's Read and Check over an in-memory conn (the guard's whole cost, which
// should not allocate); loopback/* serves real requests with and without the guard.
func BenchmarkGuardedRequest(b *testing.B) {
	b.Run("conn/get", func(b *testing.B) {
		benchConn(b, benchHead, "GET", "/api/v1/items?id=42&sort=name")
	})
	b.Run("conn/chunked-post-16KiB", func(b *testing.B) {
		msg := strings.Replace(benchHead, "GET", "POST", 1)
		msg = strings.Replace(msg, "\r\n\r\n", "\r\nTransfer-Encoding: chunked\r\n\r\n", 1) + chunkedBody(16<<10, 4<<10)
		benchConn(b, msg, "POST", "/api/v1/items?id=42&sort=name")
	})
	b.Run("loopback/plain", func(b *testing.B) { benchLoopback(b, false, false) })
	b.Run("loopback/guarded", func(b *testing.B) { benchLoopback(b, true, false) })
	b.Run("loopback/guarded+send-timeout", func(b *testing.B) { benchLoopback(b, true, true) })
}

func benchConn(b *testing.B, msg, method, uri string) {
	c := &conn{Conn: &replayConn{msg: []byte(msg)}, f: newFramer(http.DefaultMaxHeaderBytes + bufioSlack)}
	req := (&http.Request{Method: method, RequestURI: uri, ProtoMajor: 1, ProtoMinor: 1}).
		WithContext(ConnContext(context.Background(), c))
	buf := make([]byte, 4096) // net/http's bufio.Reader size
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		for n := 0; n < len(msg); {
			k, _ := c.Read(buf[:min(len(buf), len(msg)-n)])
			n += k
		}
		if err := Check(req); err != nil {
			b.Fatal(err)
		}
	}
}

func benchLoopback(b *testing.B, guarded, send bool) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	var h http.Handler = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})
	srv := &http.Server{Handler: h}
	if send {
		ln = SendTimeout(ln, time.Minute)
	}
	if guarded {
		srv.Handler, srv.ConnContext = Handler(h), ConnContext
		ln = NewListener(ln, 0)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	defer func() {
		_ = srv.Close()
		<-done
	}()

	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	br := bufio.NewReader(c)
	req := []byte(benchHead)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			b.Fatal(err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			b.Fatalf("status: got %d; want %d", resp.StatusCode, http.StatusOK)
		}
	}
}
