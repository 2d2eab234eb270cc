//go:build !linux

package proxy

// acceptQueue is known only on Linux: elsewhere dials are not held back.
func acceptQueue(port int) (n int, ok bool) { return 0, false }
