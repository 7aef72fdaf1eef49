package main

import (
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
)

// BenchmarkScrape is one scrape of serve's /metrics (collect and encode) for a namespace
// holding TWTRACE_BENCH_TIMEWAIT live timewait sockets (default 100,000). They hold no
// file descriptor, so this process makes them itself, connecting and closing first, to
// four listeners; the scrapes run within their 60 s of life.
func BenchmarkScrape(b *testing.B) {
	if os.Geteuid() != 0 || os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		b.Skip("needs root: creates a network namespace and traces")
	}
	total := 100_000
	if v, err := strconv.Atoi(os.Getenv("TWTRACE_BENCH_TIMEWAIT")); err == nil {
		total = v
	}
	ns := testnet.New(b)
	defer ns.HoldSockets(b, 0)() // a process in the namespace: serve finds it by inode
	ns.Sysctl(b, "net/ipv4/tcp_max_tw_buckets", strconv.Itoa(2*total))
	ns.Sysctl(b, "net/ipv4/ip_local_port_range", "1024 65535")
	ns.Sysctl(b, "net/ipv4/tcp_tw_reuse", "0") // loopback reuse would kill some of them
	built := time.Now()
	makeTimewait(b, ns, total)
	b.Logf("%d timewait sockets made in %s", total, time.Since(built).Round(time.Millisecond))

	backend, err := tracer.ParseBackend(*testBackend)
	must(b, err)
	tr, err := tracer.New(tracer.Options{Backend: backend, CountTransitions: true, Filter: tracer.Filter{NetNS: ns.Inode}})
	must(b, err)
	defer tr.Close()
	src := snapshot.NewSource(snapshot.Options{})
	reg := exporterRegistry(newEventMetrics(defaultTopWorkloads, 20), newScrapeCollector(tr, window.New(time.Now(), nil), src, ns.Inode, 20))
	var runErr atomic.Pointer[error]
	handler := exporterHandler(reg, &runErr)
	live := regexp.MustCompile(fmt.Sprintf(`(?m)^twtrace_timewait_sockets\{netns="%d"\} (\d+)$`, ns.Inode))
	var body string
	for b.Loop() {
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
		if rec.Code != http.StatusOK {
			b.Fatalf("scrape: %d", rec.Code)
		}
		body = rec.Body.String()
	}
	m := live.FindStringSubmatch(body)
	if m == nil {
		b.Fatalf("no twtrace_timewait_sockets for the namespace in:\n%s", body)
	}
	if n, _ := strconv.Atoi(m[1]); n < total {
		b.Fatalf("the scrape saw %d live timewait sockets, made %d", n, total)
	}
	if w := src.Index().Walks(); w != 1 {
		b.Errorf("%d /proc walks over %d scrapes, want 1 (the first lookup)", w, b.N)
	}
	b.ReportMetric(float64(total), "timewait_sockets")
}

// makeTimewait makes n timewait sockets in the namespace, on two threads, each with two
// listeners (a local port serves one connection per destination).
func makeTimewait(b *testing.B, ns *testnet.Netns, n int) {
	const workers, listeners = 2, 2
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		share := n / workers
		if w == 0 {
			share += n % workers
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			ns.Do(func() { errs <- clientsClose(share, listeners) })
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(b, err)
	}
}

// clientsClose makes n loopback connections, spread over listeners, whose client closes
// first: each leaves a timewait socket and no descriptor.
func clientsClose(n, listeners int) error {
	lns := make([]int, listeners)
	addrs := make([]unix.Sockaddr, listeners)
	for i := range lns {
		ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(ln)
		if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
			return err
		}
		if err := unix.Listen(ln, 128); err != nil {
			return err
		}
		lns[i] = ln
		if addrs[i], err = unix.Getsockname(ln); err != nil {
			return err
		}
	}
	buf := make([]byte, 16)
	for i := range n {
		c, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		if err := unix.Connect(c, addrs[i%listeners]); err != nil {
			unix.Close(c)
			return fmt.Errorf("connection %d: %w", i, err)
		}
		a, _, err := unix.Accept4(lns[i%listeners], unix.SOCK_CLOEXEC)
		if err != nil {
			unix.Close(c)
			return err
		}
		unix.Close(c)
		for { // the client's FIN, then the server closes too
			if k, err := unix.Read(a, buf); k <= 0 || err != nil {
				break
			}
		}
		unix.Close(a)
	}
	return nil
}
