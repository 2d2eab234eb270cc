package pool

import "testing"

// BenchmarkSelect shows that picking a worker takes no lock and allocates
// nothing: run with -benchmem and read allocs/op.
func BenchmarkSelect(b *testing.B) {
	for _, name := range []string{"round-robin", "least-conn", "p2c"} {
		b.Run(name, func(b *testing.B) {
			p := New(NewSelector(name))
			for _, w := range makeWorkers([]State{Up, Up, Down, Up, Up, Up, Up, Up}, nil) {
				p.Add(w)
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if p.Pick() == nil {
						b.Fatal("no worker")
					}
				}
			})
		})
	}
}

func TestSelectAllocatesNothing(t *testing.T) {
	for _, name := range []string{"round-robin", "least-conn", "p2c"} {
		p := New(NewSelector(name))
		for _, w := range makeWorkers([]State{Up, Down, Up, Up}, nil) {
			p.Add(w)
		}
		if n := testing.AllocsPerRun(1000, func() { p.Pick() }); n != 0 {
			t.Errorf("%s: got %v allocations per pick; want 0", name, n)
		}
	}
}
