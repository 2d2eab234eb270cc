package main

import (
	"os"
	"strings"
	"testing"
	"time"
)

func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseWrk(t *testing.T) {
	tests := []struct {
		name string
		file string
		want wrkResult
	}{
		{"clean run", "wrk_ok.txt", wrkResult{
			RPS: 8082.80, P50: 7310 * time.Microsecond, P75: 9900 * time.Microsecond, P90: 13190 * time.Microsecond, P99: 24480 * time.Microsecond, Requests: 8204,
		}},
		{"non-2xx answers", "wrk_non2xx.txt", wrkResult{
			RPS: 4783.24, P50: 714 * time.Microsecond, P75: 1110 * time.Microsecond, P90: 1760 * time.Microsecond, P99: 5890 * time.Microsecond, Requests: 5264, Non2xx: 5264,
		}},
		{"socket errors, latencies in seconds", "wrk_socket_errors.txt", wrkResult{
			RPS: 40.12, P50: 1610 * time.Millisecond, P75: 1830 * time.Millisecond, P90: 1950 * time.Millisecond, P99: 2 * time.Second, Requests: 402,
			Socket: socketErrors{Read: 12, Write: 1, Timeout: 37}, Non2xx: 5,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseWrk(readTestdata(t, tt.file))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v; want %+v", got, tt.want)
			}
		})
	}
}

func TestWrkErrors(t *testing.T) {
	r, err := parseWrk(readTestdata(t, "wrk_socket_errors.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Errors(), int64(12+1+37+5); got != want {
		t.Errorf("Errors() = %d; want %d", got, want)
	}
}

func TestParseWrkRejects(t *testing.T) {
	tests := []struct {
		name, out, wantErr string
	}{
		{"connection refused", "unable to connect to 127.0.0.1:1 Connection refused\n", "no Requests/sec"},
		{"no --latency", "  100 requests in 1.00s, 1KB read\nRequests/sec:    100.00\n", "99%"},
		{"bad rate", "Requests/sec:   lots\n", "Requests/sec"},
		{"bad socket errors", "  Socket errors: connect x, read 0, write 0, timeout 0\nRequests/sec: 1.00\n", "connect"},
		{"unknown latency unit", "     99%    3.00ns\nRequests/sec: 1.00\n", "unknown unit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := parseWrk(tt.out)
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("got error %v; want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"850.00us", 850 * time.Microsecond},
		{"1.23ms", 1230 * time.Microsecond},
		{"2.01s", 2010 * time.Millisecond},
		{"1.50m", 90 * time.Second},
		{"1.00h", time.Hour},
	}
	for _, tt := range tests {
		got, err := parseWrkDuration(tt.in)
		if err != nil || got != tt.want {
			t.Errorf("parseWrkDuration(%q) = %v, %v; want %v", tt.in, got, err, tt.want)
		}
	}
}

func TestWrkArgs(t *testing.T) {
	tests := []struct {
		name string
		run  wrkRun
		want string
	}{
		{"the course's run", wrkRun{URL: "http://127.0.0.1:1/x", Threads: 2, Conns: 64, Duration: 10 * time.Second},
			"-t2 -c64 -d10s --timeout 10s --latency http://127.0.0.1:1/x"},
		{"fewer connections than threads", wrkRun{URL: "u", Threads: 2, Conns: 1, Duration: 1500 * time.Millisecond},
			"-t1 -c1 -d2s --timeout 10s --latency u"},
		{"under a second rounds up", wrkRun{URL: "u", Threads: 1, Conns: 8, Duration: 100 * time.Millisecond},
			"-t1 -c8 -d1s --timeout 10s --latency u"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := strings.Join(tt.run.args(), " "); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestCombineParallel(t *testing.T) {
	got := combineParallel([]wrkResult{
		{RPS: 1000, P50: 1 * time.Millisecond, P99: 5 * time.Millisecond, Requests: 10000, Non2xx: 1, Socket: socketErrors{Read: 2}},
		{RPS: 1500.5, P50: 2 * time.Millisecond, P99: 4 * time.Millisecond, Requests: 15005, Socket: socketErrors{Timeout: 3}},
	})
	want := wrkResult{RPS: 2500.5, P50: 2 * time.Millisecond, P99: 5 * time.Millisecond, Requests: 25005, Non2xx: 1,
		Socket: socketErrors{Read: 2, Timeout: 3}}
	if got != want {
		t.Errorf("got %+v; want %+v", got, want)
	}
}
