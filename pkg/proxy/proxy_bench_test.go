package proxy

import (
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/valyala/fasthttp"
)

// BenchmarkProxyGET measures one proxied GET without a body, the hot path,
// through a real in-process worker, for each engine: the client, the
// balancer's server and the worker all run over loopback sockets.
func BenchmarkProxyGET(b *testing.B) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer worker.Close()
	addr := worker.Listener.Addr().String()

	b.Run("httputil", func(b *testing.B) {
		px := New(newPool(addr), Options{})
		defer px.CloseIdleConnections()
		front := httptest.NewServer(px)
		defer front.Close()
		benchGET(b, front.URL)
	})
	fast := func(b *testing.B, hdr ...string) {
		fx := NewFast(newPool(addr), Options{})
		defer fx.CloseIdleConnections()
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			b.Fatal(err)
		}
		srv := fx.Server(ServerOptions{MaxHeaderBytes: 8 << 10}, nil, nil)
		go srv.Serve(ln)
		defer srv.Shutdown()
		benchGET(b, "http://"+ln.Addr().String(), hdr...)
	}
	b.Run("fasthttp", func(b *testing.B) { fast(b) })
	// Behind another proxy or a CDN: the client's X-Forwarded-For is
	// deleted before the balancer's own is set.
	b.Run("fasthttp-forwarded", func(b *testing.B) { fast(b, "X-Forwarded-For", "192.0.2.7") })
}

// benchGET sends GET url/x with a fasthttp client, the same for both
// engines, so the difference is the balancer's; hdr are name, value pairs
// of fields to send with it.
func benchGET(b *testing.B, url string, hdr ...string) {
	c := &fasthttp.Client{}
	req, resp := fasthttp.AcquireRequest(), fasthttp.AcquireResponse()
	defer fasthttp.ReleaseRequest(req)
	defer fasthttp.ReleaseResponse(resp)
	req.SetRequestURI(url + "/x")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	b.ReportAllocs()
	for b.Loop() {
		if err := c.Do(req, resp); err != nil {
			b.Fatal(err)
		}
		if resp.StatusCode() != http.StatusOK {
			b.Fatalf("got status %d; want %d", resp.StatusCode(), http.StatusOK)
		}
	}
}

// BenchmarkHopHeaders compares the fasthttp engine's one pass over a
// response header block (hopBits, delHop) with a Del per hop-by-hop name,
// on a worker's usual answer, which has none of them.
func BenchmarkHopHeaders(b *testing.B) {
	var h fasthttp.ResponseHeader
	h.SetContentType("application/json")
	h.SetContentLength(64)
	h.Set("Date", "Thu, 26 Nov 2026 20:00:00 GMT")
	h.Set("X-Request-Id", "abc")
	b.Run("del-each", func(b *testing.B) {
		for b.Loop() {
			for _, k := range hopHeaders {
				h.Del(k)
			}
		}
	})
	b.Run("one-pass", func(b *testing.B) {
		for b.Loop() {
			var hop uint16
			for k := range h.All() {
				hop |= hopBits(k)
			}
			delHop(hop, h.Del)
		}
	})
}

// BenchmarkStalledBody measures what the fasthttp engine holds, in heap
// bytes per connection (heap-B/conn), for clients that announce a 4 MB
// body, send 16 KiB of it and stall: what a client can make it keep until
// body_timeout.
func BenchmarkStalledBody(b *testing.B) {
	worker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer worker.Close()
	fx := NewFast(newPool(worker.Listener.Addr().String()), Options{})
	defer fx.CloseIdleConnections()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	srv := fx.Server(ServerOptions{MaxHeaderBytes: 8 << 10, BodyTimeout: time.Minute}, nil, nil)
	go srv.Serve(ln)
	defer srv.Shutdown()
	const conns = 64
	head := "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4000000\r\n\r\n" + strings.Repeat("x", 16<<10)
	var held uint64
	for b.Loop() {
		var before, after runtime.MemStats
		runtime.GC()
		runtime.GC() // twice: what the last round's connections left in sync.Pools goes too
		runtime.ReadMemStats(&before)
		var cs []net.Conn
		for range conns {
			c, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			cs = append(cs, c)
			io.WriteString(c, head)
		}
		time.Sleep(200 * time.Millisecond) // for the server to read what came
		runtime.GC()
		runtime.ReadMemStats(&after)
		held += after.HeapAlloc - before.HeapAlloc
		for _, c := range cs {
			c.Close()
		}
		time.Sleep(200 * time.Millisecond) // for the server to let go of them
	}
	b.ReportMetric(float64(held)/float64(b.N*conns), "heap-B/conn")
}
