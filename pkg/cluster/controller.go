package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"sync"

	"github.com/clusterlb/clusterlb/pkg/admin"
	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
)

// Controller carries out the operations that change a running cluster:
// the admin API's (Reload, Scale, RestartWorker, which fail with
// supervisor.ErrBusy while another one runs) and the signals' (ReloadWait,
// ScaleBy, which wait their turn, since a signal cannot be refused).
type Controller struct {
	sup   *supervisor.Supervisor
	args  []string
	log   *slog.Logger
	out   supervisor.Output // the workers' output, for a reload's spec
	local bool              // the balancer runs workers of its own (local_workers)

	// mu is held by every operation, so that one never runs while a
	// reload has its new worker settings in place: a worker that a scale
	// or a restart started then would get them, and keep them after a
	// refused or failed reload put the old ones back. It also guards cfg.
	mu  sync.Mutex
	cfg config.Config // as started, with the worker count of the last reload
}

var _ admin.Controller = (*Controller)(nil)

// NewController returns the controller of sup, for a balancer started
// with args (which a reload parses again) into cfg, whose workers' output
// goes to out (see WorkerSpec).
func NewController(sup *supervisor.Supervisor, args []string, cfg config.Config, logger *slog.Logger, out supervisor.Output) *Controller {
	return &Controller{sup: sup, args: args, cfg: cfg, log: logger, out: out, local: cfg.LocalWorkers}
}

// Reload reads the configuration again and replaces the workers one by
// one; see ReloadWait. It fails with supervisor.ErrBusy while another
// operation runs.
func (c *Controller) Reload(ctx context.Context) error { return c.reload(ctx, false) }

// ReloadWait reads the configuration again (flags still win over the
// file); if it is valid, it applies the worker settings, follows a
// changed worker count, and replaces the workers one by one. An invalid
// file leaves everything as it was; new settings that cannot start a
// worker are undone on the workers already replaced, and the count put
// back (see revert). Every other setting (listen, policy, engine, the
// timeouts and limits of the front, upstreams, the admin API's, logging)
// applies at start only; each one that changed is logged as such.
func (c *Controller) ReloadWait(ctx context.Context) error { return c.reload(ctx, true) }

// errNoLocalWorkers refuses to scale a balancer that runs no workers of
// its own: adding one would start a process its user turned off.
var errNoLocalWorkers = fmt.Errorf("%w: local_workers is false, so the balancer runs no workers of its own to scale", supervisor.ErrBadCount)

// Scale sets the number of workers.
func (c *Controller) Scale(ctx context.Context, n int) error {
	if !c.local {
		return errNoLocalWorkers
	}
	if !c.mu.TryLock() {
		return supervisor.ErrBusy
	}
	defer c.mu.Unlock()
	if err := c.readyBound(n); err != nil {
		return err
	}
	before, err := c.sup.Workers(ctx)
	if err != nil {
		return err
	}
	return c.undoFailedScaleUp(ctx, c.sup.Scale(ctx, n), before, n)
}

// undoFailedScaleUp follows a scale from before to n workers that ended
// in err: a scale-up whose new workers did not come up is undone, as a
// reload's count is (revert), so that the cluster is as it was when the
// operation says it failed, not left with a worker in a crash loop. It
// goes on if ctx ended (the admin API's timeout).
func (c *Controller) undoFailedScaleUp(ctx context.Context, err error, before, n int) error {
	if err == nil || n <= before || errors.Is(err, supervisor.ErrBusy) || errors.Is(err, supervisor.ErrBadCount) || errors.Is(err, supervisor.ErrStopped) {
		return err
	}
	if uerr := c.sup.ScaleWait(context.WithoutCancel(ctx), before); uerr != nil {
		return fmt.Errorf("%w; putting the worker count back to %d failed too: %v", err, before, uerr)
	}
	return fmt.Errorf("%w; the worker count is back to %d", err, before)
}

// readyBound refuses a worker count that would keep /readyz at 503 for
// good: fewer workers and upstreams than ready_min_workers, as the
// settings are refused for it at start and on a reload.
func (c *Controller) readyBound(n int) error {
	if n >= 1 && n+len(c.cfg.Upstreams) < c.cfg.ReadyMinWorkers {
		return fmt.Errorf("%w: %d workers and %d upstreams are fewer than ready_min_workers (%d), so /readyz would never answer ready",
			supervisor.ErrBadCount, n, len(c.cfg.Upstreams), c.cfg.ReadyMinWorkers)
	}
	return nil
}

