package proxy

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"net/url"
	"reflect"
	"strings"
	"testing"
)

// sameHead fails t unless writeHead writes req as req.Write does, the
// order of fields with different names aside, or, when it declines req,
// writes nothing.
func sameHead(t *testing.T, req *http.Request) (took bool) {
	t.Helper()
	var ours bytes.Buffer
	bw := bufio.NewWriter(&ours)
	took = writeHead(bw, req)
	bw.Flush()
	if !took {
		if ours.Len() > 0 {
			t.Fatalf("declined the request but wrote %q", ours.String())
		}
		return false
	}
	var theirs bytes.Buffer
	if err := req.Write(&theirs); err != nil {
		t.Fatalf("wrote %q where Request.Write fails: %v", ours.String(), err)
	}
	gotLine, gotFields := headFields(t, ours.String())
	wantLine, wantFields := headFields(t, theirs.String())
	if gotLine != wantLine {
		t.Fatalf("request line %q; want %q", gotLine, wantLine)
	}
	if !reflect.DeepEqual(gotFields, wantFields) {
		t.Fatalf("got head\n%q\nwant (in any order of names)\n%q", ours.String(), theirs.String())
	}
	return true
}

// headFields splits a request head into its request line and its field
// lines grouped by name, each name's lines in their order, with Host
// first as net/http puts it.
func headFields(t *testing.T, head string) (string, map[string][]string) {
	t.Helper()
	body, ok := strings.CutSuffix(head, "\r\n\r\n")
	if !ok {
		t.Fatalf("head %q does not end in a blank line", head)
	}
	lines := strings.Split(body, "\r\n")
	if len(lines) < 2 || !strings.HasPrefix(lines[1], "Host: ") {
		t.Fatalf("head %q: no Host field right after the request line", head)
	}
	fields := make(map[string][]string)
	for _, l := range lines[1:] {
		k, v, _ := strings.Cut(l, ": ")
		fields[k] = append(fields[k], v)
	}
	return lines[0], fields
}

func headRequest(method, host, target string, h http.Header) *http.Request {
	u, err := url.ParseRequestURI(target)
	if err != nil {
		panic(err)
	}
	u.Host = "127.0.0.1:9001"
	return &http.Request{Method: method, URL: u, Host: host, Header: h, Body: http.NoBody}
}

func TestWriteHeadAsRequestWrite(t *testing.T) {
	tests := []struct {
		name string
		req  *http.Request
	}{
		{"get", headRequest("GET", "example.com", "/operacion-simple", http.Header{
			"Accept":          {"*/*"},
			"X-Forwarded-For": {"10.0.0.1, 127.0.0.1"},
			"Cookie":          {"a=1", "b=2"},
		})},
		{"no method", headRequest("", "example.com", "/", nil)},
		{"host from the URL", headRequest("GET", "", "/x", nil)},
		{"ipv6 host", headRequest("GET", "[::1]:8080", "/", nil)},
		{"query", headRequest("GET", "h", "/p?q=1&r=%20", nil)},
		{"path escaped", headRequest("GET", "h", "/a%20b/%C3%A9", nil)},
		{"asterisk", headRequest("OPTIONS", "h", "*", nil)},
		{"no user agent", headRequest("GET", "h", "/", http.Header{"Accept": {"a"}})},
		{"blank user agent", headRequest("GET", "h", "/", http.Header{"User-Agent": {""}})},
		{"empty user agent", headRequest("GET", "h", "/", http.Header{"User-Agent": {}})},
		{"user agent to clean", headRequest("GET", "h", "/", http.Header{"User-Agent": {" \tcurl/8\r\nx  ", "second"}})},
		{"spaces only", headRequest("GET", "h", "/", http.Header{"User-Agent": {"  "}, "X-A": {" \t "}})},
		{"values to clean", headRequest("GET", "h", "/", http.Header{"X-A": {"a\r\nInjected: 1", "\tb ", "c\nd\re"}})},
		{"bad names dropped", headRequest("GET", "h", "/", http.Header{"Bad Key": {"1"}, "X:Y": {"2"}, "": {"3"}, "Ok": {"4"}, "Ü": {"5"}})},
		{"excluded names", headRequest("GET", "h", "/", http.Header{
			"Host": {"other"}, "Content-Length": {"5"}, "Transfer-Encoding": {"chunked"}, "Trailer": {"X"},
		})},
		{"lower-case names kept as they are", headRequest("GET", "h", "/", http.Header{"content-length": {"5"}, "host": {"x"}})},
		{"post", headRequest("POST", "h", "/", http.Header{"Content-Type": {"text/plain"}})},
		{"put", headRequest("PUT", "h", "/", nil)},
		{"patch", headRequest("PATCH", "h", "/", nil)},
		{"delete", headRequest("DELETE", "h", "/", nil)},
		{"head", headRequest("HEAD", "h", "/", nil)},
		{"nil body", func() *http.Request {
			r := headRequest("POST", "h", "/", nil)
			r.Body = nil
			return r
		}()},
		{"a trace that only reads", func() *http.Request {
			r := headRequest("GET", "h", "/", nil)
			return r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				Got1xxResponse: func(int, textproto.MIMEHeader) error { return nil },
			}))
		}()},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if !sameHead(t, tt.req) {
				t.Fatal("declined a request in the common case")
			}
		})
	}
}

