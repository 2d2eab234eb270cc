package supervisor

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/clusterlb/clusterlb/pkg/pool"
)

// Workers returns the number of workers (slots not being removed).
func (s *Supervisor) Workers(ctx context.Context) (int, error) {
	n := 0
	err := s.call(ctx, func() {
		for _, sl := range s.slots {
			if !sl.removing && !sl.remote {
				n++
			}
		}
	})
	return n, err
}

// Configure replaces the spec that later starts use: a reload then starts
// every worker with it, and Revert undoes it. Argv, Env and the health
// settings change with it; output streams stay as they are.
func (s *Supervisor) Configure(ctx context.Context, spec Spec) error {
	return s.call(ctx, func() {
		spec.Output, spec.Log = s.spec.Output, s.spec.Log
		if spec.Env == nil {
			spec.Env = s.spec.Env
		}
		spec.fill()
		s.prior = &priorSpec{spec: s.spec, gen: s.specGen}
		s.gens++
		s.spec, s.specGen = spec, s.gens
	})
}

// errReverted tells the waiters of a replacement stopped by Revert.
var errReverted = errors.New("replacement stopped: the settings it started with were put back")

// Revert puts back the spec that was in force before the last Configure,
// brings the worker count back to n (n < 1 leaves it as it is), and
// replaces with that spec, one at a time, every worker whose process was
// started with another: after a reload that failed part-way, the workers
// it had started or replaced (and any restarted meanwhile) run the
// settings that worked again, instead of the cluster running two sets of
// settings. The spec goes back first, so that a worker restarted while
// the rest is under way (a crash, a recycle) starts with it; extra
// workers are removed next, so that none is replaced only to be removed;
// missing ones are started last. A worker running the spec put back is
// left as it is; a replacement with another one still starting is
// stopped (and a slot that was waiting for it restarted at once). Each
// step is tried even if one before it failed, and every worker even if
// one could not be put back; a stop ends it. With no Configure to undo
// it only sets the count.
func (s *Supervisor) Revert(ctx context.Context, n int) error {
	cur := 0
	if err := s.call(ctx, func() { s.putBack(); cur = len(s.ids()) }); err != nil {
		return err
	}
	var errs []error
	// step records err, and tells whether to go on.
	step := func(err error) bool {
		if err != nil {
			errs = append(errs, err)
		}
		return !errors.Is(err, ErrStopped)
	}
	goOn := true
	if n > 0 && cur > n {
		goOn = step(s.ScaleWait(ctx, n))
	}
	if goOn {
		var ids []int
		err := s.call(ctx, func() { ids = s.stale() })
		if err == nil && len(ids) > 0 {
			err = s.replaceStaleAll(ctx, ids)
		}
		goOn = step(err)
	}
	if goOn && n > 0 {
		cur, err := s.Workers(ctx)
		if err == nil && cur < n {
			err = s.ScaleWait(ctx, n)
		}
		step(err)
	}
	return errors.Join(errs...)
}

// replaceStaleAll runs replaceStale for each of ids, one at a time.
func (s *Supervisor) replaceStaleAll(ctx context.Context, ids []int) error {
	s.op.Lock()
	defer s.op.Unlock()
	s.log.Info("putting back the settings before the reload", "workers", len(ids))
	var errs []error
	for _, id := range ids {
		// Every worker is tried: one that cannot be put back keeps
		// serving with the new settings, the others need not.
		if err := s.replaceStale(ctx, id); err != nil {
			errs = append(errs, fmt.Errorf("revert worker %d: %w", id, err))
			if errors.Is(err, ErrStopped) || ctx.Err() != nil {
				break
			}
		}
	}
	if len(errs) > 0 {
		return errors.Join(errs...)
	}
	s.log.Info("settings before the reload back", "workers", len(ids))
	return nil
}

