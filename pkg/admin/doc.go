// Package admin is the control plane over HTTP: a small JSON API to reload
// every worker, change the worker count, restart one worker, and read the
// stats and the balancer's own runtime figures (goroutines, open file
// descriptors, pid) that leak tests watch.
//
// It owns the routes, the bearer-token check, request validation and the
// mapping of a control error to an HTTP status (in one function). It holds
// no process logic: each action is one call on a Controller (in practice
// the supervisor) under a deadline, and the answer says how that call
// ended.
//
// Serve it on a listener of its own, never on the public one, and bind
// that listener to loopback (127.0.0.1:9090, say). The token travels in
// clear over plain HTTP, so it guards only against other local users or a
// misrouted port; anywhere else put the API behind TLS. With no token set
// every request is let through.
package admin