// ScaleBy adds delta workers, or removes them when delta is negative.
func (c *Controller) ScaleBy(ctx context.Context, delta int) error {
	if !c.local {
		return errNoLocalWorkers
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n, err := c.sup.Workers(ctx)
	if err != nil {
		return err
	}
	if delta < 0 {
		if n+delta < 1 {
			return fmt.Errorf("%w: %d worker(s) running, and the last one is never removed", supervisor.ErrBadCount, n)
		}
		if err := c.readyBound(n + delta); err != nil {
			return err
		}
	}
	return c.undoFailedScaleUp(ctx, c.sup.ScaleBy(ctx, delta), n, n+delta)
}

// RestartWorker drains worker id and replaces it.
func (c *Controller) RestartWorker(ctx context.Context, id int) error {
	if !c.mu.TryLock() {
		return supervisor.ErrBusy
	}
	defer c.mu.Unlock()
	return c.sup.RestartWorker(ctx, id)
}

func (c *Controller) reload(ctx context.Context, wait bool) error {
	cfg, _, err := config.Parse("balancer", c.args, io.Discard)
	if err != nil {
		return fmt.Errorf("%w: %w", admin.ErrInvalidConfig, err)
	}
	if wait {
		c.mu.Lock()
	} else if !c.mu.TryLock() {
		return supervisor.ErrBusy
	}
	defer c.mu.Unlock()
	if c.local && cfg.Workers != c.cfg.Workers {
		// Against the ready_min_workers and upstreams in force: the
		// file's apply at the next start only.
		if err := c.readyBound(cfg.WorkerCount()); err != nil {
			return fmt.Errorf("%w: %w", admin.ErrInvalidConfig, err)
		}
	}
	for _, name := range startOnlyChanges(c.cfg, cfg) {
		c.log.Warn("setting changed in the file applies at the next start only", "setting", name)
	}
	for _, name := range config.Overridden("balancer", c.args) {
		c.log.Warn("setting in the file not applied: a command-line flag gives it", "setting", name)
	}
	spec, err := WorkerSpec(cfg, c.log, c.out)
	if err != nil {
		return err
	}
	n := 0
	if c.local {
		if n, err = c.sup.Workers(ctx); err != nil {
			return err
		}
	}
	workers := c.cfg.Workers
	if err := c.sup.Configure(ctx, spec); err != nil {
		return err
	}
	if err := c.apply(ctx, cfg, wait); err != nil {
		return c.revert(ctx, err, n, workers)
	}
	return nil
}

// revert follows a reload that failed part-way (the new settings could
// not start a worker, or the operation was refused or cut short): the
// supervisor puts the settings before the reload back, the worker count
// back to n (0, left as it is, when the balancer runs no workers of its
// own), and those settings back on every worker the reload had
// started with the new ones, so that the cluster runs one set of
// settings, the one before the reload, which every later start (a
// crash's restart, a scale-up) uses. It goes on if ctx ends (the admin
// API's timeout), as a cluster left half reloaded would be worse; a stop
// still ends it.
func (c *Controller) revert(ctx context.Context, failed error, n, workers int) error {
	ctx = context.WithoutCancel(ctx)
	err := c.sup.Revert(ctx, n)
	if cur, werr := c.sup.Workers(ctx); werr == nil && (cur == n || !c.local) {
		c.cfg.Workers = workers
	}
	if err != nil {
		return fmt.Errorf("%w; putting back the settings before the reload failed too: %v", failed, err)
	}
	if errors.Is(failed, supervisor.ErrBusy) {
		return failed
	}
	return fmt.Errorf("%w; the settings before the reload are back in force", failed)
}

// apply replaces the workers one by one with the spec just configured,
// and follows a changed worker count: fewer before replacing (the ones
// to go are not replaced first), more after (the new ones start with
// the new spec, and are not replaced again).
func (c *Controller) apply(ctx context.Context, cfg config.Config, wait bool) error {
	// Not when the balancer runs no workers of its own.
	n, scale := cfg.WorkerCount(), cfg.Workers != c.cfg.Workers && c.cfg.LocalWorkers
	cur, err := c.sup.Workers(ctx)
	if err != nil {
		return err
	}
	if !scale && c.cfg.LocalWorkers && cur != n {
		// The count a scale set (SIGTTIN, SIGTTOU, the admin API) stays
		// until the setting itself changes: a reload for a new cmd does
		// not undo an operator's scale-up.
		c.log.Info("worker count kept: scaled since the workers setting last changed", "workers", cur, "setting", n)
	}
	if scale && n < cur {
		if err := c.scaleTo(ctx, n, wait); err != nil {
			return err
		}
		c.cfg.Workers, scale = cfg.Workers, false
	}
	if wait {
		err = c.sup.ReloadWait(ctx)
	} else {
		err = c.sup.Reload(ctx)
	}
	if err != nil || !scale {
		return err
	}
	if err := c.scaleTo(ctx, n, wait); err != nil {
		return err
	}
	c.cfg.Workers = cfg.Workers
	return nil
}

func (c *Controller) scaleTo(ctx context.Context, n int, wait bool) error {
	if wait {
		return c.sup.ScaleWait(ctx, n)
	}
	return c.sup.Scale(ctx, n)
}

// reloadable are the settings a reload applies: the worker count, and
// what WorkerSpec makes of the rest, which every replacement starts with.
var reloadable = map[string]bool{
	"workers": true, "cmd": true,
	"health_path": true, "health_interval": true, "health_timeout": true, "health_rise": true, "health_fall": true,
	"restart_backoff": true, "restart_backoff_factor": true, "restart_backoff_max": true, "restart_backoff_reset": true,
	"worker_grace": true, "min_uptime": true, "max_restarts": true, "start_timeout": true, "drain_timeout": true,
	"max_requests": true, "max_requests_jitter": true, "max_memory": true,
}

// startOnlyChanges returns the YAML names of the settings that differ
// between running and file and that a reload does not apply.
func startOnlyChanges(running, file config.Config) []string {
	var names []string
	rv, fv := reflect.ValueOf(running), reflect.ValueOf(file)
	for i := range rv.NumField() {
		name, _, _ := strings.Cut(rv.Type().Field(i).Tag.Get("yaml"), ",")
		if name == "" || name == "-" || reloadable[name] {
			continue
		}
		if !reflect.DeepEqual(rv.Field(i).Interface(), fv.Field(i).Interface()) {
			names = append(names, name)
		}
	}
	return names
}