// putBack puts the prior spec back, if there is one, and stops the
// replacements still starting with another. The loop goroutine runs it.
func (s *Supervisor) putBack() {
	if s.prior == nil {
		return
	}
	s.spec, s.specGen = s.prior.spec, s.prior.gen
	s.prior = nil
	for _, id := range s.ids() {
		sl := s.slots[id]
		if sl.next == nil || sl.next.specGen == s.specGen {
			continue
		}
		old := sl.next
		sl.next = nil
		s.log.Info("worker replacement stopped: started with the settings being put back", "worker", id, "pid", old.h.Pid())
		s.terminate(old)
		tell(&sl.replaced, errReverted)
		if sl.cur == nil {
			// The slot's process died while it started, and nothing
			// else would start one: now, with the spec put back.
			s.replace(sl, nil)
		}
	}
}

// stale returns the ids of the workers whose process was started with
// another spec than the current one. The loop goroutine runs it.
func (s *Supervisor) stale() []int {
	var ids []int
	for _, id := range s.ids() {
		if cur := s.slots[id].cur; cur != nil && cur.specGen != s.specGen {
			ids = append(ids, id)
		}
	}
	return ids
}

// replaceStale replaces worker id if its process was started with
// another spec than the current one: one restarted since stale listed
// it already runs the current spec.
func (s *Supervisor) replaceStale(ctx context.Context, id int) error {
	done := make(chan error, 1)
	err := s.call(ctx, func() {
		sl := s.slots[id]
		if sl == nil || sl.removing || sl.remote || sl.cur == nil || sl.cur.specGen == s.specGen {
			done <- nil // gone, or restarted since: nothing to replace
			return
		}
		s.replace(sl, done)
	})
	if err != nil {
		return err
	}
	return s.wait(ctx, done)
}

// Reload replaces every worker, one at a time: it starts the
// replacement, waits until it passes its health check, moves the traffic
// to it, and drains the old process (in-flight requests finish, then
// SIGTERM). It returns when the last replacement took over, or with the
// first failure, leaving the workers not yet replaced as they were. It
// returns ErrBusy if another control operation is under way.
func (s *Supervisor) Reload(ctx context.Context) error {
	if !s.op.TryLock() {
		return ErrBusy
	}
	defer s.op.Unlock()
	return s.reload(ctx)
}

// ReloadWait is Reload, but waits for an operation under way to end
// instead of returning ErrBusy: for signals, which cannot be refused.
func (s *Supervisor) ReloadWait(ctx context.Context) error {
	s.op.Lock()
	defer s.op.Unlock()
	return s.reload(ctx)
}

func (s *Supervisor) reload(ctx context.Context) error {
	var ids []int
	if err := s.call(ctx, func() { ids = s.ids() }); err != nil {
		return err
	}
	s.log.Info("rolling reload", "workers", len(ids))
	for _, id := range ids {
		if err := s.replaceAndWait(ctx, id); err != nil {
			return fmt.Errorf("reload worker %d: %w", id, err)
		}
	}
	s.log.Info("rolling reload done", "workers", len(ids))
	return nil
}

// RestartWorker replaces worker id through the same path as a reload. It
// returns ErrNoSuchWorker for an unknown id, ErrBusy if another control
// operation is under way.
func (s *Supervisor) RestartWorker(ctx context.Context, id int) error {
	if !s.op.TryLock() {
		return ErrBusy
	}
	defer s.op.Unlock()
	return s.replaceAndWait(ctx, id)
}

func (s *Supervisor) replaceAndWait(ctx context.Context, id int) error {
	done := make(chan error, 1)
	var missing, remote bool
	err := s.call(ctx, func() {
		sl := s.slots[id]
		if sl == nil || sl.removing || sl.remote {
			missing, remote = true, sl != nil && sl.remote
			return
		}
		s.replace(sl, done)
	})
	if err != nil {
		return err
	}
	if remote {
		return fmt.Errorf("worker %d: %w: it is an upstream, which the balancer does not start", id, ErrNoSuchWorker)
	}
	if missing {
		return fmt.Errorf("worker %d: %w", id, ErrNoSuchWorker)
	}
	return s.wait(ctx, done)
}

func (s *Supervisor) wait(ctx context.Context, done chan error) error {
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return ctx.Err()
	case <-s.quit:
		return ErrStopped
	}
}

