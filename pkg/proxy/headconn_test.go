package proxy

import (
	"slices"
	"strings"
	"testing"
)

// TestHeadConnKeepsTheFinalBlock: the header block is found however the
// reads cut it, past interim answers, and not past the header bound.
func TestHeadConnKeepsTheFinalBlock(t *testing.T) {
	final := "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nConnection: X-Other\r\nContent-Length: 2\r\n\r\nok"
	want := []string{"close, X-Secret", "X-Other"}
	cases := []struct {
		name, raw string
		step      int
		want      []string
	}{
		{"one read", final, len(final), want},
		{"a byte per read", final, 1, want},
		{"after 100 and 103, in reads of 7", "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nConnection: X-Kept\r\n\r\n" + final, 7, want},
		{"bare LFs", strings.ReplaceAll(final, "\r\n", "\n"), 3, want},
		{"bare LFs, then a CRLF", "HTTP/1.1 200 OK\nConnection: close, X-Secret\nConnection: X-Other\n\r\nok", 2, want},
		{"folded", "HTTP/1.1 200 OK\r\nConnection: close,\r\n\tX-Secret\r\nX-Other: o\r\nConnection: X-Other\r\n\r\n", 6, want},
		{"101 is final", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 5, []string{"Upgrade"}},
		{"past the bound", "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Big: " + strings.Repeat("a", 2*maxWorkerHeader) + "\r\n\r\n", 4096, nil},
		{"not whole", "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\n", 10, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := &headConn{}
			c.begin()
			for i := 0; i < len(tc.raw); i += tc.step {
				if !c.on.Load() {
					break
				}
				c.keep([]byte(tc.raw[i:min(i+tc.step, len(tc.raw))]))
			}
			if got := c.connection(); !slices.Equal(got, tc.want) {
				t.Errorf("got %q; want %q", got, tc.want)
			}
			if c.on.Load() && tc.want != nil {
				t.Error("still keeping after the final block")
			}
			if len(c.head) > maxWorkerHeader+tc.step {
				t.Errorf("kept %d bytes; want at most the header bound and one read", len(c.head))
			}
			c.begin() // the next request starts afresh
			if got := c.connection(); got != nil {
				t.Errorf("after begin: got %q; want nil", got)
			}
		})
	}
}
