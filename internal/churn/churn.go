// Package churn is twtrace's synthetic workload: N concurrent clients doing
// connect/write/close against a loopback server, the client or the server closing
// first, for a fixed time or a fixed number of connections. cmd/churn runs it for the
// benchmarks; probe --cost runs it to measure what each program costs per connection.
package churn

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
)

// Config is one run's workload.
type Config struct {
	Clients  int           // concurrent clients, and as many server workers
	Duration time.Duration // how long to churn; 0: until Connections are made
	// CloseFirst is "client" or "server": who closes first, and so holds the TIME_WAIT
	// socket; or "abort": the client resets the connection (SO_LINGER {1, 0}) and no
	// TIME_WAIT socket is born, so every timer the connections arm is a full socket's.
	CloseFirst string
	Family     int // 4 (127.0.0.1) or 6 (::1)
	Payload    int // bytes the client writes per connection
	// Connections stops the run after this many connections were attempted; 0: no limit.
	Connections uint64
	// Finish waits, at the end, for the server to finish every connection the clients
	// made: closing first, a client does not wait for it, and shutting the listener down
	// resets those still queued. Off, the run ends as cmd/churn's always has.
	Finish bool
}

// Validate names the first setting out of range.
func (cfg Config) Validate() error {
	switch {
	case cfg.Clients < 1 || cfg.Clients > 4096:
		return fmt.Errorf("-clients %d: want 1-4096", cfg.Clients)
	case cfg.Duration < 0 || cfg.Duration == 0 && cfg.Connections == 0:
		return fmt.Errorf("-duration %s: must be positive", cfg.Duration)
	case cfg.CloseFirst != "client" && cfg.CloseFirst != "server" && cfg.CloseFirst != "abort":
		return fmt.Errorf("-close %q: want client, server or abort", cfg.CloseFirst)
	case cfg.Family != 4 && cfg.Family != 6:
		return fmt.Errorf("-family %d: want 4 or 6", cfg.Family)
	case cfg.Payload < 1 || cfg.Payload > 1<<16:
		return fmt.Errorf("-payload %d: want 1-65536", cfg.Payload)
	}
	return nil
}

// Result is what one run measured.
type Result struct {
	CloseFirst  string         `json:"close_first"`
	Family      int            `json:"family"`
	Clients     int            `json:"clients"`
	Seconds     float64        `json:"seconds"`
	Connections uint64         `json:"connections"`
	PerSecond   float64        `json:"connections_per_second"`
	Errors      map[string]int `json:"errors,omitempty"`
	// Unserved are connections the server had not finished, with Finish, when it stopped
	// making progress: shutting the listener down reset them.
	Unserved   uint64 `json:"unserved,omitempty"`
	NetnsInode uint64 `json:"netns_inode"`
}

// Run churns in the calling thread's network namespace.
func Run(cfg Config) (Result, error) { return run(cfg, func() error { return nil }) }

// run runs the clients and the server workers with blocking system calls, so each
// connection costs what a simple C client and server would, not Go's poller. Every
// worker calls enter first on its own locked thread, which dies with it.
func run(cfg Config, enter func() error) (Result, error) {
	if err := cfg.Validate(); err != nil {
		return Result{}, err
	}
	res := Result{CloseFirst: cfg.CloseFirst, Family: cfg.Family, Clients: cfg.Clients, Errors: map[string]int{}}
	var lfd int
	var addr unix.Sockaddr
	var err error
	onThread(func() {
		if err = enter(); err != nil {
			return
		}
		var st unix.Stat_t
		if err = unix.Stat("/proc/thread-self/ns/net", &st); err != nil {
			return
		}
		res.NetnsInode = st.Ino
		lfd, addr, err = listen(cfg.Family)
	})
	if err != nil {
		return res, err
	}
	defer unix.Close(lfd)

	var servers sync.WaitGroup
	var served served
	served.progress = make(chan struct{}, 1)
	for range cfg.Clients {
		servers.Add(1)
		goOnOwnThread(func() {
			defer servers.Done()
			serve(lfd, cfg, &served)
		})
	}

	type tally struct {
		conns uint64
		errs  map[string]int
		err   error
	}
	tallies := make([]tally, cfg.Clients)
	var tickets atomic.Uint64
	more := func() bool {
		return cfg.Connections == 0 || tickets.Add(1) <= cfg.Connections
	}
	start := time.Now()
	deadline := start.Add(cfg.Duration)
	var clients sync.WaitGroup
	for i := range tallies {
		tallies[i].errs = map[string]int{}
		clients.Add(1)
		t := &tallies[i]
		goOnOwnThread(func() {
			defer clients.Done()
			if t.err = enter(); t.err != nil {
				return
			}
			buf := make([]byte, cfg.Payload)
			for (cfg.Duration == 0 || time.Now().Before(deadline)) && more() {
				if err := connection(addr, cfg, buf); err != nil {
					t.errs[err.Error()]++
					continue
				}
				t.conns++
			}
		})
	}
	clients.Wait()
	res.Seconds = time.Since(start).Seconds()
	for _, t := range tallies {
		if t.err != nil {
			return res, t.err
		}
		res.Connections += t.conns
		for e, n := range t.errs {
			res.Errors[e] += n
		}
	}
	if cfg.Finish {
		res.Unserved = served.await(res.Connections)
	}
	unix.Shutdown(lfd, unix.SHUT_RDWR) // wakes the workers blocked in accept
	servers.Wait()

	res.PerSecond = float64(res.Connections) / res.Seconds
	return res, nil
}

