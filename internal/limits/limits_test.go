package limits

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestExhausted(t *testing.T) {
	for _, tt := range []struct {
		name string
		err  error
		want bool
	}{
		{"socket out of descriptors", &net.OpError{Op: "dial", Err: os.NewSyscallError("socket", syscall.EMFILE)}, true},
		{"system out of descriptors", fmt.Errorf("check: %w", syscall.ENFILE), true},
		{"no buffers", syscall.ENOBUFS, true},
		{"no memory", syscall.ENOMEM, true},
		{"no local port", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.EADDRNOTAVAIL)}, true},
		{"refused", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}, false},
		{"reset", syscall.ECONNRESET, false},
		{"other", errors.New("too many open files"), false},
		{"nil", nil, false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			if got := Exhausted(tt.err); got != tt.want {
				t.Errorf("Exhausted(%v) = %v; want %v", tt.err, got, tt.want)
			}
		})
	}
}

func TestMaxConns(t *testing.T) {
	for _, tt := range []struct {
		nofile  uint64
		workers int
		want    int
	}{
		{0, 2, 1 << 24},
		{100, 2, 16},
		{256, 2, 92},
		{256, 16, 64},
		{1024, 2, 476},
		{1024, 1024, 16},
		{1 << 20, 2, (1<<20 - 72) / 2},
		{1 << 62, 2, 1 << 24},
	} {
		if got := MaxConns(tt.nofile, tt.workers); got != tt.want {
			t.Errorf("MaxConns(%d, %d) = %d; want %d", tt.nofile, tt.workers, got, tt.want)
		}
	}
}

func TestOpenFiles(t *testing.T) {
	if OpenFiles() == 0 {
		t.Error("OpenFiles() = 0; want the process's limit")
	}
}
