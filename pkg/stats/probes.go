package stats

import (
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Livez answers 200 while the balancer process is alive and serving: for
// a liveness probe, which should not fail because workers are down (a
// restart of the balancer would not bring them back sooner).
func Livez() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		w.Write([]byte(`{"live":true}` + "\n"))
	})
}

// Readyz answers 200 while at least min workers are up and the balancer
// is not stopping, 503 otherwise: for a readiness probe, so that a load
// balancer in front (a Kubernetes Service) sends traffic only to
// balancers that can serve it. stopping may be nil.
func Readyz(p *pool.Pool, min int, stopping *atomic.Bool) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		up := 0
		for _, wk := range p.Workers() {
			if wk.Available() {
				up++
			}
		}
		ready := up >= min && (stopping == nil || !stopping.Load())
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		w.Write([]byte(`{"ready":` + strconv.FormatBool(ready) + `,"workers_up":` + strconv.Itoa(up) +
			`,"min":` + strconv.Itoa(min) + "}\n"))
	})
}
