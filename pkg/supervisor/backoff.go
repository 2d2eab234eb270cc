package supervisor

import (
	"math"
	"time"
)

// Backoff spaces the restarts of a worker that keeps dying, so a command
// that crashes at once is never restarted in a tight loop.
type Backoff struct {
	Initial time.Duration // wait before the first restart
	Factor  float64       // growth per crash in a row
	Max     time.Duration // longest wait
	// Reset is how long a process must stay up for its next crash to
	// count as the first again.
	Reset time.Duration
}

// Delay returns the wait before the restart that follows the given number
// of crashes in a row (1 for the first crash).
func (b Backoff) Delay(crashes int) time.Duration {
	if crashes < 1 {
		crashes = 1
	}
	d := float64(b.Initial) * math.Pow(b.Factor, float64(crashes-1))
	if d > float64(b.Max) || math.IsInf(d, 0) || math.IsNaN(d) {
		return b.Max
	}
	return time.Duration(d)
}
