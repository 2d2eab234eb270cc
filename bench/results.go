package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"slices"
	"time"
)

// key names one measured series: a target on an endpoint in a scenario,
// with Param the swept value where there is one (workers or connections
// in scenario e), else 0.
type key struct {
	Scenario string `json:"scenario"`
	Target   string `json:"target"`
	Endpoint string `json:"endpoint"`
	Param    int    `json:"param,omitempty"`
}

// sample is one repetition's figures. A wrk run fills RPS, P99, Requests
// and Errors; an artillery run fills P99, Requests, Errors, OK and
// VUsersFailed. RSS is the balancer's peak resident set during the run,
// 0 where it was not sampled.
type sample struct {
	RPS          float64       `json:"rps"`
	P99          time.Duration `json:"p99_ns"`
	P75          time.Duration `json:"p75_ns,omitempty"` // scenario d's wrk runs; none in files from before
	P90          time.Duration `json:"p90_ns,omitempty"`
	Requests     int64         `json:"requests"`
	Errors       int64         `json:"errors"`
	Timeouts     int64         `json:"timeouts,omitempty"` // of Errors, wrk's timeouts (a request slower than wrkTimeout)
	OK           int64         `json:"ok,omitempty"`
	VUsersFailed int64         `json:"vusers_failed,omitempty"`
	RSS          int64         `json:"rss_bytes,omitempty"`
	// Busy: the wait for idle CPUs before the run gave up (settleMax)
	// with them still busy, so the run shared them with leftover work.
	Busy bool   `json:"busy_start,omitempty"`
	Err  string `json:"error,omitempty"`
}

// series is every repetition of one key.
type series struct {
	key
	Samples []sample `json:"samples"`
}

// summary is a series reduced to what the report shows.
type summary struct {
	OK           bool          // at least one repetition measured
	Err          string        // why not, or the first failed repetition
	Runs, Failed int           // repetitions measured / failed
	RPS          float64       // median
	P99          time.Duration // median
	P75, P90     time.Duration // medians, 0 where the samples have none
	Errors       int64         // total over the repetitions
	Timeouts     int64         // of Errors, total
	OKCount      int64         // total 200s (artillery)
	VUsersFailed int64         // total (artillery)
	RSS          int64         // median of the per-run peaks, 0 if none
	RSSMax       int64         // highest of the per-run peaks, 0 if none
	PerRep       []float64     // req/s of each repetition in order, NaN where it failed
}

func (s *series) summary() summary {
	var out summary
	var rps, rss []float64
	var p99, p75, p90 []time.Duration
	for _, smp := range s.Samples {
		if smp.Err != "" {
			out.PerRep = append(out.PerRep, math.NaN())
			out.Failed++
			if out.Err == "" {
				out.Err = smp.Err
			}
			continue
		}
		out.Runs++
		out.PerRep = append(out.PerRep, smp.RPS)
		rps = append(rps, smp.RPS)
		p99 = append(p99, smp.P99)
		if smp.P90 > 0 {
			p75 = append(p75, smp.P75)
			p90 = append(p90, smp.P90)
		}
		out.Errors += smp.Errors
		out.Timeouts += smp.Timeouts
		out.OKCount += smp.OK
		out.VUsersFailed += smp.VUsersFailed
		if smp.RSS > 0 {
			rss = append(rss, float64(smp.RSS))
			out.RSSMax = max(out.RSSMax, smp.RSS)
		}
	}
	out.OK = out.Runs > 0
	out.RPS = median(rps)
	out.P99 = medianDuration(p99)
	out.P75 = medianDuration(p75)
	out.P90 = medianDuration(p90)
	out.RSS = int64(median(rss))
	return out
}

