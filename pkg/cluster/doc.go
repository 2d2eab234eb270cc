// Package cluster assembles a balancer from a config.Config: the workers'
// spec for the supervisor, the proxy options, and the public front end
// (either engine, serving the balancer's own pages and proxying the
// rest). Its Controller carries out what changes a running cluster, for
// the signals and the admin API: reload (reading the configuration again),
// scale, restart one worker.
//
// It holds no request or process logic of its own: forwarding lives in
// pkg/proxy, processes in pkg/supervisor. The command in balancer/ only
// listens, wires these parts together, turns signals into Controller
// calls and orders the shutdown.
package cluster
