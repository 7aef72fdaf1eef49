package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime"
	"runtime/pprof"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// startExporter serves reg as serve does, on a free loopback port of the host namespace
// (net/http dials from other threads: a test namespace would be out of their reach).
func startExporter(t *testing.T, reg *prometheus.Registry, runErr *atomic.Pointer[error]) (*http.Server, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	srv := newExporterServer(exporterHandler(reg, runErr))
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			t.Errorf("serve: %v", err)
		}
	})
	return srv, ln.Addr().String()
}

func get(t *testing.T, c *http.Client, method, url string) (int, http.Header, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	must(t, err)
	resp, err := c.Do(req)
	must(t, err)
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	return resp.StatusCode, resp.Header, string(body)
}

// Exposing the exporter beyond the machine is an explicit choice.
func TestServeListensOnLoopbackByDefault(t *testing.T) {
	listen, _ := registerServeFlags(flag.NewFlagSet("serve", flag.ContinueOnError))
	host, _, err := net.SplitHostPort(*listen)
	if ip := net.ParseIP(host); err != nil || ip == nil || !ip.IsLoopback() {
		t.Errorf("--listen defaults to %q: want a loopback address", *listen)
	}
}

// GET and HEAD of /metrics and /healthz, and nothing else.
func TestExporterAnswersOnlyMetricsAndHealthz(t *testing.T) {
	var runErr atomic.Pointer[error]
	_, addr := startExporter(t, exporterRegistry(newEventMetrics(defaultTopWorkloads, 20)), &runErr)
	cases := []struct {
		method, path string
		status       int
		body         string // a substring of the body
	}{
		{"GET", "/metrics", 200, "\ngo_goroutines "},
		{"HEAD", "/metrics", 200, ""},
		{"GET", "/healthz", 200, "ok\n"},
		{"HEAD", "/healthz", 200, ""},
		{"GET", "/metrics?format=anything", 200, "\ngo_goroutines "},
		{"GET", "/", 404, ""},
		{"GET", "/metrics/", 404, ""},
		{"GET", "//metrics", 404, ""},
		{"GET", "/healthz/../metrics", 404, ""},
		{"GET", "/debug/pprof/", 404, ""},
		{"HEAD", "/nothing", 404, ""},
		{"POST", "/metrics", 405, "only GET"},
		{"PUT", "/metrics", 405, "only GET"},
		{"DELETE", "/healthz", 405, "only GET"},
		{"PATCH", "/healthz", 405, "only GET"},
		{"OPTIONS", "/metrics", 405, "only GET"},
		{"TRACE", "/metrics", 405, "only GET"},
		{"POST", "/nothing", 405, "only GET"},
	}
	c := &http.Client{Transport: &http.Transport{}}
	defer c.CloseIdleConnections()
	for _, tc := range cases {
		status, hdr, body := get(t, c, tc.method, "http://"+addr+tc.path)
		if status != tc.status || !strings.Contains(body, tc.body) {
			t.Errorf("%s %s: %d %q, want %d with %q", tc.method, tc.path, status, body, tc.status, tc.body)
		}
		if tc.method == "HEAD" && body != "" {
			t.Errorf("HEAD %s: a body %q", tc.path, body)
		}
		if allow := hdr.Get("Allow"); status == 405 && allow != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q, want \"GET, HEAD\"", tc.method, tc.path, allow)
		}
	}
}

// /healthz is 200 while the reader runs and turns 503, naming why, when it stops before
// it was told to.
func TestHealthzFollowsTheReader(t *testing.T) {
	cases := []struct {
		name     string
		stop     error // what the reader returns
		canceled bool  // told to stop first
		status   int
		body     string
	}{
		{"read error", errors.New("read ring buffer: injected"), false, 503, "tracer stopped: read ring buffer: injected\n"},
		{"returned early", nil, false, 503, "tracer stopped: the event reader stopped\n"},
		{"told to stop", nil, true, 200, "ok\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var runErr atomic.Pointer[error]
			_, addr := startExporter(t, exporterRegistry(newEventMetrics(defaultTopWorkloads, 20)), &runErr)
			c := &http.Client{Transport: &http.Transport{}}
			defer c.CloseIdleConnections()
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			release := make(chan struct{})
			run := func(ctx context.Context, _ func(*tracer.Event), _ func()) error {
				<-release
				return tc.stop
			}
			done := readEvents(ctx, run, nil, &runErr, zerolog.Nop())
			if status, _, body := get(t, c, "GET", "http://"+addr+"/healthz"); status != 200 {
				t.Fatalf("/healthz while reading: %d %q", status, body)
			}
			if tc.canceled {
				cancel()
			}
			close(release)
			<-done
			if status, _, body := get(t, c, "GET", "http://"+addr+"/healthz"); status != tc.status || body != tc.body {
				t.Errorf("/healthz after the reader returned: %d %q, want %d %q", status, body, tc.status, tc.body)
			}
		})
	}
}

