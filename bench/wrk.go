package main

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"
)

// wrkResult is what one wrk run reports.
type wrkResult struct {
	RPS                float64       // Requests/sec
	P50, P75, P90, P99 time.Duration // from --latency's distribution
	Requests           int64         // "N requests in ..."
	Socket             socketErrors
	Non2xx             int64 // "Non-2xx or 3xx responses: N"
}

// socketErrors is wrk's "Socket errors:" line; absent means all zero.
type socketErrors struct {
	Connect, Read, Write, Timeout int64
}

func (s socketErrors) total() int64 { return s.Connect + s.Read + s.Write + s.Timeout }

// Errors counts every failed request: socket errors and non-2xx/3xx answers.
func (r wrkResult) Errors() int64 { return r.Socket.total() + r.Non2xx }

// parseWrk reads wrk's text report (run with --latency). Requests/sec is
// required; the other lines default to zero when wrk leaves them out
// (it prints "Socket errors" and "Non-2xx" only when there were some).
func parseWrk(out string) (wrkResult, error) {
	var r wrkResult
	haveRPS, haveP99 := false, false
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		f := strings.Fields(line)
		switch {
		case strings.HasPrefix(line, "Requests/sec:") && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return r, fmt.Errorf("wrk: Requests/sec %q: %w", f[1], err)
			}
			r.RPS, haveRPS = v, true
		case len(f) == 2 && (f[0] == "50%" || f[0] == "75%" || f[0] == "90%" || f[0] == "99%"):
			d, err := parseWrkDuration(f[1])
			if err != nil {
				return r, fmt.Errorf("wrk: %s line: %w", f[0], err)
			}
			switch f[0] {
			case "50%":
				r.P50 = d
			case "75%":
				r.P75 = d
			case "90%":
				r.P90 = d
			default:
				r.P99, haveP99 = d, true
			}
		case len(f) >= 3 && f[1] == "requests" && f[2] == "in":
			v, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: request count %q: %w", f[0], err)
			}
			r.Requests = v
		case strings.HasPrefix(line, "Socket errors:"):
			s, err := parseSocketErrors(strings.TrimPrefix(line, "Socket errors:"))
			if err != nil {
				return r, err
			}
			r.Socket = s
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			v, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return r, fmt.Errorf("wrk: Non-2xx line %q: %w", line, err)
			}
			r.Non2xx = v
		}
	}
	if !haveRPS {
		return r, fmt.Errorf("wrk: no Requests/sec line in output: %q", tail(out, 3))
	}
	if !haveP99 && r.Requests > 0 {
		return r, fmt.Errorf("wrk: no 99%% latency line (was --latency given?)")
	}
	return r, nil
}

// parseSocketErrors reads " connect 0, read 12, write 0, timeout 3".
func parseSocketErrors(s string) (socketErrors, error) {
	var e socketErrors
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return e, fmt.Errorf("wrk: Socket errors part %q", part)
		}
		v, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return e, fmt.Errorf("wrk: Socket errors %s: %w", f[0], err)
		}
		switch f[0] {
		case "connect":
			e.Connect = v
		case "read":
			e.Read = v
		case "write":
			e.Write = v
		case "timeout":
			e.Timeout = v
		default:
			return e, fmt.Errorf("wrk: Socket errors: unknown kind %q", f[0])
		}
	}
	return e, nil
}

// parseWrkDuration reads wrk's latency figures: "850.00us", "1.23ms",
// "2.01s", "1.50m", "1.00h".
func parseWrkDuration(s string) (time.Duration, error) {
	i := strings.IndexFunc(s, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i <= 0 {
		return 0, fmt.Errorf("latency %q: want a number and a unit", s)
	}
	units := map[string]time.Duration{"us": time.Microsecond, "ms": time.Millisecond, "s": time.Second, "m": time.Minute, "h": time.Hour}
	unit, ok := units[s[i:]]
	if !ok {
		return 0, fmt.Errorf("latency %q: unknown unit %q", s, s[i:])
	}
	v, err := strconv.ParseFloat(s[:i], 64)
	if err != nil {
		return 0, fmt.Errorf("latency %q: %w", s, err)
	}
	return time.Duration(math.Round(v * float64(unit))), nil
}

// wrkRun is one wrk invocation.
type wrkRun struct {
	URL      string
	Threads  int
	Conns    int
	Duration time.Duration
}

// wrkTimeout is wrk's --timeout, raised from its 2 s: at 64 connections
// on two cores /operacion-compleja queues for longer than that, and wrk
// would count the queueing as errors and drop those requests from the
// latency figures.
const wrkTimeout = 10 * time.Second

// wrkSeconds is the -d wrk runs for d: whole seconds, rounded up, at
// least 1.
func wrkSeconds(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}

// args is wrk's command line.
func (w wrkRun) args() []string {
	secs := wrkSeconds(w.Duration)
	threads := max(1, min(w.Threads, w.Conns))
	return []string{
		"-t" + strconv.Itoa(threads),
		"-c" + strconv.Itoa(w.Conns),
		"-d" + strconv.Itoa(secs) + "s",
		"--timeout", strconv.Itoa(int(wrkTimeout.Seconds())) + "s",
		"--latency",
		w.URL,
	}
}

// runWrk runs wrk once and parses its report.
func runWrk(ctx context.Context, bin string, w wrkRun) (wrkResult, error) {
	ctx, cancel := context.WithTimeout(ctx, w.Duration+60*time.Second)
	defer cancel()
	out, err := output(ctx, nil, "", append([]string{bin}, w.args()...)...)
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk %s: %w: %s", w.URL, err, tail(out, 3))
	}
	return parseWrk(out)
}

// runWrkParallel runs several wrk at once (one per worker, for "direct")
// and combines them with combineParallel.
func runWrkParallel(ctx context.Context, bin string, runs []wrkRun) (wrkResult, error) {
	results := make([]wrkResult, len(runs))
	errs := make([]error, len(runs))
	var wg sync.WaitGroup
	for i, w := range runs {
		wg.Go(func() { results[i], errs[i] = runWrk(ctx, bin, w) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return wrkResult{}, err
		}
	}
	return combineParallel(results), nil
}

// combineParallel merges runs made at the same time against different
// servers: throughput, requests and errors add up; the latency figures
// are the worst of the runs (a conservative stand-in, since the
// histograms themselves are not in wrk's text output).
func combineParallel(rs []wrkResult) wrkResult {
	var c wrkResult
	for _, r := range rs {
		c.RPS += r.RPS
		c.Requests += r.Requests
		c.Non2xx += r.Non2xx
		c.Socket.Connect += r.Socket.Connect
		c.Socket.Read += r.Socket.Read
		c.Socket.Write += r.Socket.Write
		c.Socket.Timeout += r.Socket.Timeout
		c.P50 = max(c.P50, r.P50)
		c.P99 = max(c.P99, r.P99)
	}
	return c
}