// onThread runs f on a thread of its own (goOnOwnThread) and waits for it.
func onThread(f func()) {
	done := make(chan struct{})
	goOnOwnThread(func() {
		defer close(done)
		f()
	})
	<-done
}

// goOnOwnThread runs f in a new goroutine locked to a thread that dies with it, so a
// namespace f enters dies with it too. The process's main thread cannot die (Go parks it,
// and it would hold the namespace for good): a goroutine that lands there hands f to
// another one, which cannot land there while the first holds it.
func goOnOwnThread(f func()) {
	go func() {
		runtime.LockOSThread() // never unlocked but on the main thread
		if unix.Gettid() != unix.Getpid() {
			f()
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			runtime.LockOSThread()
			f()
		}()
		<-done
		runtime.UnlockOSThread()
	}()
}

func listen(family int) (int, unix.Sockaddr, error) {
	var domain int
	var addr unix.Sockaddr
	if family == 4 {
		domain, addr = unix.AF_INET, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}
	} else {
		domain, addr = unix.AF_INET6, &unix.SockaddrInet6{Addr: [16]byte{15: 1}}
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return -1, nil, err
	}
	unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_REUSEADDR, 1)
	if err := unix.Bind(fd, addr); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("bind: %w", err)
	}
	if err := unix.Listen(fd, 4096); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("listen: %w", err)
	}
	bound, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, nil, err
	}
	return fd, bound, nil
}

// serve accepts until the listener is shut down. Client-closes-first: read to EOF, then
// close (the server ends in LAST_ACK). Server-closes-first: read the payload, close
// first, and the server holds the TIME_WAIT socket. Abort: read until the client's reset.
func serve(lfd int, cfg Config, served *served) {
	buf := make([]byte, cfg.Payload)
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			return
		}
		if cfg.CloseFirst != "server" {
			drain(fd, buf)
		} else {
			readFull(fd, buf)
		}
		unix.Close(fd)
		served.add()
	}
}

// served counts the connections the server workers finished.
type served struct {
	n        atomic.Uint64
	progress chan struct{}
}

func (s *served) add() {
	s.n.Add(1)
	select {
	case s.progress <- struct{}{}:
	default:
	}
}

// stallTimeout is how long the server may make no progress before await gives up.
const stallTimeout = 2 * time.Second

// await waits until the workers finished n connections, or made no progress for
// stallTimeout, and says how many they did not finish.
func (s *served) await(n uint64) uint64 {
	for s.n.Load() < n {
		select {
		case <-s.progress:
		case <-time.After(stallTimeout):
			return n - s.n.Load()
		}
	}
	return 0
}

// connection is one client's connect, write and close, in the configured order.
func connection(addr unix.Sockaddr, cfg Config, buf []byte) error {
	domain := unix.AF_INET
	if cfg.Family == 6 {
		domain = unix.AF_INET6
	}
	fd, err := unix.Socket(domain, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Connect(fd, addr); err != nil {
		return fmt.Errorf("connect: %w", err)
	}
	if _, err := unix.Write(fd, buf); err != nil {
		return fmt.Errorf("write: %w", err)
	}
	switch cfg.CloseFirst {
	case "server":
		drain(fd, buf)
	case "abort":
		if err := unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}); err != nil {
			return fmt.Errorf("SO_LINGER: %w", err)
		}
	}
	return nil
}

func drain(fd int, buf []byte) {
	for {
		n, err := unix.Read(fd, buf)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n <= 0 {
			return
		}
	}
}

func readFull(fd int, buf []byte) {
	for got := 0; got < len(buf); {
		n, err := unix.Read(fd, buf[got:])
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if n <= 0 {
			return
		}
		got += n
	}
}