// The exporter holds up against a slow-loris and a scrape storm: slow headers are cut
// at ReadHeaderTimeout while scrapes go on, excess scrapes get 503 rather than queueing,
// and once it is shut down no goroutine is left behind. As root it exports a real tracer.
func TestExporterWithstandsAbuse(t *testing.T) {
	const slowConns, scrapes = 200, 1000
	before := runtime.NumGoroutine()

	events := newEventMetrics(defaultTopWorkloads, 20)
	var more []prometheus.Collector
	var stopReader func()
	if os.Geteuid() == 0 && os.Getenv("TWTRACE_UNIT_ONLY") == "" {
		backend, err := tracer.ParseBackend(*testBackend)
		must(t, err)
		tr, err := tracer.New(tracer.Options{Backend: backend})
		must(t, err)
		win := window.New(time.Now(), nil)
		more = append(more, newScrapeCollector(tr, win, snapshot.NewSource(snapshot.Options{}), 0, 20))
		ctx, cancel := context.WithCancel(context.Background())
		var readErr atomic.Pointer[error]
		done := readEvents(ctx, tr.Run, exporterSink(events, win), &readErr, zerolog.Nop())
		stopReader = func() {
			cancel()
			<-done
			tr.Close()
			if p := readErr.Load(); p != nil {
				t.Errorf("reader: %v", *p)
			}
		}
	} else {
		t.Log("not root (or make test-unit): the exporter runs without a tracer")
	}
	var runErr atomic.Pointer[error]
	srv, addr := startExporter(t, exporterRegistry(events, more...), &runErr)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}, Timeout: 30 * time.Second}

	// slow-loris: each connection sends a header that never ends, one byte a second
	header := "GET /metrics HTTP/1.1\r\nHost: " + addr + "\r\n" // ~45 s at this pace, never the final CRLF
	var sending, slow sync.WaitGroup
	heldFor := make([]time.Duration, slowConns)
	slowErr := make([]error, slowConns)
	sending.Add(slowConns)
	slow.Add(slowConns)
	for i := range slowConns {
		go func() {
			defer slow.Done()
			conn, err := net.Dial("tcp", addr)
			if err != nil {
				slowErr[i] = err
				sending.Done()
				return
			}
			defer conn.Close()
			start := time.Now()
			closed := false
			for n := 0; n < len(header) && !closed; n++ {
				_, err := conn.Write([]byte{header[n]})
				if n == 0 {
					sending.Done()
				}
				if err != nil {
					closed = true // by the server
					break
				}
				conn.SetReadDeadline(time.Now().Add(time.Second))
				if _, err := conn.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
					closed = true // by the server
				}
			}
			heldFor[i] = time.Since(start)
			if !closed {
				slowErr[i] = fmt.Errorf("never closed by the server: the whole header was sent, byte by byte, in %v", heldFor[i])
			}
		}()
	}
	sending.Wait()

	if status, _, body := get(t, client, "GET", "http://"+addr+"/metrics"); status != 200 {
		t.Errorf("scrape while %d slow connections are held: %d %q", slowConns, status, body)
	}
	var wg sync.WaitGroup
	statuses := make([]int, scrapes)
	errs := make([]error, scrapes)
	for i := range scrapes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get("http://" + addr + "/metrics")
			if err != nil {
				errs[i] = err
				return
			}
			_, errs[i] = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			statuses[i] = resp.StatusCode
		}()
	}
	wg.Wait()
	counts := map[int]int{}
	for i := range scrapes {
		if errs[i] != nil {
			t.Errorf("scrape %d: %v", i, errs[i])
			continue
		}
		counts[statuses[i]]++
	}
	if counts[200] == 0 || counts[200]+counts[503] != scrapes {
		t.Errorf("%d concurrent scrapes: statuses %v, want only 200 (at least one) and 503", scrapes, counts)
	}
	t.Logf("%d concurrent scrapes: %v", scrapes, counts)
	if status, _, body := get(t, client, "GET", "http://"+addr+"/metrics"); status != 200 {
		t.Errorf("scrape after the storm: %d %q", status, body)
	}

	slow.Wait()
	// The kernel matrix's emulated guests count time in instructions (1 ns each, about ten times
	// slower than a real CPU in their own clock) and run the whole storm on one or two CPUs: a
	// slow connection must still be closed by the server's header timeout, later than here.
	limit, late, shutdown := srv.ReadHeaderTimeout, 3*time.Second, 5*time.Second
	if os.Getenv("TWTRACE_EMULATED") != "" {
		late, shutdown = 30*time.Second, 30*time.Second
	}
	for i, d := range heldFor {
		switch {
		case slowErr[i] != nil:
			t.Errorf("slow connection %d: %v", i, slowErr[i])
		case d < limit-250*time.Millisecond || d > limit+late:
			t.Errorf("slow connection %d closed after %v, want ReadHeaderTimeout (%v)", i, d, limit)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), shutdown)
	defer cancel()
	must(t, srv.Shutdown(ctx))
	client.CloseIdleConnections()
	if stopReader != nil {
		stopReader()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			var dump strings.Builder
			pprof.Lookup("goroutine").WriteTo(&dump, 2)
			t.Fatalf("%d goroutines 5s after shutdown, %d before: leaked\n%s", runtime.NumGoroutine(), before, dump.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serve's window holds only what came since the last scrape (or fold): the namespaces its
// events came from are kept, every destination is not.
func TestScrapeFoldsTheWindow(t *testing.T) {
	win := window.New(time.Now(), nil)
	c := newScrapeCollector(nil, win, offlineSource{}, 0, 1)
	e := tracer.Event{Kind: tracer.KindTWEnter, NetNS: 7, Family: 4, SAddr: netip.MustParseAddr("10.0.0.1"),
		DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 443}
	win.Add(&e)
	scrape := foldFirst(c, prometheus.NewRegistry())
	for range 2 {
		_, err := scrape.Gather()
		must(t, err)
		if ns := c.namespaces(); !slices.Contains(ns, 7) {
			t.Errorf("namespaces %v lack 7, whose events came before the last scrape", ns)
		}
	}
	if a := win.Copy(); len(a.Created) != 0 || len(a.Netns) != 0 {
		t.Errorf("the window still holds %v after a scrape", a.Created)
	}
}
