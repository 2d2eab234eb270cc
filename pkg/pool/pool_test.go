package pool

import (
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// makeWorkers returns workers with ids 1..len(states) in the given states
// and in-flight counts.
func makeWorkers(states []State, inFlight []int64) []*Worker {
	ws := make([]*Worker, len(states))
	for i, s := range states {
		w := NewWorker(i + 1)
		w.SetProcess(NewProcess(1000+i, "127.0.0.1:1", time.Now()), s)
		if inFlight != nil {
			w.inFlight.Store(inFlight[i])
		}
		ws[i] = w
	}
	return ws
}

func ids(ws []*Worker) []int {
	out := make([]int, len(ws))
	for i, w := range ws {
		if w != nil {
			out[i] = w.ID()
		}
	}
	return out
}

func TestRoundRobin(t *testing.T) {
	tests := []struct {
		name     string
		states   []State
		inFlight []int64 // nil = none
		want     []int   // ids picked by successive calls; 0 = nil
	}{
		{"all up take turns", []State{Up, Up, Up}, nil, []int{1, 2, 3, 1, 2, 3}},
		{"down worker has no turn", []State{Up, Down, Up}, nil, []int{1, 3, 1, 3, 1, 3}},
		{"down workers have no turns", []State{Down, Up, Down, Down, Up, Up}, nil, []int{2, 5, 6, 2, 5, 6}},
		{"starting and backoff skipped", []State{Starting, Up, Backoff}, nil, []int{2, 2, 2}},
		{"none up", []State{Down, Stopped}, nil, []int{0, 0}},
		{"empty", nil, nil, []int{0}},
		// The bound: a worker may hold ceil(1.25 * (in flight + 1) / up).
		{"uneven but within the bound keeps turns", []State{Up, Up, Up}, []int64{3, 4, 2}, []int{1, 2, 3, 1, 2, 3}},
		{"at the bound keeps its turn", []State{Up, Up}, []int64{6, 3}, []int{1, 2, 1, 2}},
		{"over the bound skipped", []State{Up, Up}, []int64{7, 3}, []int{2, 2, 2, 2}},
		{"stalled worker skipped", []State{Up, Up, Up}, []int64{0, 40, 0}, []int{1, 3, 3, 1, 3, 3}},
		{"only up workers count", []State{Up, Down, Up}, []int64{6, 50, 0}, []int{3, 3, 3, 3}},
		{"lone worker over any bound", []State{Down, Up}, []int64{0, 90}, []int{2, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := makeWorkers(tt.states, tt.inFlight)
			rr := new(RoundRobin)
			got := make([]int, len(tt.want))
			for i := range got {
				if w := rr.Select(ws); w != nil {
					got[i] = w.ID()
				}
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("got %v; want %v", got, tt.want)
			}
		})
	}
}

func TestLeastConn(t *testing.T) {
	tests := []struct {
		name     string
		states   []State
		inFlight []int64
		want     []int // acceptable ids; 0 = nil
	}{
		{"fewest in flight", []State{Up, Up, Up}, []int64{5, 1, 3}, []int{2}},
		{"busy but only one up", []State{Down, Up, Down}, []int64{0, 9, 0}, []int{2}},
		{"ties go to each of them", []State{Up, Up, Up}, []int64{2, 0, 0}, []int{2, 3}},
		{"none up", []State{Down, Starting}, []int64{0, 0}, []int{0}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := makeWorkers(tt.states, tt.inFlight)
			lc := new(LeastConn)
			seen := map[int]bool{}
			for range 200 {
				id := 0
				if w := lc.Select(ws); w != nil {
					id = w.ID()
				}
				seen[id] = true
			}
			for id := range seen {
				if !containsInt(tt.want, id) {
					t.Errorf("got %d; want one of %v", id, tt.want)
				}
			}
			if len(seen) != len(tt.want) {
				t.Errorf("got picks %v; want every one of %v picked over 200 calls", seen, tt.want)
			}
		})
	}
}

// TestLeastConnTiesInTurn: idle workers take requests in turn, as
// under round-robin, so that a light load is shared evenly and two
// requests in a row go to two workers (a tour's curl twice); a draw at
// random sent four in a row to one worker one time in eight.
func TestLeastConnTiesInTurn(t *testing.T) {
	ws := makeWorkers([]State{Up, Up, Down, Up}, []int64{0, 0, 0, 0})
	lc := new(LeastConn)
	counts := map[int]int{}
	prev := 0
	for range 30 {
		w := lc.Select(ws)
		if w == nil {
			t.Fatal("got no worker; want one of 1, 2, 4")
		}
		if w.ID() == prev {
			t.Fatalf("worker %d picked twice in a row, with every worker idle", prev)
		}
		prev = w.ID()
		counts[w.ID()]++
	}
	if counts[3] != 0 || counts[1]+counts[2]+counts[4] != 30 || counts[1] < 7 || counts[2] < 7 || counts[4] < 7 {
		t.Errorf("picks per worker %v over 30; want about 10 each for 1, 2 and 4, none for the down 3", counts)
	}
}

