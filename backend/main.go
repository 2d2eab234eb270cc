// Command backend is the course's demo backend in a single process, the
// "before cluster" baseline: `go run ./backend` listens on :8080.
//
// Under the balancer (PORT and WORKER_ID set) the same code runs on
// 127.0.0.1:$PORT and also exits when its parent goes away. All the logic
// lives in pkg/demo; this file only wires it up.
package main

import (
	"os"

	"github.com/clusterlb/clusterlb/pkg/demo"
)

func main() { os.Exit(demo.Main(os.Args[1:])) }
