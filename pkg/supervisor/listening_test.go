package supervisor

import (
	"net/netip"
	"testing"
)

func TestReaches(t *testing.T) {
	target := netip.MustParseAddrPort("127.0.0.1:4000")
	tests := []struct {
		listener string
		want     bool
	}{
		{"127.0.0.1:4000", true},
		{"0.0.0.0:4000", true},
		{"[::]:4000", true},
		{"[::ffff:127.0.0.1]:4000", true},
		{"127.0.0.1:3000", false},
		{"0.0.0.0:3000", false},
		{"[::1]:4000", false},
		{"127.0.0.2:4000", false},
		{"192.0.2.7:4000", false},
	}
	for _, tt := range tests {
		if got := reaches(netip.MustParseAddrPort(tt.listener), target); got != tt.want {
			t.Errorf("reaches(%s, %s) = %v; want %v", tt.listener, target, got, tt.want)
		}
	}
}