// Scale sets the number of workers to n (1 to pool.MaxWorkers). New workers get
// the lowest free ids; the highest ids are removed, each drained first. It
// returns when the new workers are up and the removed ones have stopped,
// ErrBadCount for n out of bounds, ErrBusy if another control operation is under
// way. A scale-down whose ctx ends before the removed workers have stopped
// returns, but stays the operation under way until they have: a scale-up
// meanwhile would give new workers ids past the ones still draining.
func (s *Supervisor) Scale(ctx context.Context, n int) error {
	if !s.op.TryLock() {
		return ErrBusy
	}
	return s.scale(ctx, n)
}

// ScaleWait is Scale, but waits for an operation under way to end
// instead of returning ErrBusy: for a reload asked for by a signal.
func (s *Supervisor) ScaleWait(ctx context.Context, n int) error {
	s.op.Lock()
	return s.scale(ctx, n)
}

// ScaleBy adds delta workers (or removes, when negative), never going
// below one; it waits for an operation under way instead of returning
// ErrBusy: for SIGTTIN and SIGTTOU.
func (s *Supervisor) ScaleBy(ctx context.Context, delta int) error {
	s.op.Lock()
	n, err := s.Workers(ctx)
	if err != nil {
		s.op.Unlock()
		return err
	}
	return s.scale(ctx, max(1, n+delta))
}

// scale runs with s.op held, and releases it: when it returns, or, for a
// removal its ctx gave up on, when the removed workers have stopped.
func (s *Supervisor) scale(ctx context.Context, n int) error {
	unlock := s.op.Unlock
	defer func() {
		if unlock != nil {
			unlock()
		}
	}()
	if n < 1 || n > pool.MaxWorkers {
		return fmt.Errorf("%w: want 1 to %d workers; got %d", ErrBadCount, pool.MaxWorkers, n)
	}
	var waits []chan error
	removing := false
	err := s.call(ctx, func() {
		ids := s.ids()
		if n > len(ids) {
			// The lowest free ids, so that WORKER_ID stays 1..N once
			// the slots being removed are gone (remote ones keep theirs).
			for id, added := 1, 0; added < n-len(ids); id++ {
				if _, taken := s.slots[id]; taken {
					continue
				}
				added++
				// Told when up, or when it cannot start: a
				// failure at once (no free port, no such program)
				// is told before addSlot returns.
				ch := make(chan error, 1)
				s.addSlot(id, ch)
				waits = append(waits, ch)
			}
			s.log.Info("scaling up", "workers", n)
			return
		}
		for _, id := range ids[n:] {
			ch := make(chan error, 1)
			waits = append(waits, ch)
			s.remove(s.slots[id], ch)
			removing = true
		}
		if len(ids) > n {
			s.log.Info("scaling down", "workers", n)
		}
	})
	if err != nil {
		return err
	}
	for i, ch := range waits {
		if err := s.wait(ctx, ch); err != nil {
			if removing && ctx.Err() != nil {
				rest := waits[i:]
				unlock = nil
				go func() {
					for _, ch := range rest {
						select {
						case <-ch:
						case <-s.quit:
						}
					}
					s.op.Unlock()
				}()
			}
			return err
		}
	}
	if len(waits) > 0 && !removing {
		s.log.Info("scaled up", "workers", n) // every new worker is up
	}
	return nil
}

// remove drains sl and drops it from the pool; done is told when it is
// gone.
func (s *Supervisor) remove(sl *slot, done chan error) {
	sl.removing = true
	sl.replaced = append(sl.replaced, done)
	sl.w.SetState(pool.Stopped)
	if sl.timer != nil {
		sl.timer.Stop()
		sl.timer = nil
	}
	if sl.next != nil {
		s.terminate(sl.next)
	}
	if sl.cur != nil {
		s.drain(sl.cur)
	}
	if sl.cur == nil && sl.next == nil && !s.hasProcs(sl) {
		s.removeSlot(sl)
	}
}

// ids returns the ids of the slots not being removed, in order.
func (s *Supervisor) ids() []int {
	var ids []int
	for id, sl := range s.slots {
		if !sl.removing && !sl.remote {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	return ids
}
