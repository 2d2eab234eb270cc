package stats

import (
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

func TestReadyz(t *testing.T) {
	tests := []struct {
		name     string
		states   []pool.State
		min      int
		stopping bool
		want     int
	}{
		{"one up of two", []pool.State{pool.Up, pool.Down}, 1, false, 200},
		{"all down", []pool.State{pool.Down, pool.Backoff}, 1, false, 503},
		{"starting is not ready", []pool.State{pool.Starting}, 1, false, 503},
		{"fewer than the minimum", []pool.State{pool.Up, pool.Down}, 2, false, 503},
		{"stopping", []pool.State{pool.Up, pool.Up}, 1, true, 503},
		{"no workers", nil, 1, false, 503},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := pool.New(new(pool.RoundRobin))
			for i, s := range tt.states {
				w := pool.NewWorker(i + 1)
				w.SetProcess(pool.NewProcess(100+i, "127.0.0.1:1", time.Now()), s)
				p.Add(w)
			}
			var stopping atomic.Bool
			stopping.Store(tt.stopping)
			rec := httptest.NewRecorder()
			Readyz(p, tt.min, &stopping).ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
			if rec.Code != tt.want {
				t.Errorf("got %d %s; want %d", rec.Code, rec.Body, tt.want)
			}
		})
	}
	rec := httptest.NewRecorder()
	Livez().ServeHTTP(rec, httptest.NewRequest("GET", "/livez", nil))
	if rec.Code != 200 {
		t.Errorf("livez: got %d; want 200", rec.Code)
	}
}
