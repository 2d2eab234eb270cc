package proxy

import (
	"net"
	"net/netip"
	"strconv"
	"testing"
	"time"
)

// loopback is 127.0.0.1:port.
func loopback(port int) netip.AddrPort {
	return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
}

// TestAcceptQueue: connections the kernel completed but no one accepted
// are counted, on IPv4 and on a dual-stack listener, and leave the count
// when accepted; only the listener a connection to the address reaches
// counts.
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
			n, limit, ok := acceptQueue(loopback(port))
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
			if n, _, _ := acceptQueue(loopback(port)); n != 2 {
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
	if n, _, ok := acceptQueue(loopback(port)); ok {
		t.Errorf("nothing listening: got %d, true; want false", n)
	}

	// A listener on another loopback address, with a connection
	// waiting, is not the one 127.0.0.1 reaches.
	other, err := net.Listen("tcp4", "127.0.0.2:0")
	if err != nil {
		t.Skip(err)
	}
	defer other.Close()
	op := other.Addr().(*net.TCPAddr).Port
	c, err := net.Dial("tcp4", other.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	two := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 2}), uint16(op))
	deadline := time.Now().Add(5 * time.Second)
	for n, _, _ := acceptQueue(two); n != 1; n, _, _ = acceptQueue(two) {
		if time.Now().After(deadline) {
			t.Fatalf("127.0.0.2: got %d waiting; want 1", n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if n, _, ok := acceptQueue(loopback(op)); ok {
		t.Errorf("127.0.0.1 on 127.0.0.2's port: got %d, true; want nothing listening", n)
	}
}

// TestAcceptQueueIPv6: a listener on ::1 is found by its address.
func TestAcceptQueueIPv6(t *testing.T) {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skip(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp6", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	deadline := time.Now().Add(5 * time.Second)
	for {
		n, limit, ok := acceptQueue(ap)
		if !ok {
			t.Fatalf("[::1]: got no answer; want the listener")
		}
		if n == 1 && limit > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("[::1]: got %d waiting of %d; want 1", n, limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestGateAddr: the gate looks only at loopback IPs, whose listeners are
// this host's.
func TestGateAddr(t *testing.T) {
	for addr, want := range map[string]bool{
		"127.0.0.1:8081": true, "127.0.0.2:8081": true, "[::1]:8081": true,
		"10.0.0.5:8081": false, "localhost:8081": false, "example.com:80": false,
		"127.0.0.1:0": false, "127.0.0.1": false, "": false,
	} {
		if got := gateAddr(addr).IsValid(); got != want {
			t.Errorf("gateAddr(%q) valid: got %v; want %v", addr, got, want)
		}
	}
}

func BenchmarkAcceptQueue(b *testing.B) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	ap := ln.Addr().(*net.TCPAddr).AddrPort()
	for b.Loop() {
		if _, _, ok := acceptQueue(ap); !ok {
			b.Fatal("no answer")
		}
	}
}
