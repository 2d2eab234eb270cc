package stats

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// ErrNoBalancer means nothing accepted a connection at the address given
// to Fetch: the balancer is not running there, or listens elsewhere.
var ErrNoBalancer = errors.New("no balancer answers")

// maxSnapshotBytes bounds the document Fetch reads, so a wrong address
// that streams forever cannot exhaust memory. A snapshot is about 500
// bytes per worker.
const maxSnapshotBytes = 8 << 20

// Fetch gets the JSON snapshot from a running balancer; rawURL is the
// full address of its stats path, e.g. "http://127.0.0.1:8080/stats".
// The request ends with ctx. A refused connection is reported as
// ErrNoBalancer naming the address; an answer other than 200 OK as an
// error naming the status.
func Fetch(ctx context.Context, rawURL string) (Snapshot, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, rawURL, nil)
	if err != nil {
		return Snapshot{}, fmt.Errorf("fetch stats: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		if errors.Is(err, syscall.ECONNREFUSED) {
			return Snapshot{}, fmt.Errorf("%w at %s: %w", ErrNoBalancer, req.URL.Host, unwrapURLError(err))
		}
		return Snapshot{}, fmt.Errorf("fetch stats from %s: %w", req.URL.Host, unwrapURLError(err))
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg := fmt.Sprintf("fetch stats from %s: %s", rawURL, resp.Status)
		if body := firstLine(resp.Body); body != "" {
			msg += ": " + body
		}
		return Snapshot{}, errors.New(msg)
	}
	var doc Snapshot
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxSnapshotBytes)).Decode(&doc); err != nil {
		return Snapshot{}, fmt.Errorf("fetch stats from %s: not a stats document (Content-Type %q): %w",
			rawURL, resp.Header.Get("Content-Type"), err)
	}
	return doc, nil
}

// unwrapURLError drops the *url.Error wrapper, whose message repeats the
// method and the URL that the caller's message already names.
func unwrapURLError(err error) error {
	if ue, ok := errors.AsType[*url.Error](err); ok {
		return ue.Err
	}
	return err
}

// firstLine returns the start of an error body, to show next to the
// status: one line, at most 200 bytes.
func firstLine(r io.Reader) string {
	b, _ := io.ReadAll(io.LimitReader(r, 200))
	line, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(line)
}

// WriteTable writes s for a terminal, like `pm2 list`: a header line with
// the balancer's uptime, policy and counters, its client connections
// against their bound (when it has one), and the requests waiting for a
// worker (when there are any), then one row per worker.
// A worker without a process shows "-" for PID, CPU, MEMORY and UPTIME;
// P99 is over the last pool.LatencyWindow seconds, "-" when there were no
// responses. now is the time of the snapshot, shown in the header; the
// zero time leaves it out. Write errors are left to the caller's writer.
func WriteTable(w io.Writer, s Snapshot, now time.Time) {
	fmt.Fprintf(w, "uptime %s   policy %s   requests %d   errors %d   retries %d",
		humanSeconds(s.UptimeS), s.Policy, s.Requests, s.Errors, s.Retries)
	if s.MaxConns > 0 {
		fmt.Fprintf(w, "   connections %d/%d", s.Connections, s.MaxConns)
	}
	if s.Waiting > 0 {
		fmt.Fprintf(w, "   waiting %d", s.Waiting)
	}
	if !now.IsZero() {
		fmt.Fprintf(w, "   at %s", now.Format("15:04:05"))
	}
	fmt.Fprintln(w)

	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPID\tSTATE\tCPU\tMEMORY\tRESTARTS\tUPTIME\tREQUESTS\tP99")
	for _, row := range s.Workers {
		pid, cpu, mem, up := "-", "-", "-", "-"
		if row.Pid != 0 {
			pid = fmt.Sprint(row.Pid)
			cpu = fmt.Sprintf("%.1f%%", row.CPUPercent)
			mem = fmt.Sprintf("%.1f MiB", float64(row.RSSBytes)/(1<<20))
			up = humanSeconds(row.UptimeS)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n",
			row.ID, pid, stateLabel(row), cpu, mem, row.Restarts, up, row.Requests, humanMs(row.P99Ms))
	}
	tw.Flush()
}

// stateLabel is the worker's state as a person reads it: a worker taken
// out for good (a scale-down, the balancer's stop) whose process still
// runs, finishing its requests, is "stopping", as pm2 lists it; its
// state in /stats stays "stopped", with its pid.
func stateLabel(w Worker) string {
	if w.State == pool.Stopped && w.Pid != 0 {
		return "stopping"
	}
	return w.State.String()
}

// humanSeconds writes a duration the way process lists do, in its two
// largest units: 45s, 3m12s, 1h04m, 2d3h.
func humanSeconds(sec float64) string {
	if sec < 0 {
		sec = 0
	}
	s := int64(sec)
	switch {
	case s < 60:
		return fmt.Sprintf("%ds", s)
	case s < 3600:
		return fmt.Sprintf("%dm%02ds", s/60, s%60)
	case s < 86400:
		return fmt.Sprintf("%dh%02dm", s/3600, s%3600/60)
	}
	return fmt.Sprintf("%dd%dh", s/86400, s%86400/3600)
}

// humanMs writes a latency in milliseconds with a unit that keeps it
// short: 850µs, 5.2ms, 1.25s; "-" for 0, which means no responses.
func humanMs(ms float64) string {
	switch {
	case ms <= 0:
		return "-"
	case ms < 1:
		return fmt.Sprintf("%.0fµs", ms*1000)
	case ms < 1000:
		return fmt.Sprintf("%.1fms", ms)
	}
	return fmt.Sprintf("%.2fs", ms/1000)
}
