package proxy

import (
	"net"
	"strconv"
	"testing"
)

// TestAcceptQueue: connections the kernel completed but no one accepted
// are counted, on IPv4 and on a dual-stack listener, and leave the count
// when accepted.
func TestAcceptQueue(t *testing.T) {
	for _, tc := range []struct{ name, network, addr string }{
		{"ipv4", "tcp4", "127.0.0.1:0"},
		{"dual-stack", "tcp", ":0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen(tc.network, tc.addr)
			if err != nil {
				t.Skip(err)
			}
			defer ln.Close()
			port := ln.Addr().(*net.TCPAddr).Port
			n, limit, ok := acceptQueue(port)
			if !ok || n != 0 || limit <= 0 {
				if !ok {
					t.Skip("the kernel does not answer sock_diag here")
				}
				t.Fatalf("idle listener: got %d waiting of %d; want 0 of more than 0", n, limit)
			}
			var conns []net.Conn
			for range 3 {
				c, err := net.Dial("tcp4", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				conns = append(conns, c)
			}
			queued(t, port, 3) // the last handshake may still be on its way

			a, err := ln.Accept()
			if err != nil {
				t.Fatal(err)
			}
			a.Close()
			if n, _, _ := acceptQueue(port); n != 2 {
				t.Fatalf("one accepted: got %d; want 2", n)
			}
		})
	}
	l, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	if n, _, ok := acceptQueue(port); ok {
		t.Errorf("nothing listening: got %d, true; want false", n)
	}
}

func BenchmarkAcceptQueue(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for b.Loop() {
		if _, _, ok := acceptQueue(port); !ok {
			b.Fatal("no answer")
		}
	}
}
