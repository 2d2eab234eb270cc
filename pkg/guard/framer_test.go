package guard

import (
	"fmt"
	"strings"
	"testing"
)

// want is an expected verdict: the request line's "method target" and the verdict's error.
type want struct {
	line string
	err  error
}

func ok(line string) want  { return want{line: line} }
func bad(line string) want { return want{line: line, err: ErrAmbiguousLength} }

// describe renders verdicts with the request lines of wants where the fingerprints match.
func describe(vs []verdict, names []want) string {
	byFP := make(map[uint64]string, len(names))
	for _, w := range names {
		byFP[fingerprint(fnvOffset, w.line)] = w.line
	}
	parts := make([]string, 0, len(vs))
	for _, v := range vs {
		name, known := byFP[v.fp]
		if !known {
			name = fmt.Sprintf("fp:%x", v.fp)
		}
		if v.err != nil {
			name += " !" + v.err.Error()
		}
		parts = append(parts, name)
	}
	return strings.Join(parts, ", ")
}

func wantVerdicts(ws []want) []verdict {
	vs := make([]verdict, 0, len(ws))
	for _, w := range ws {
		vs = append(vs, verdict{fp: fingerprint(fnvOffset, w.line), err: w.err})
	}
	return vs
}

// drain feeds in in pieces of at most step bytes (all at once if step is 0) and pops every verdict.
func drain(f *framer, in string, step int) []verdict {
	b := []byte(in)
	for len(b) > 0 {
		n := len(b)
		if step > 0 && step < n {
			n = step
		}
		f.feed(b[:n])
		b = b[n:]
	}
	var vs []verdict
	for {
		v, ok := f.pop()
		if !ok {
			return vs
		}
		vs = append(vs, v)
	}
}

func chunks(n int, ext string) string {
	var sb strings.Builder
	for range n {
		sb.WriteString("1;" + ext + "\r\nX\r\n")
	}
	return sb.String()
}