func TestWriteHeadDeclines(t *testing.T) {
	with := func(f func(*http.Request)) *http.Request {
		r := headRequest("GET", "h", "/", http.Header{"Accept": {"*/*"}})
		f(r)
		return r
	}
	tests := []struct {
		name string
		req  *http.Request
	}{
		{"body", with(func(r *http.Request) {
			r.Method = "POST"
			r.Body = io.NopCloser(strings.NewReader("abc"))
			r.ContentLength = 3
		})},
		{"body of unknown length", with(func(r *http.Request) { r.Body = io.NopCloser(strings.NewReader("abc")) })},
		{"length without body", with(func(r *http.Request) { r.ContentLength = 3 })},
		{"close", with(func(r *http.Request) { r.Close = true })},
		{"transfer encoding", with(func(r *http.Request) { r.TransferEncoding = []string{"chunked"} })},
		{"trailer", with(func(r *http.Request) { r.Trailer = http.Header{"X-Sum": nil} })},
		{"connect", with(func(r *http.Request) { r.Method = "CONNECT"; r.URL.Path = "" })},
		{"zone", with(func(r *http.Request) { r.Host = "[fe80::1%25eth0]:80" })},
		{"non-ascii host", with(func(r *http.Request) { r.Host = "bücher.example" })},
		{"invalid host", with(func(r *http.Request) { r.Host = "a b" })},
		{"no host", with(func(r *http.Request) { r.Host = ""; r.URL.Host = "" })},
		{"control byte in query", with(func(r *http.Request) { r.URL.RawQuery = "a\x01" })},
		{"control byte in opaque", with(func(r *http.Request) { r.URL.Opaque = "/a\x7f" })},
		{"method with a line break", with(func(r *http.Request) { r.Method = "GET / HTTP/1.1\r\nX:" })},
		{"method with a space", with(func(r *http.Request) { r.Method = "GET /x" })},
		{"trace of the writes", with(func(r *http.Request) {
			*r = *r.WithContext(httptrace.WithClientTrace(context.Background(), &httptrace.ClientTrace{
				WroteHeaders: func() {},
			}))
		})},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if sameHead(t, tt.req) {
				t.Fatal("took a request it should leave to Request.Write")
			}
		})
	}
}

// FuzzWriteHead: whatever the request, writeHead writes what
// Request.Write writes, in another order of names, or nothing.
func FuzzWriteHead(f *testing.F) {
	f.Add("GET", "example.com", "/operacion-simple?x=1", "Accept:*/*\x00User-Agent: wrk\x00X-A:a\r\nb")
	f.Add("POST", "[::1]:80", "/", "content-length:3\x00Host:x")
	f.Add("", "", "*", "Bad Key:1\x00:2")
	f.Fuzz(func(t *testing.T, method, host, target, fields string) {
		u, err := url.ParseRequestURI(target)
		if err != nil {
			return
		}
		u.Host = "127.0.0.1:9001"
		h := make(http.Header)
		for _, kv := range strings.Split(fields, "\x00") {
			k, v, ok := strings.Cut(kv, ":")
			if ok {
				h[k] = append(h[k], v)
			}
		}
		req := &http.Request{Method: method, URL: u, Host: host, Header: h, Body: http.NoBody}
		before := h.Clone()
		sameHead(t, req)
		if !reflect.DeepEqual(h, before) {
			t.Fatalf("header changed: %q, was %q", h, before)
		}
	})
}

// BenchmarkWriteHead: a proxied GET's head as the ReverseProxy hands it
// to h1, written by writeHead and by Request.Write.
func BenchmarkWriteHead(b *testing.B) {
	req := headRequest("GET", "127.0.0.1:8080", "/operacion-simple", http.Header{
		"Accept":            {"*/*"},
		"User-Agent":        {""},
		"X-Forwarded-For":   {"127.0.0.1"},
		"X-Forwarded-Host":  {"127.0.0.1:8080"},
		"X-Forwarded-Proto": {"http"},
	})
	bw := bufio.NewWriter(io.Discard)
	b.Run("writeHead", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if !writeHead(bw, req) {
				b.Fatal("declined")
			}
			bw.Flush()
		}
	})
	b.Run("Request.Write", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			req.Write(bw)
			bw.Flush()
		}
	})
}
