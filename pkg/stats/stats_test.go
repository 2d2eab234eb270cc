package stats

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

func TestHandlerJSON(t *testing.T) {
	p := pool.New(new(pool.RoundRobin))
	w := pool.NewWorker(1)
	proc := pool.NewProcess(4242, "127.0.0.1:4000", time.Now().Add(-2*time.Second))
	proc.SetUsage(12.5, 9<<20)
	w.SetProcess(proc, pool.Up)
	w.End(w.Begin(), true, false)
	w.Latency().Observe(5*time.Millisecond, time.Now())
	p.Add(w)
	p.Add(pool.NewWorker(2)) // never started: no process
	p.CountRequest(true)
	p.CountRequest(false)
	p.SetClients(func() int64 { return 7 }, 92)

	srv := httptest.NewServer(Handler(p, time.Now().Add(-time.Minute)))
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
	for _, key := range []string{"uptime_s", "policy", "requests", "errors", "retries", "waiting", "connections", "max_conns", "workers"} {
		if _, ok := doc[key]; !ok {
			t.Errorf("missing top-level key %q", key)
		}
	}
	if doc["connections"] != 7.0 || doc["max_conns"] != 92.0 {
		t.Errorf("got connections=%v max_conns=%v; want 7 92", doc["connections"], doc["max_conns"])
	}
	if doc["requests"].(float64) != 2 || doc["errors"].(float64) != 1 || doc["policy"] != "round-robin" {
		t.Errorf("got requests=%v errors=%v policy=%v; want 2 1 round-robin", doc["requests"], doc["errors"], doc["policy"])
	}
	if up := doc["uptime_s"].(float64); up < 60 {
		t.Errorf("got uptime_s %v; want at least 60", up)
	}
	workers := doc["workers"].([]any)
	if len(workers) != 2 {
		t.Fatalf("got %d workers; want 2", len(workers))
	}
	w1 := workers[0].(map[string]any)
	want := map[string]any{"id": 1.0, "pid": 4242.0, "addr": "127.0.0.1:4000", "state": "up", "requests": 1.0,
		"in_flight": 0.0, "errors": 0.0, "retries": 0.0, "restarts": 0.0, "cpu_percent": 12.5, "rss_bytes": float64(9 << 20)}
	for key, v := range want {
		if w1[key] != v {
			t.Errorf("worker 1 %s: got %v; want %v", key, w1[key], v)
		}
	}
	if p50 := w1["latency_p50_ms"].(float64); p50 < 5 || p50 > 6.5 {
		t.Errorf("got latency_p50_ms %v; want about 5", p50)
	}
	if up := w1["uptime_s"].(float64); up < 2 {
		t.Errorf("got uptime_s %v; want at least 2", up)
	}
	w2 := workers[1].(map[string]any)
	if w2["pid"].(float64) != 0 || w2["state"] != "starting" || w2["addr"] != "" || w2["cpu_percent"].(float64) != 0 {
		t.Errorf("got unstarted worker %v; want pid 0, starting, no addr, no CPU", w2)
	}
}

func TestHandlerRejectsPost(t *testing.T) {
	rec := httptest.NewRecorder()
	Handler(pool.New(new(pool.RoundRobin)), time.Now()).ServeHTTP(rec, httptest.NewRequest("POST", "/stats", nil))
	if rec.Code != http.StatusMethodNotAllowed || rec.Header().Get("Allow") != "GET, HEAD" {
		t.Errorf("got %d, Allow %q; want 405, GET, HEAD", rec.Code, rec.Header().Get("Allow"))
	}
	// JSON, as it says, like the balancer's other error answers.
	var body struct{ Error string }
	if ct := rec.Header().Get("Content-Type"); ct != "application/json" || json.Unmarshal(rec.Body.Bytes(), &body) != nil || body.Error == "" {
		t.Errorf("got Content-Type %q, body %q; want application/json with an error", ct, rec.Body)
	}
}