func TestFramer(t *testing.T) {
	const host = "Host: x\r\n"
	tests := []struct {
		name     string
		in       string
		limit    int // 0 means the default
		want     []want
		wantLost bool
	}{
		{name: "get", in: "GET / HTTP/1.1\r\n" + host + "\r\n", want: []want{ok("GET /")}},
		{name: "bare LF line endings", in: "GET /a HTTP/1.1\nHost: x\n\nGET /b HTTP/1.1\nHost: x\n\n",
			want: []want{ok("GET /a"), ok("GET /b")}},
		{name: "content-length body then head",
			in:   "POST /p HTTP/1.1\r\n" + host + "Content-Length: 5\r\n\r\nhelloGET /q HTTP/1.1\r\n" + host + "\r\n",
			want: []want{ok("POST /p"), ok("GET /q")}},
		{name: "chunked with extensions and trailers",
			in: "POST /c HTTP/1.1\r\n" + host + "Transfer-Encoding: chunked\r\n\r\n" +
				"5;a=b\r\nhello\r\n6;c;d=\"e f\"\r\n world\r\n0;z\r\nX-Sum: 1\r\nX-Other: two words\r\n\r\n" +
				"GET /after HTTP/1.1\r\n" + host + "\r\n",
			want: []want{ok("POST /c"), ok("GET /after")}},
		{name: "chunk size with trailing whitespace",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 \t\r\nhello\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
			want: []want{ok("POST /c"), ok("GET /n")}},
		{name: "sixteen hex digits",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0000000000000001\r\nX\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
			want: []want{ok("POST /c"), ok("GET /n")}},
		{name: "content-length and transfer-encoding",
			in:   "POST /s HTTP/1.1\r\n" + host + "Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
			want: []want{bad("POST /s"), ok("GET /n")}},
		{name: "lower case, transfer-encoding first",
			in:   "POST /s HTTP/1.1\r\ntransfer-encoding: CHUNKED\r\ncontent-LENGTH: 4\r\n\r\n0\r\n\r\n",
			want: []want{bad("POST /s")}},
		{name: "HTTP/1.0 with transfer-encoding is refused, framed as net/http does",
			in:   "POST /a HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\nGET /b HTTP/1.0\r\n\r\n",
			want: []want{{line: "POST /a", err: ErrTransferEncodingHTTP10}, ok("GET /b")}},
		{name: "HTTP/1.0 with both frames by content-length",
			in:   "POST /a HTTP/1.0\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\nabcGET /b HTTP/1.0\r\n\r\n",
			want: []want{bad("POST /a"), ok("GET /b")}},
		{name: "control byte in transfer-encoding: net/http's 400, not a coding",
			in:       "POST /a HTTP/1.1\r\nTransfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			wantLost: true},
		{name: "same content-length twice is refused, framed by it",
			in:   "POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nxGET /b HTTP/1.1\r\n\r\n",
			want: []want{{line: "POST /a", err: ErrRepeatedLength}, ok("GET /b")}},
		{name: "CRLF after a POST is skipped",
			in:   "POST /a HTTP/1.1\r\nContent-Length: 1\r\n\r\nx\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			want: []want{ok("POST /a"), ok("GET /b")}},
		{name: "fold on another field",
			in:   "GET /a HTTP/1.1\r\nX-Long: one\r\n two\r\n\r\n",
			want: []want{ok("GET /a")}},
		{name: "upgrade keeps parsing",
			in:   "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET /n HTTP/1.1\r\n\r\n",
			want: []want{ok("GET /ws"), ok("GET /n")}},
		{name: "tunnel bytes after CONNECT",
			in:   "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n\x16\x03\x01\x02\x00",
			want: []want{ok("CONNECT example.com:443")}, wantLost: true},
		{name: "CRLF after a GET", in: "GET /a HTTP/1.1\r\n\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			want: []want{ok("GET /a")}, wantLost: true},
		{name: "five CRLF bytes after a POST",
			in:   "POST /a HTTP/1.1\r\nContent-Length: 0\r\n\r\n\r\n\r\n\rGET /b HTTP/1.1\r\n\r\n",
			want: []want{ok("POST /a")}, wantLost: true},
		{name: "transfer-encoding gzip", in: "POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			want: []want{{line: "POST /a", err: ErrTransferCoding}}, wantLost: true},
		{name: "transfer-encoding identity", in: "POST /a HTTP/1.1\r\nTransfer-Encoding: identity\r\n\r\n",
			want: []want{{line: "POST /a", err: ErrTransferCoding}}, wantLost: true},
		{name: "unknown coding before content-length: 501 first, as net/http",
			in:   "POST /a HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: gzip, chunked\r\n\r\nabc",
			want: []want{{line: "POST /a", err: ErrTransferCoding}}, wantLost: true},
		{name: "two transfer-encoding fields",
			in:   "POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
			want: []want{{line: "POST /a", err: ErrTransferCoding}}, wantLost: true},
		{name: "differing content-length", in: "POST /a HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", wantLost: true},
		{name: "bad content-length", in: "POST /a HTTP/1.1\r\nContent-Length: +1\r\n\r\n", wantLost: true},
		{name: "content-length over int64", in: "POST /a HTTP/1.1\r\nContent-Length: 9223372036854775808\r\n\r\n", wantLost: true},
		{name: "largest content-length", in: "POST /a HTTP/1.1\r\nContent-Length: 9223372036854775807\r\n\r\nGET /b HTTP/1.1\r\n\r\n",
			want: []want{ok("POST /a")}},
		{name: "fold on content-length", in: "POST /a HTTP/1.1\r\nContent-Length:\r\n 1\r\n\r\nx", wantLost: true},
		{name: "fold on first field", in: "GET /a HTTP/1.1\r\n X: y\r\n\r\n", wantLost: true},
		{name: "whitespace before extension",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5 ;x\r\nhello\r\n0\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "bare LF in chunk line",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\r\n0\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "CR inside chunk line",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\rx\r\nhello\r\n0\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "seventeen hex digits",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n00000000000000001\r\nX\r\n0\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "empty chunk size",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n;x\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "chunk data without CRLF",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello!\r\n0\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "too much chunk overhead",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks(100, strings.Repeat("e", 200)),
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "chunk line too long",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n1;" + strings.Repeat("e", maxChunkLine) + "\r\nX\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "trailer with bare LF",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "trailer fold",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: y\r\n z\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "trailer too long",
			in:   "POST /c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: " + strings.Repeat("y", maxTrailer) + "\r\n\r\n",
			want: []want{ok("POST /c")}, wantLost: true},
		{name: "head over the limit", limit: 64,
			in:   "GET /a HTTP/1.1\r\n\r\nGET /b HTTP/1.1\r\nX: " + strings.Repeat("y", 64) + "\r\n\r\n",
			want: []want{ok("GET /a")}, wantLost: true},
		{name: "HTTP/2 preface", in: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", wantLost: true},
		{name: "missing version", in: "GET /\r\n\r\n", wantLost: true},
		{name: "header without colon", in: "GET / HTTP/1.1\r\nHost x\r\n\r\n", wantLost: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			limit := tt.limit
			if limit == 0 {
				limit = 1 << 20
			}
			want := describe(wantVerdicts(tt.want), tt.want)
			for _, step := range []int{0, 1, 7} {
				f := newFramer(limit)
				got := describe(drain(&f, tt.in, step), tt.want)
				if got != want {
					t.Errorf("step %d: verdicts: got %q; want %q", step, got, want)
				}
				if f.lost() != tt.wantLost {
					t.Errorf("step %d: lost: got %v; want %v", step, f.lost(), tt.wantLost)
				}
			}
		})
	}
}

func TestFramerPendingBound(t *testing.T) {
	f := newFramer(1 << 20)
	head := []byte("GET / HTTP/1.1\r\n\r\n")
	for range maxPending {
		f.feed(head)
	}
	if f.lost() {
		t.Fatalf("lost after %d heads; want lost only past the bound", maxPending)
	}
	f.feed(head)
	if !f.lost() {
		t.Errorf("lost after %d heads: got false; want true", maxPending+1)
	}
}

// TestFramerCRLFHeadEnd: with crlf on, a head whose last line or blank line ends in a bare
// LF stops the framer with badEnd and queues no verdict for it; bare LFs before those two
// lines pass, and with crlf off every such head is framed as net/http frames it.
func TestFramerCRLFHeadEnd(t *testing.T) {
	tests := []struct {
		name       string
		in         string
		wantStrict []want // verdicts with crlf on; badEnd expected when fewer than wantLoose
		wantLoose  []want
	}{
		{"bare LF throughout", "GET /a HTTP/1.1\nHost: x\n\n", nil, []want{ok("GET /a")}},
		{"blank line a bare LF", "GET /a HTTP/1.1\r\nHost: x\r\n\n", nil, []want{ok("GET /a")}},
		{"last field ends in a bare LF", "GET /a HTTP/1.1\r\nHost: x\n\r\n", nil, []want{ok("GET /a")}},
		// fasthttp reads a CRLF after the request line as an empty block.
		{"request line alone, bare LF", "GET /a HTTP/1.0\n\r\n", []want{ok("GET /a")}, []want{ok("GET /a")}},
		{"request line alone, bare LF blank line", "GET /a HTTP/1.0\n\n", nil, []want{ok("GET /a")}},
		{"bare LF earlier in the head", "GET /a HTTP/1.1\nA: 1\nHost: x\r\n\r\n",
			[]want{ok("GET /a")}, []want{ok("GET /a")}},
		{"good head, then a bad one", "GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\nGET /c HTTP/1.1\r\n\r\n",
			[]want{ok("GET /a")}, []want{ok("GET /a"), ok("GET /b"), ok("GET /c")}},
	}
	for _, tt := range tests {
		for _, step := range []int{0, 1, 3} {
			t.Run(fmt.Sprintf("%s/step=%d", tt.name, step), func(t *testing.T) {
				f := newFramer(1 << 16)
				f.crlf = true
				got := drain(&f, tt.in, step)
				if describe(got, tt.wantStrict) != describe(wantVerdicts(tt.wantStrict), tt.wantStrict) {
					t.Errorf("crlf on: got [%s]; want [%s]", describe(got, tt.wantStrict), describe(wantVerdicts(tt.wantStrict), tt.wantStrict))
				}
				if wantBad := len(tt.wantStrict) < len(tt.wantLoose); f.badEnd != wantBad || f.lost() != wantBad {
					t.Errorf("crlf on: badEnd %v, lost %v; want both %v", f.badEnd, f.lost(), wantBad)
				}

				f = newFramer(1 << 16)
				got = drain(&f, tt.in, step)
				if describe(got, tt.wantLoose) != describe(wantVerdicts(tt.wantLoose), tt.wantLoose) {
					t.Errorf("crlf off: got [%s]; want [%s]", describe(got, tt.wantLoose), describe(wantVerdicts(tt.wantLoose), tt.wantLoose))
				}
				if f.badEnd || f.lost() {
					t.Errorf("crlf off: badEnd %v, lost %v; want neither", f.badEnd, f.lost())
				}
			})
		}
	}
}
