package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// artilleryResult is the part of Artillery's summary the course reads.
type artilleryResult struct {
	Codes200     int64   // http.codes.200
	Requests     int64   // http.requests
	OtherCodes   int64   // every http.codes.* other than 200
	ErrorsTotal  int64   // every errors.* counter (ECONNREFUSED, ETIMEDOUT, ...)
	VUsersFailed int64   // vusers.failed
	P99          float64 // http.response_time p99, ms
	Median       float64 // http.response_time median, ms
	Rate         float64 // http.request_rate, req/s
}

// Failed counts the requests that did not get a 200 (or never got an
// answer); a failed virtual user stops, so its unsent requests are not
// in here: check VUsersFailed too.
func (r artilleryResult) Failed() int64 { return r.OtherCodes + r.ErrorsTotal }

// artilleryReport is the shape of `artillery ... --output FILE`.
type artilleryReport struct {
	Aggregate struct {
		Counters  map[string]int64   `json:"counters"`
		Rates     map[string]float64 `json:"rates"`
		Summaries map[string]struct {
			Median float64 `json:"median"`
			P99    float64 `json:"p99"`
		} `json:"summaries"`
	} `json:"aggregate"`
}

// parseArtilleryJSON reads the aggregate of Artillery's JSON report.
func parseArtilleryJSON(b []byte) (artilleryResult, error) {
	var rep artilleryReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return artilleryResult{}, fmt.Errorf("artillery report: %w", err)
	}
	a := rep.Aggregate
	if a.Counters == nil {
		return artilleryResult{}, fmt.Errorf("artillery report: no aggregate counters")
	}
	r := artilleryResult{}
	for name, v := range a.Counters {
		r.addCounter(name, float64(v))
	}
	r.Rate = a.Rates["http.request_rate"]
	if s, ok := a.Summaries["http.response_time"]; ok {
		r.P99, r.Median = s.P99, s.Median
	}
	return r, nil
}

func (r *artilleryResult) addCounter(name string, v float64) {
	n := int64(math.Round(v))
	switch {
	case name == "http.codes.200":
		r.Codes200 = n
	case strings.HasPrefix(name, "http.codes."):
		r.OtherCodes += n
	case name == "http.requests":
		r.Requests = n
	case name == "vusers.failed":
		r.VUsersFailed = n
	case strings.HasPrefix(name, "errors."):
		r.ErrorsTotal += n
	}
}

// parseArtilleryText reads the "Summary report" block that Artillery
// prints at the end, for when the JSON report is missing:
//
//	http.codes.200: .......... 2000
//	http.response_time:
//	  median: ................ 1
//	  p99: ................... 12.1
func parseArtilleryText(out string) (artilleryResult, error) {
	i := strings.LastIndex(out, "Summary report")
	if i < 0 {
		return artilleryResult{}, fmt.Errorf("artillery: no Summary report in output: %q", tail(out, 3))
	}
	var r artilleryResult
	section := ""
	sc := bufio.NewScanner(strings.NewReader(out[i:]))
	for sc.Scan() {
		raw := sc.Text()
		line := strings.TrimSpace(raw)
		name, val, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			continue
		}
		val = strings.TrimSpace(strings.TrimLeft(strings.TrimSpace(val), "."))
		nested := strings.HasPrefix(raw, " ") || strings.HasPrefix(raw, "\t")
		if !nested {
			if val == "" {
				section = name // a summary: its figures follow, indented
				continue
			}
			section = ""
			v, err := strconv.ParseFloat(strings.TrimSuffix(val, "/sec"), 64)
			if err != nil {
				continue // "Summary report @ 15:09:41(+0000)" and the like
			}
			if name == "http.request_rate" {
				r.Rate = v
				continue
			}
			r.addCounter(name, v)
			continue
		}
		if section != "http.response_time" {
			continue
		}
		v, err := strconv.ParseFloat(val, 64)
		if err != nil {
			return r, fmt.Errorf("artillery: http.response_time %s %q: %w", name, val, err)
		}
		switch name {
		case "p99":
			r.P99 = v
		case "median":
			r.Median = v
		}
	}
	if r.Requests == 0 && r.Codes200 == 0 && r.ErrorsTotal == 0 {
		return r, fmt.Errorf("artillery: Summary report without http.requests")
	}
	return r, nil
}

// artilleryRun is one `artillery quick` invocation.
type artilleryRun struct {
	URL        string
	Count, Num int
}

// runArtillery runs `artillery quick` and reads its JSON report, falling
// back to the printed summary. Telemetry is turned off: the bench talks
// to nothing but 127.0.0.1.
func runArtillery(ctx context.Context, bin, dir string, a artilleryRun) (artilleryResult, error) {
	f, err := os.CreateTemp(dir, "artillery-*.json")
	if err != nil {
		return artilleryResult{}, err
	}
	f.Close()
	report := f.Name()
	defer os.Remove(report)
	ctx, cancel := context.WithTimeout(ctx, 10*time.Minute)
	defer cancel()
	// TMPDIR: artillery quick writes the script it generates to a temporary
	// file it never removes; in dir, it goes when the bench's directory does.
	// The proxy variables emptied: artillery's HTTP engine sends every
	// http:// request through HTTP_PROXY, 127.0.0.1 too (it reads no
	// NO_PROXY), which would take its traffic off loopback and measure
	// the proxy.
	env := []string{"ARTILLERY_DISABLE_TELEMETRY=true", "DO_NOT_TRACK=1", "TMPDIR=" + dir,
		"HTTP_PROXY=", "http_proxy=", "HTTPS_PROXY=", "https_proxy=", "ALL_PROXY=", "all_proxy="}
	out, err := output(ctx, env, filepath.Dir(report), bin, "quick",
		"--count", strconv.Itoa(a.Count), "--num", strconv.Itoa(a.Num),
		"--output", report, a.URL)
	if err != nil {
		return artilleryResult{}, fmt.Errorf("artillery %s: %w: %s", a.URL, err, tail(out, 3))
	}
	if b, err := os.ReadFile(report); err == nil && len(b) > 0 {
		if r, err := parseArtilleryJSON(b); err == nil {
			return r, nil
		}
	}
	return parseArtilleryText(out)
}
