package main

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

type config struct {
	clients    int
	duration   time.Duration
	closeFirst string
	family     int
	payload    int
}

// churn runs the clients and the server workers with blocking system calls, so each
// connection costs what a simple C client and server would, not Go's poller.
func churn(cfg config) (Result, error) {
	res := Result{CloseFirst: cfg.closeFirst, Family: cfg.family, Clients: cfg.clients, Errors: map[string]int{}}
	var st unix.Stat_t
	if err := unix.Stat("/proc/self/ns/net", &st); err != nil {
		return res, err
	}
	res.NetnsInode = st.Ino

	lfd, addr, err := listen(cfg.family)
	if err != nil {
		return res, err
	}
	defer unix.Close(lfd)

	var servers sync.WaitGroup
	for range cfg.clients {
		servers.Add(1)
		go func() {
			defer servers.Done()
			serve(lfd, cfg)
		}()
	}

	type tally struct {
		conns uint64
		errs  map[string]int
	}
	tallies := make([]tally, cfg.clients)
	start := time.Now()
	deadline := start.Add(cfg.duration)
	var clients sync.WaitGroup
	for i := range tallies {
		tallies[i].errs = map[string]int{}
		clients.Add(1)
		go func(t *tally) {
			defer clients.Done()
			runtime.LockOSThread()
			buf := make([]byte, cfg.payload)
			for time.Now().Before(deadline) {
				if err := connection(addr, cfg, buf); err != nil {
					t.errs[err.Error()]++
					continue
				}
				t.conns++
			}
		}(&tallies[i])
	}
	clients.Wait()
	res.Seconds = time.Since(start).Seconds()
	unix.Shutdown(lfd, unix.SHUT_RDWR) // wakes the workers blocked in accept
	servers.Wait()

	for _, t := range tallies {
		res.Connections += t.conns
		for e, n := range t.errs {
			res.Errors[e] += n
		}
	}
	res.PerSecond = float64(res.Connections) / res.Seconds
	return res, nil
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
// first, and the server holds the TIME_WAIT socket.
func serve(lfd int, cfg config) {
	runtime.LockOSThread()
	buf := make([]byte, cfg.payload)
	for {
		fd, _, err := unix.Accept4(lfd, unix.SOCK_CLOEXEC)
		if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
			continue
		}
		if err != nil {
			return
		}
		if cfg.closeFirst == "client" {
			drain(fd, buf)
		} else {
			readFull(fd, buf)
		}
		unix.Close(fd)
	}
}

// connection is one client's connect, write and close, in the configured order.
func connection(addr unix.Sockaddr, cfg config, buf []byte) error {
	domain := unix.AF_INET
	if cfg.family == 6 {
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
	if cfg.closeFirst == "server" {
		drain(fd, buf)
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
