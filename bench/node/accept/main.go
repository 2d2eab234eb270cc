// Command accept measures how one Node process (the course's Express app)
// serves connections that arrive while its event loop is busy: how long
// each connection waits for its first answer, and how many answers each
// gets, when many keep-alive connections loop on /operacion-compleja.
//
// It is what docs/bench/tuning.md's finding about Node rests on: Node (on
// libuv 1.45 or later) accepts one connection per turn of its event
// loop, and a busy turn runs a request of every connection it has, so
// connections opened as the load begins wait for seconds, and ones opened while it was idle are
// served in turn, even if their first request comes under load. Run it
// under `strace -f -tt -e trace=accept4` to see the accepts. A proxy that
// opens connections to a busy Node worker meets the first case; a cap on
// the requests in flight per worker (-worker-max-conns), or opening a
// connection only once the worker accepted the one before (what the
// balancer does), keeps it from waiting there. Each case runs against a
// fresh process on a loopback port, which is stopped by its pid at the
// end.
//
// With -addr, it runs the first case against what already listens there
// (the balancer in front of Node workers, or Node's own cluster), on
// loopback only, and starts nothing.
//
//	go run ./bench/node/accept [-n 32] [-d 12s] [-app bench/node/app.js]
//	go run ./bench/node/accept -addr 127.0.0.1:8080 [-n 64] [-d 20s]
package main

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"sync"
	"syscall"
	"time"
)

func main() {
	n := flag.Int("n", 32, "connections to the Node process")
	d := flag.Duration("d", 12*time.Second, "how long each case loads it")
	app := flag.String("app", "bench/node/app.js", "the Express app")
	target := flag.String("addr", "", "load this loopback HOST:PORT (a running balancer or cluster) instead of starting Node")
	flag.Parse()
	if *n < 2 || *d <= 0 {
		fmt.Fprintln(os.Stderr, "accept: -n must be 2 or more and -d positive")
		os.Exit(2)
	}
	if *target != "" {
		if err := loopback(*target); err != nil {
			fmt.Fprintln(os.Stderr, "accept: -addr:", err)
			os.Exit(2)
		}
		fmt.Printf("%d keep-alive connections looping on /operacion-compleja for %v, at %s\n", *n, *d, *target)
		report("all opened as the load begins", load(*target, *n, *d, 0, 0, nil))
		return
	}
	cases := []struct {
		name string
		run  func(addr string) []result
	}{
		{"all opened as the load begins", func(addr string) []result { return load(addr, *n, *d, 0, 0, nil) }},
		{"opened while busy, first request 1 s later", func(addr string) []result {
			return load(addr, *n, *d, 100*time.Millisecond, time.Second, nil)
		}},
		{"opened while idle, first request under load", func(addr string) []result {
			conns := make([]*conn, *n)
			for i := range conns {
				conns[i] = dial(addr)
			}
			time.Sleep(300 * time.Millisecond)
			return load(addr, *n, *d, 0, time.Second, conns)
		}},
	}
	fmt.Printf("%d keep-alive connections looping on /operacion-compleja for %v, one Node process\n", *n, *d)
	for _, c := range cases {
		addr, stop, err := startNode(*app)
		if err != nil {
			fatal(err)
		}
		stopNode = stop
		res := c.run(addr)
		stop()
		stopNode = nil
		report(c.name, res)
	}
}

// loopback reports why addr is not a loopback HOST:PORT, or nil: the
// load goes nowhere else.
func loopback(addr string) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return err
	}
	ips, err := net.LookupIP(host)
	if err != nil {
		return err
	}
	for _, ip := range ips {
		if !ip.IsLoopback() {
			return fmt.Errorf("%s is %v, not a loopback address", host, ip)
		}
	}
	return nil
}

// stopNode stops the Node process of the case under way, if any.
var stopNode func()

// fatal stops the Node process under way, says why, and exits; the
// first of the load's goroutines to call it does.
func fatal(err error) {
	fatalOnce.Do(func() {
		if stopNode != nil {
			stopNode()
		}
		fmt.Fprintln(os.Stderr, "accept:", err)
		os.Exit(1)
	})
	select {} // another goroutine is exiting
}

var fatalOnce sync.Once

type conn struct {
	c  net.Conn
	br *bufio.Reader
}

func dial(addr string) *conn {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		fatal(err)
	}
	return &conn{c, bufio.NewReader(c)}
}

// get sends one request on c and reads its answer.
func (c *conn) get(path string) error {
	if _, err := fmt.Fprintf(c.c, "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", path); err != nil {
		return err
	}
	resp, err := http.ReadResponse(c.br, nil)
	if err != nil {
		return err
	}
	_, err = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return err
}

type result struct {
	first time.Duration // from the first request to its answer; 0 if none came
	n     int           // answers
}

// load runs n connections on compleja until d has passed. Connection 0
// starts at once; the others send their first request after join (0: at
// once too), over conns if given, else over connections they open after
// open (0: at once; while connection 0 keeps the process busy if not).
func load(addr string, n int, d, open, join time.Duration, conns []*conn) []result {
	res := make([]result, n)
	end := time.Now().Add(d)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			var c *conn
			if conns != nil {
				c = conns[i]
			} else {
				if i > 0 {
					time.Sleep(open)
				}
				c = dial(addr)
			}
			defer c.c.Close()
			if i > 0 {
				time.Sleep(join - open)
			}
			for time.Now().Before(end) {
				c.c.SetDeadline(end.Add(30 * time.Second))
				t := time.Now()
				if err := c.get("/operacion-compleja"); err != nil {
					return
				}
				if res[i].n == 0 {
					res[i].first = time.Since(t)
				}
				res[i].n++
			}
		})
	}
	wg.Wait()
	return res[1:] // connection 0 only makes the loop busy
}

func report(name string, res []result) {
	var firsts []time.Duration
	var counts []int
	never := 0
	for _, r := range res {
		counts = append(counts, r.n)
		if r.n == 0 {
			never++
			continue
		}
		firsts = append(firsts, r.first)
	}
	slices.Sort(firsts)
	slices.Sort(counts)
	if len(firsts) == 0 {
		fmt.Printf("- %s: no connection answered\n", name)
		return
	}
	fmt.Printf("- %s: first answer median %v, max %v; answers per connection %d to %d",
		name, firsts[len(firsts)/2].Round(time.Millisecond), firsts[len(firsts)-1].Round(time.Millisecond), counts[0], counts[len(counts)-1])
	if never > 0 {
		fmt.Printf("; %d connections never answered", never)
	}
	fmt.Println()
}

// startNode starts the app on a free loopback port and waits until it
// accepts connections; stop ends it by its pid.
func startNode(app string) (addr string, stop func(), err error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	addr = l.Addr().String()
	l.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command("node", app)
	cmd.Env = append(os.Environ(), "PORT="+port)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return "", nil, err
	}
	stop = func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return addr, stop, nil
		}
	}
	stop()
	return "", nil, fmt.Errorf("node %s did not listen on port %s within 10 s", app, strconv.Quote(port))
}
