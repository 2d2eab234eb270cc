package stats

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

func TestWriteTable(t *testing.T) {
	now := time.Date(2026, 3, 4, 15, 4, 5, 0, time.UTC)
	tests := []struct {
		name string
		snap Snapshot
		now  time.Time
		want string
	}{
		{
			name: "mixed workers",
			now:  now,
			snap: Snapshot{
				UptimeS: 3845.2, Policy: "round-robin", Requests: 12345, Errors: 2, Retries: 1,
				Connections: 64, MaxConns: 9964,
				Workers: []Worker{
					{ID: 1, Pid: 41251, State: pool.Up, CPUPercent: 12.5, RSSBytes: 9 << 20, Restarts: 0,
						UptimeS: 192.7, Requests: 6170, P99Ms: 5.12},
					{ID: 2, Pid: 41299, State: pool.Up, CPUPercent: 101.25, RSSBytes: 1536 << 20, Restarts: 3,
						UptimeS: 183600, Requests: 6175, P99Ms: 1250},
					{ID: 3, State: pool.Backoff, Restarts: 11},
					{ID: 4, Pid: 41300, State: pool.Starting, UptimeS: 0.4, P99Ms: 0.85},
					{ID: 5, Pid: 41301, State: pool.Stopped, UptimeS: 60, Requests: 9},
					{ID: 6, State: pool.Stopped, Requests: 9},
				},
			},
			want: "" +
				"uptime 1h04m   policy round-robin   requests 12345   errors 2   retries 1   connections 64/9964   at 15:04:05\n" +
				"ID  PID    STATE     CPU     MEMORY      RESTARTS  UPTIME  REQUESTS  P99\n" +
				"1   41251  up        12.5%   9.0 MiB     0         3m12s   6170      5.1ms\n" +
				"2   41299  up        101.2%  1536.0 MiB  3         2d3h    6175      1.25s\n" +
				"3   -      backoff   -       -           11        -       0         -\n" +
				"4   41300  starting  0.0%    0.0 MiB     0         0s      0         850µs\n" +
				"5   41301  stopping  0.0%    0.0 MiB     0         1m00s   9         -\n" +
				"6   -      stopped   -       -           0         -       9         -\n",
		},
		{
			name: "requests waiting for a worker",
			snap: Snapshot{UptimeS: 2, Policy: "round-robin", Waiting: 7,
				Workers: []Worker{{ID: 1, State: pool.Down, Restarts: 1}}},
			want: "" +
				"uptime 2s   policy round-robin   requests 0   errors 0   retries 0   waiting 7\n" +
				"ID  PID  STATE  CPU  MEMORY  RESTARTS  UPTIME  REQUESTS  P99\n" +
				"1   -    down   -    -       1         -       0         -\n",
		},
		{
			name: "no workers, no clock",
			snap: Snapshot{UptimeS: 59.9, Policy: "p2c"},
			want: "" +
				"uptime 59s   policy p2c   requests 0   errors 0   retries 0\n" +
				"ID  PID  STATE  CPU  MEMORY  RESTARTS  UPTIME  REQUESTS  P99\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			WriteTable(&buf, tt.snap, tt.now)
			if got := buf.String(); got != tt.want {
				t.Errorf("got\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestHumanSeconds(t *testing.T) {
	tests := []struct {
		name string
		sec  float64
		want string
	}{
		{"zero", 0, "0s"},
		{"negative", -3, "0s"},
		{"seconds", 45.9, "45s"},
		{"minutes", 192, "3m12s"},
		{"minutes padded", 65, "1m05s"},
		{"hours", 3840, "1h04m"},
		{"days", 2*86400 + 3*3600 + 59*60, "2d3h"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := humanSeconds(tt.sec); got != tt.want {
				t.Errorf("got %q; want %q", got, tt.want)
			}
		})
	}
}

func TestFetch(t *testing.T) {
	p := pool.New(new(pool.RoundRobin))
	w := pool.NewWorker(1)
	w.SetProcess(pool.NewProcess(4242, "127.0.0.1:4000", time.Now().Add(-time.Minute)), pool.Up)
	w.End(w.Begin(), true, false)
	p.Add(w)
	p.Add(pool.NewWorker(2))
	p.CountRequest(true)

	var accept string
	stats := Handler(p, time.Now().Add(-time.Hour))
	srv := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		accept = r.Header.Get("Accept")
		stats.ServeHTTP(rw, r)
	}))
	defer srv.Close()

	s, err := Fetch(context.Background(), srv.URL+"/stats")
	if err != nil {
		t.Fatal(err)
	}
	if accept != "application/json" {
		t.Errorf("got Accept %q; want %q", accept, "application/json")
	}
	if s.Policy != "round-robin" || s.Requests != 1 || s.UptimeS < 3600 {
		t.Errorf("got policy %q requests %d uptime %v; want round-robin 1 >=3600", s.Policy, s.Requests, s.UptimeS)
	}
	if len(s.Workers) != 2 {
		t.Fatalf("got %d workers; want 2", len(s.Workers))
	}
	if got := s.Workers[0]; got.ID != 1 || got.Pid != 4242 || got.State != pool.Up || got.Requests != 1 {
		t.Errorf("got worker %+v; want id 1, pid 4242, up, 1 request", got)
	}
	if got := s.Workers[1]; got.ID != 2 || got.Pid != 0 || got.State != pool.Starting {
		t.Errorf("got worker %+v; want id 2, no pid, starting", got)
	}
}

func TestFetchErrors(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := ln.Addr().String()
	ln.Close()

	failing := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		http.Error(rw, `{"error":"boom"}`, http.StatusInternalServerError)
	}))
	defer failing.Close()
	html := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		rw.Header().Set("Content-Type", "text/html")
		rw.Write([]byte("<html></html>"))
	}))
	defer html.Close()

	tests := []struct {
		name     string
		url      string
		contains []string
		is       error
	}{
		{name: "closed port", url: "http://" + closed + "/stats", contains: []string{"no balancer answers", closed}, is: ErrNoBalancer},
		{name: "status 500", url: failing.URL + "/stats", contains: []string{"500 Internal Server Error", "boom"}},
		{name: "not json", url: html.URL, contains: []string{"not a stats document", "text/html"}},
		{name: "bad url", url: "::", contains: []string{"fetch stats"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Fetch(context.Background(), tt.url)
			if err == nil {
				t.Fatal("got no error; want one")
			}
			for _, want := range tt.contains {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("got %q; want it to mention %q", err, want)
				}
			}
			if tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("got %v; want errors.Is %v", err, tt.is)
			}
			if tt.is == nil && errors.Is(err, ErrNoBalancer) {
				t.Errorf("got %v; want not ErrNoBalancer", err)
			}
		})
	}
}

func TestFetchContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv := httptest.NewServer(Handler(pool.New(new(pool.RoundRobin)), time.Now()))
	defer srv.Close()
	if _, err := Fetch(ctx, srv.URL); !errors.Is(err, context.Canceled) {
		t.Errorf("got %v; want context.Canceled", err)
	}
}
