//go:build !linux

package proxy

// acceptQueue is known only on Linux: elsewhere dials are not held back.
func acceptQueue(port int) (n, limit int, ok bool) {
	diagBroken.Store(true)
	return 0, 0, false
}
