package stats

import (
	"encoding/json"
	"io"
	"net/http"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Snapshot is the JSON document served at the stats path.
type Snapshot struct {
	UptimeS  float64 `json:"uptime_s"`
	Policy   string  `json:"policy"`
	Requests int64   `json:"requests"`
	Errors   int64   `json:"errors"`
	Retries  int64   `json:"retries"`
	// Waiting counts the requests waiting now for a worker on its way
	// up, while none is (pool.PickWait).
	Waiting int64 `json:"waiting"`
	// Connections counts the client connections open now; MaxConns is
	// their bound (max_conns), past which new ones wait to be accepted.
	Connections int64    `json:"connections"`
	MaxConns    int64    `json:"max_conns"`
	Workers     []Worker `json:"workers"`
}

// Worker is one worker's row.
type Worker struct {
	ID         int        `json:"id"`
	Remote     bool       `json:"remote,omitempty"` // a backend the balancer does not start: no pid, CPU or memory
	Pid        int        `json:"pid"`
	Addr       string     `json:"addr"`
	State      pool.State `json:"state"`
	Requests   int64      `json:"requests"`
	InFlight   int64      `json:"in_flight"`
	Errors     int64      `json:"errors"`
	Retries    int64      `json:"retries"`
	Restarts   int64      `json:"restarts"`
	UptimeS    float64    `json:"uptime_s"`
	CPUPercent float64    `json:"cpu_percent"`
	RSSBytes   uint64     `json:"rss_bytes"`
	// P50Ms and P99Ms are response-time quantiles (to the response
	// headers) of the last pool.LatencyWindow seconds, in milliseconds;
	// 0 when there were no responses.
	P50Ms float64 `json:"latency_p50_ms"`
	P99Ms float64 `json:"latency_p99_ms"`
}

// Take reads the pool now.
func Take(p *pool.Pool, started, now time.Time) Snapshot {
	ws := p.Workers()
	snap := Snapshot{
		UptimeS:  round(now.Sub(started).Seconds()),
		Policy:   p.Policy(),
		Requests: p.Requests(),
		Errors:   p.Errors(),
		Retries:  p.Retries(),
		Waiting:  p.Waiting(),
		Workers:  make([]Worker, 0, len(ws)),
	}
	snap.Connections, snap.MaxConns = p.Clients()
	for _, w := range ws {
		row := Worker{
			ID:       w.ID(),
			Remote:   w.Remote(),
			Pid:      w.Pid(),
			Addr:     w.Addr(),
			State:    w.State(),
			Requests: w.Requests(),
			InFlight: w.InFlight(),
			Errors:   w.Errors(),
			Retries:  w.Retries(),
			Restarts: w.Restarts(),
			UptimeS:  round(w.Uptime(now).Seconds()),
		}
		if proc := w.Process(); proc != nil {
			row.CPUPercent, row.RSSBytes = proc.Usage()
		}
		p50, p99, _ := w.Latency().Quantiles(now)
		row.P50Ms, row.P99Ms = ms(p50), ms(p99)
		snap.Workers = append(snap.Workers, row)
	}
	return snap
}

func ms(d time.Duration) float64 { return round(d.Seconds() * 1000) }

func round(f float64) float64 { return float64(int64(f*1000)) / 1000 }

// Handler serves GET and HEAD: Take as JSON, or, to a browser, the live
// dashboard that polls the same path for that JSON. See wantsHTML for
// which one a request gets.
func Handler(p *pool.Pool, started time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusMethodNotAllowed)
			io.WriteString(w, `{"error":"method not allowed; allow: GET, HEAD"}`+"\n")
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		// The body depends on Accept: a cache must not hand a browser's
		// page to curl.
		w.Header().Add("Vary", "Accept")
		if wantsHTML(r) {
			serveDashboard(w)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(Take(p, started, time.Now()))
	})
}
