package cluster

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"

	"github.com/clusterlb/clusterlb/pkg/config"
	"github.com/clusterlb/clusterlb/pkg/health"
	"github.com/clusterlb/clusterlb/pkg/proxy"
	"github.com/clusterlb/clusterlb/pkg/supervisor"
)

// WorkerSpec is the supervisor's spec for cfg: cfg.Cmd run through the
// shell, or, when it is empty, this executable as "balancer backend" (the
// built-in demo backend, the way cluster.fork() re-runs the same script).
// out gets the workers' output (WorkerOutput); nil leaves it to the
// supervisor's default, the balancer's own stdout and stderr.
func WorkerSpec(cfg config.Config, logger *slog.Logger, out supervisor.Output) (supervisor.Spec, error) {
	var argv []string
	if cfg.Cmd != "" {
		argv = supervisor.Command(cfg.Cmd)
	} else {
		exe, err := os.Executable()
		if err != nil {
			return supervisor.Spec{}, fmt.Errorf("find own executable for the built-in backend: %w", err)
		}
		argv = []string{exe, "backend"}
	}
	var check health.Checker = health.TCP{}
	if path := cfg.HealthCheck(); path != "" {
		check = health.NewHTTP(path)
	}
	return supervisor.Spec{
		Argv:  argv,
		Grace: cfg.WorkerGrace,
		Backoff: supervisor.Backoff{
			Initial: cfg.RestartBackoff,
			Factor:  cfg.RestartBackoffFactor,
			Max:     cfg.RestartBackoffMax,
			Reset:   cfg.RestartBackoffReset,
		},
		MinUptime:         cfg.MinUptime,
		MaxRestarts:       cfg.MaxRestarts,
		StartTimeout:      cfg.StartTimeout,
		DrainTimeout:      cfg.DrainTimeout,
		MaxRequests:       cfg.MaxRequests,
		MaxRequestsJitter: cfg.MaxRequestsJitter,
		MaxMemory:         uint64(cfg.MaxMemory),
		Remote:            cfg.Upstreams,
		Check:             check,
		Health: health.Options{
			Interval: cfg.HealthInterval,
			Timeout:  cfg.HealthTimeout,
			Rise:     cfg.HealthRise,
			Fall:     cfg.HealthFall,
		},
		Output: out,
		Log:    logger,
	}, nil
}

// WorkerOutput forwards the workers' output: log records for json, to
// logger; prefixed lines for text, a worker's stdout to stdout and its
// stderr to stderr.
func WorkerOutput(format string, logger *slog.Logger, stdout, stderr io.Writer) supervisor.Output {
	if format == "json" {
		return supervisor.LogOutput(unleveled(logger))
	}
	return supervisor.TextOutput(stdout, stderr)
}

// ProxyOptions are the proxy's options for cfg; logger gets the failures,
// and every request too when cfg.AccessLog is set.
func ProxyOptions(cfg config.Config, logger *slog.Logger) proxy.Options {
	o := proxy.Options{
		UpstreamTimeout:  cfg.UpstreamTimeout,
		MaxRetries:       proxyRetries(cfg.MaxRetries),
		RetryBufferBytes: proxyRetryBuffer(cfg.RetryBufferBytes),
		MaxResponseBytes: cfg.MaxResponseBytes,
		BodyTimeout:      cfg.BodyTimeout,
		Log:              logger,
	}
	if cfg.AccessLog {
		o.AccessLog = unleveled(logger)
	}
	return o
}

// proxyRetryBuffer maps retry_buffer_bytes, where 0 buffers nothing, to
// proxy.Options.RetryBufferBytes, where 0 is the default and a negative
// value buffers nothing.
func proxyRetryBuffer(n int64) int64 {
	if n == 0 {
		return -1
	}
	return n
}

// proxyRetries maps the max_retries setting (-1 auto, 0 none) to
// proxy.Options.MaxRetries (0 auto, negative none).
func proxyRetries(n int) int {
	switch n {
	case -1:
		return 0
	case 0:
		return -1
	}
	return n
}

// unleveled is logger with its level check left out, for the lines a
// user asks for by name (-access-log, the workers' output), which
// log_level, meant for the balancer's own lines, must not hide: the
// workers' lines in text format were never leveled either.
func unleveled(logger *slog.Logger) *slog.Logger {
	if logger == nil {
		logger = slog.Default()
	}
	return slog.New(anyLevel{logger.Handler()})
}

type anyLevel struct{ slog.Handler }

func (anyLevel) Enabled(context.Context, slog.Level) bool { return true }

func (h anyLevel) WithAttrs(attrs []slog.Attr) slog.Handler {
	return anyLevel{h.Handler.WithAttrs(attrs)}
}

func (h anyLevel) WithGroup(name string) slog.Handler { return anyLevel{h.Handler.WithGroup(name)} }
