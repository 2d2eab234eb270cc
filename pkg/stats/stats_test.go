package stats

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

func TestHandlerJSON(t *testing.T) {
	// A real process to sample: a busy shell loop, so CPU shows.
	cmd := exec.Command("/bin/sh", "-c", "while :; do :; done")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()

	p := pool.New(new(pool.RoundRobin))
	w := pool.NewWorker(1)
	w.SetProcess(cmd.Process.Pid, "127.0.0.1:4000", time.Now().Add(-2*time.Second))
	w.SetState(pool.Up)
	w.Begin()
	w.End(true, false)
	p.Add(w)
	p.Add(pool.NewWorker(2)) // never started: no pid
	p.CountRequest(true)
	p.CountRequest(false)

	s := NewSampler()
	s.Sample(context.Background(), p)
	time.Sleep(200 * time.Millisecond)
	s.Sample(context.Background(), p)

	srv := httptest.NewServer(Handler(p, s, time.Now().Add(-time.Minute)))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("got Content-Type %q; want application/json", ct)
	}
	var doc map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&doc); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"uptime_s", "policy", "requests", "errors", "retries", "workers"} {
		if _, ok := doc[key]; !ok {
			t.Errorf("missing top-level key %q", key)
		}
	}
	if doc["requests"].(float64) != 2 || doc["errors"].(float64) != 1 || doc["policy"] != "round-robin" {
		t.Errorf("got requests=%v errors=%v policy=%v; want 2 1 round-robin", doc["requests"], doc["errors"], doc["policy"])
	}
	workers := doc["workers"].([]any)
	if len(workers) != 2 {
		t.Fatalf("got %d workers; want 2", len(workers))
	}
	w1 := workers[0].(map[string]any)
	for _, key := range []string{"id", "pid", "addr", "state", "requests", "in_flight", "errors", "restarts", "uptime_s", "cpu_percent", "rss_bytes"} {
		if _, ok := w1[key]; !ok {
			t.Errorf("worker lacks key %q", key)
		}
	}
	if w1["state"] != "up" || w1["pid"].(float64) != float64(cmd.Process.Pid) || w1["requests"].(float64) != 1 {
		t.Errorf("got worker %v; want up, pid %d, 1 request", w1, cmd.Process.Pid)
	}
	if w1["cpu_percent"].(float64) <= 0 || w1["rss_bytes"].(float64) <= 0 {
		t.Errorf("got cpu_percent=%v rss_bytes=%v; want both above 0 for a busy process", w1["cpu_percent"], w1["rss_bytes"])
	}
	if up := w1["uptime_s"].(float64); up < 2 {
		t.Errorf("got uptime_s %v; want at least 2", up)
	}
	w2 := workers[1].(map[string]any)
	if w2["pid"].(float64) != 0 || w2["state"] != "starting" || w2["cpu_percent"].(float64) != 0 {
		t.Errorf("got unstarted worker %v; want pid 0, starting, no CPU", w2)
	}
}

func TestSamplerForgetsExitedProcesses(t *testing.T) {
	p := pool.New(new(pool.RoundRobin))
	w := pool.NewWorker(1)
	w.SetProcess(os.Getpid(), "127.0.0.1:1", time.Now())
	p.Add(w)
	s := NewSampler()
	s.Sample(context.Background(), p)
	if _, rss := s.Usage(os.Getpid()); rss == 0 {
		t.Fatal("got no RSS for the test process")
	}
	w.ClearProcess(pool.Down)
	s.Sample(context.Background(), p)
	if _, rss := s.Usage(os.Getpid()); rss != 0 {
		t.Errorf("got RSS %d for a pid no worker has; want it forgotten", rss)
	}
}

func TestHandlerRejectsPost(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(pool.New(new(pool.RoundRobin)), nil, time.Now()).ServeHTTP(rec, httptest.NewRequest("POST", "/stats", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("got %d; want 405", rec.Code)
	}
}
