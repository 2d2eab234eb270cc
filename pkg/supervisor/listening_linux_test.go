package supervisor

import (
	"net"
	"net/netip"
	"os"
	"slices"
	"testing"
)

// TestListenersOfARealProcess: this test's own process listens on a
// port; listeners finds it, and not a port it only connected to.
func TestListenersOfARealProcess(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	got := listeners(os.Getpid())
	want := netip.MustParseAddrPort(ln.Addr().String())
	if !slices.Contains(got, want) {
		t.Errorf("listeners = %v; want %v among them", got, want)
	}
	dialed := netip.MustParseAddrPort(conn.LocalAddr().String())
	if slices.Contains(got, dialed) {
		t.Errorf("listeners = %v; holds %v, the local end of a connection", got, dialed)
	}
}