// TestLeastConnTiesInTurnAtOnce: picks made at the same moment, before
// any of them counts in flight, take turns too: 1000 picks from four
// goroutines over four idle workers give each worker exactly 250.
func TestLeastConnTiesInTurnAtOnce(t *testing.T) {
	ws := makeWorkers([]State{Up, Up, Up, Up}, []int64{0, 0, 0, 0})
	lc := new(LeastConn)
	var counts [5]atomic.Int64
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 250 {
				counts[lc.Select(ws).ID()].Add(1)
			}
		})
	}
	wg.Wait()
	for id := 1; id <= 4; id++ {
		if n := counts[id].Load(); n != 250 {
			t.Errorf("worker %d picked %d times of 1000; want 250", id, n)
		}
	}
}

func TestP2C(t *testing.T) {
	tests := []struct {
		name     string
		states   []State
		inFlight []int64
		never    []int // ids that must never be picked
	}{
		// The two draws are different workers: with two up, the busier
		// one is never picked.
		{"down never picked", []State{Up, Down, Up}, []int64{0, 0, 0}, []int{2}},
		{"only one up", []State{Down, Up}, []int64{0, 7}, []int{1}},
		{"busier of two never picked", []State{Up, Up}, []int64{3, 1}, []int{1}},
		{"busier of two up never picked", []State{Up, Down, Up}, []int64{0, 0, 5}, []int{2, 3}},
		{"busiest of three never picked", []State{Up, Up, Up}, []int64{100, 0, 1}, []int{1}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ws := makeWorkers(tt.states, tt.inFlight)
			counts := map[int]int{}
			for range 1000 {
				w := (P2C{}).Select(ws)
				if w == nil {
					t.Fatal("got nil; want a worker")
				}
				counts[w.ID()]++
			}
			for _, id := range tt.never {
				if counts[id] > 0 {
					t.Errorf("worker %d picked %d times; want never", id, counts[id])
				}
			}
		})
	}
	// Equal loads: the up workers share the picks evenly, whatever is
	// down between them.
	ws := makeWorkers([]State{Up, Down, Up, Up}, nil)
	counts := map[int]int{}
	const draws = 3000
	for range draws {
		counts[(P2C{}).Select(ws).ID()]++
	}
	for _, id := range []int{1, 3, 4} {
		if c := counts[id]; c < draws/3-draws/10 || c > draws/3+draws/10 {
			t.Errorf("worker %d picked %d times of %d; want about a third (picks %v)", id, c, draws, counts)
		}
	}
	if w := (P2C{}).Select(makeWorkers([]State{Down}, nil)); w != nil {
		t.Errorf("got worker %d; want nil when none is up", w.ID())
	}
}

func TestPoolMembership(t *testing.T) {
	p := New(new(RoundRobin))
	for _, id := range []int{3, 1, 2} {
		w := NewWorker(id)
		w.SetState(Up)
		p.Add(w)
	}
	if got := ids(p.Workers()); !slices.Equal(got, []int{1, 2, 3}) {
		t.Errorf("got ids %v; want [1 2 3]", got)
	}
	p.Remove(2)
	if got := ids(p.Workers()); !slices.Equal(got, []int{1, 3}) {
		t.Errorf("got ids %v; want [1 3]", got)
	}
	tried := []*Worker{p.Get(1)}
	for range 4 {
		if w := p.PickExcept(tried); w == nil || w.ID() != 3 {
			t.Fatalf("PickExcept(1) = %v; want worker 3", w)
		}
	}
}

func TestEndCounts(t *testing.T) {
	w := NewWorker(1)
	if p := w.Begin(); p != nil {
		t.Fatalf("Begin with no process = %v; want nil", p)
	}
	old := NewProcess(10, "127.0.0.1:1", time.Now())
	w.SetProcess(old, Up)
	p1, p2 := w.Begin(), w.Begin()
	// A restart: the third request goes to the new process, while the
	// first two still finish on the old one.
	cur := NewProcess(11, "127.0.0.1:2", time.Now())
	w.SetProcess(cur, Up)
	p3 := w.Begin()
	if p1 != old || p2 != old || p3 != cur {
		t.Fatalf("Begin returned %v %v %v; want old, old, new", p1, p2, p3)
	}
	if w.InFlight() != 3 || old.InFlight() != 2 || cur.InFlight() != 1 {
		t.Errorf("got in flight worker=%d old=%d new=%d; want 3 2 1", w.InFlight(), old.InFlight(), cur.InFlight())
	}
	w.End(p1, true, false)
	w.End(p2, false, true)
	w.End(p3, false, false)
	if w.InFlight() != 0 || w.Requests() != 1 || w.Errors() != 2 || w.Retries() != 1 {
		t.Errorf("got inflight=%d requests=%d errors=%d retries=%d; want 0 1 2 1",
			w.InFlight(), w.Requests(), w.Errors(), w.Retries())
	}
	if old.InFlight() != 0 || old.Requests() != 1 || cur.Requests() != 0 {
		t.Errorf("got old inflight=%d requests=%d, new requests=%d; want 0 1 0", old.InFlight(), old.Requests(), cur.Requests())
	}
}

func TestStateNames(t *testing.T) {
	for s, want := range map[State]string{Starting: "starting", Up: "up", Down: "down", Backoff: "backoff", Stopped: "stopped"} {
		if got := s.String(); got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	}
}

func containsInt(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}
