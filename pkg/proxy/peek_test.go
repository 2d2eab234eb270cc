package proxy

import (
	"net"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/guard"
)

// TestPeerClosed: the look at a held-back request's client takes the
// client for gone when it closed its connection, and not when it is
// quiet or has sent more (a pipelined request), which the look leaves
// unread; and it finds the socket under the guard's connections.
func TestPeerClosed(t *testing.T) {
	ln, addr, _ := listenLoopback(t)
	gl := guard.NewListener(guard.SendTimeout(ln, time.Minute), 1<<20)
	client, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	server, err := gl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer server.Close()
	var p idlePeek
	if p.init(server); p.raw == nil {
		t.Fatal("no socket found under the guard's connection")
	}
	settle := func() { time.Sleep(50 * time.Millisecond) } // loopback delivery
	if p.peerClosed() {
		t.Error("quiet client: taken for gone")
	}
	if _, err := client.Write([]byte("GET / HTTP/1.1\r\n")); err != nil {
		t.Fatal(err)
	}
	settle()
	if p.peerClosed() {
		t.Error("client with bytes waiting: taken for gone")
	}
	client.Close()
	settle()
	if p.peerClosed() {
		t.Error("bytes still unread before the close: taken for gone")
	}
	buf := make([]byte, 64)
	if n, err := server.Read(buf); err != nil || string(buf[:n]) != "GET / HTTP/1.1\r\n" {
		t.Fatalf("after the looks, read %q, %v; want the bytes the client sent", buf[:n], err)
	}
	if !p.peerClosed() {
		t.Error("client that closed its connection: not taken for gone")
	}
}