// results collects every series of a bench run, in the order measured.
type results struct {
	Started time.Time `json:"started"`
	// Ended is when the last measurement finished; zero in files
	// written before it was recorded.
	Ended time.Time `json:"ended,omitzero"`
	// Commit is the checkout the balancer was built from (git rev-parse
	// HEAD), and Dirty whether it had changes not in that commit, so a
	// figure can be matched with the code it measured. "" when unknown.
	Commit   string        `json:"commit,omitempty"`
	Dirty    bool          `json:"dirty,omitempty"`
	Quick    bool          `json:"quick"`
	Reps     int           `json:"reps"`
	Duration time.Duration `json:"duration_ns"`
	Series   []*series     `json:"series"`
	// What the report says besides the figures, so that -render can
	// write it again from this file alone.
	Machine   machine  `json:"machine"`
	Scenarios []string `json:"scenarios"` // the ones run, in order
	ArtCount  int      `json:"artillery_count,omitempty"`
	ArtNum    int      `json:"artillery_num,omitempty"`
	// Order is how the repetitions ordered the runs (see order):
	// "mirrored"; "" in files written when each repetition only rotated
	// the targets and kept each target's runs in one order.
	Order string `json:"order,omitempty"`
	// ProxyThreads is nginx's worker_processes and haproxy's nbthread
	// (-proxy-threads); 0 in files written when both were always 1.
	ProxyThreads int `json:"proxy_threads,omitempty"`
	// GoMaxProcs is the bench's own GOMAXPROCS, which is the balancer's:
	// it inherits the bench's environment and CPU limits, and the bench
	// sets no GOMAXPROCS for it. 0 where it was not recorded.
	GoMaxProcs int `json:"gomaxprocs,omitempty"`
	// ComplejaRun is how long a wrk run on /operacion-compleja lasted in
	// scenarios a and b (runDuration); 0 in files written when it was
	// max(duration, minComplejaRun).
	ComplejaRun time.Duration `json:"compleja_run_ns,omitempty"`
	// NginxKeepaliveRequests is nginx's keepalive_requests, on the client
	// and the upstream side; 0 in files written when it was nginx's
	// default (1000).
	NginxKeepaliveRequests int `json:"nginx_keepalive_requests,omitempty"`
	// NginxUpstreamIdle is nginx's keepalive_timeout in its upstream
	// block; 0 in files written when it was nginx's default (60 s).
	NginxUpstreamIdle time.Duration `json:"nginx_upstream_idle_ns,omitempty"`
	// TimeoutsRecorded: the samples tell wrk's timeouts apart (Timeouts);
	// false in files written before they did.
	TimeoutsRecorded bool `json:"timeouts_recorded,omitempty"`
	// WorkerSweepPerRun: scenario e's worker sweep started each balancer
	// for its own run only; false in files written when the sweep
	// started them all at once.
	WorkerSweepPerRun bool `json:"e_workers_per_run,omitempty"`
	// BusyRecorded: the samples say whether their run started on busy
	// CPUs (sample.Busy); files written before that was recorded lack it.
	BusyRecorded bool `json:"busy_recorded,omitempty"`
	// Notes are things the report must say: what failed to start, what
	// was measured differently from the plan.
	Notes []string `json:"notes,omitempty"`
}

func (r *results) series(k key) *series {
	for _, s := range r.Series {
		if s.key == k {
			return s
		}
	}
	s := &series{key: k}
	r.Series = append(r.Series, s)
	return s
}

func (r *results) add(k key, s sample) { sr := r.series(k); sr.Samples = append(sr.Samples, s) }

// get returns the summary of k; a key never measured is not OK.
func (r *results) get(k key) summary {
	for _, s := range r.Series {
		if s.key == k {
			return s.summary()
		}
	}
	return summary{Err: "not measured"}
}

func (r *results) note(s string) {
	if !slices.Contains(r.Notes, s) {
		r.Notes = append(r.Notes, s)
	}
}

// loadResults reads a results.json written by an earlier run.
func loadResults(path string) (*results, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var r results
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Machine.Cores == 0 || len(r.Scenarios) == 0 {
		return nil, fmt.Errorf("%s: no machine or scenario list in it (an older bench wrote it): run the bench again", path)
	}
	for _, sc := range r.Scenarios {
		if !slices.Contains(scenarioNames, sc) {
			return nil, fmt.Errorf("%s: unknown scenario %q", path, sc)
		}
	}
	return &r, nil
}

func (r *results) save(path string) error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}

// median of xs; NaN for none. Even counts take the mean of the middle two.
func median(xs []float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// medianDuration is median for durations; 0 for none.
func medianDuration(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.SortFunc(s, cmp.Compare)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// ratio is a/b, with ok false when either side is missing (NaN) or b is
// not positive: a ratio against nothing is not shown as 0 or +Inf.
func ratio(a, b float64) (float64, bool) {
	if math.IsNaN(a) || math.IsNaN(b) || b <= 0 || a < 0 {
		return 0, false
	}
	return a / b, true
}

// pairedRatios are a/b repetition by repetition: in a repetition every
// target runs once, minutes apart at most, so each ratio is measured under
// the same load from the rest of the machine, and their spread shows how
// much the medians' ratio could move between runs. Repetitions where
// either side failed are left out.
func pairedRatios(a, b summary) []float64 {
	var out []float64
	for i := range min(len(a.PerRep), len(b.PerRep)) {
		if r, ok := ratio(a.PerRep[i], b.PerRep[i]); ok {
			out = append(out, r)
		}
	}
	return out
}

// order is the order of xs in repetition rep: rotated by one every
// second repetition and reversed in the odd ones (A B C, C B A, B C A,
// A C B, C A B, B A C, ...). The reversal pairs each order with its
// mirror image, so that across a pair every target runs as often early
// as late, and a target does not always follow the same one, as it would
// in a rotation alone; the rotation then moves who runs first, so that
// with 3 repetitions of 5 targets three different ones open a repetition.
// Repetition 0 keeps xs as given: scenario e's RSS section relies on the
// first repetition of the connection sweep running 1 → 512 in order.
func order[T any](xs []T, rep int) []T {
	out := rotate(xs, rep/2)
	if rep%2 == 1 {
		slices.Reverse(out)
	}
	return out
}

// rotate returns xs started at index i mod len(xs).
func rotate[T any](xs []T, i int) []T {
	if len(xs) == 0 {
		return nil
	}
	i %= len(xs)
	return append(slices.Clone(xs[i:]), xs[:i]...)
}
