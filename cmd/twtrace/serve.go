package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	dto "github.com/prometheus/client_model/go"
	"github.com/rs/zerolog"
	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

func serve(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("serve", "Usage: twtrace serve [flags]\n\nRun as a node agent: trace, and serve Prometheus metrics on /metrics and the tracer's health\non /healthz until interrupted.", stdout)
	f := newTraceFlags(fs)
	listen, topK := registerServeFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := f.options()
	if err != nil {
		return err
	}
	if *topK < 1 {
		return usagef("--top %d: export at least one destination", *topK)
	}
	if _, _, err := net.SplitHostPort(*listen); err != nil {
		return usagef("--listen %q: want host:port, e.g. 127.0.0.1:9580", *listen)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", *listen, err)
	}
	defer ln.Close()

	opts.CountTransitions = true // the transitions counter is read from the kernel at each scrape
	sess, err := startReconciledSession(f, &opts, stderr)
	if err != nil {
		return err
	}
	defer sess.Close()
	names, reconcileSrc, baseline := sess.names, sess.src, sess.baseline

	events := newEventMetrics(f.workload.top, *topK)
	events.startAtZero(sess.t.Families(), sess.t.ResetReasons(), startNamespaces(opts.Filter.NetNS))
	win := window.New(time.Now(), nil)
	src := snapshot.NewSource(snapshot.Options{Keep: window.Keep(opts.Filter)})
	scrapes := newScrapeCollector(sess.t, win, src, opts.Filter.NetNS, *topK)
	scrapes.events, scrapes.names, scrapes.topWorkloads = events, names, f.workload.top
	collectors := []prometheus.Collector{scrapes}
	if sess.stats != nil {
		collectors = append(collectors, newProgramCollector(sess.t))
	}
	reg := exporterRegistry(events, collectors...)
	go foldEvery(sess.ctx, scrapes, foldInterval)
	rec := newReconciliation(sess.t.Families(), opts.Filter, reconcileSrc, baseline, func(found reconcile.Findings) {
		for i := range found.Unseen {
			events.add(&found.Unseen[i])
		}
		for _, u := range found.Unattributed {
			events.addUnattributed(u)
		}
		foldFindings(win)(found)
	})
	go rec.loop(sess.ctx)
	var runErr atomic.Pointer[error]
	sink := exporterSink(events, win)
	runWithIdle := func(ctx context.Context, fn func(*tracer.Event), _ func()) error {
		return sess.t.Run(ctx, fn, rec.idle)
	}
	running := readEvents(sess.ctx, runWithIdle, func(e *tracer.Event) {
		rec.observe(e)
		sink(e)
	}, &runErr, sess.log)
	srv := newExporterServer(exporterHandler(foldFirst(scrapes, reg), &runErr))
	sess.log.Info().Str("listen", ln.Addr().String()).Msg("serving /metrics and /healthz")
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case <-running:
	case err := <-served:
		sess.cancel()
		<-running // the reader must stop before the deferred Close frees what it reads
		return fmt.Errorf("serve: %w", err)
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(shutdown)
	summary(stderr, sess.t)
	sess.costSummary(stderr)
	if p := runErr.Load(); p != nil && sess.ctx.Err() == nil {
		return *p
	}
	return nil
}

// startNamespaces are the namespaces whose series exist from the start: --netns, or
// twtrace's own.
func startNamespaces(only uint32) []uint32 {
	if only != 0 {
		return []uint32{only}
	}
	if self, err := netns.Self(); err == nil {
		return []uint32{self.Inode}
	}
	return nil
}

func registerServeFlags(fs *flag.FlagSet) (listen *string, topK *int) {
	listen = fs.String("listen", "127.0.0.1:9580", "address for /metrics and /healthz; loopback by default: exposing it is a choice")
	topK = fs.Int("top", 20, "destinations to export: the K busiest, so cardinality stays bounded")
	return listen, topK
}

// foldInterval bounds what serve's window holds between scrapes, when nobody scrapes.
const foldInterval = 10 * time.Second

// foldEvery folds the collector's window every interval until ctx ends.
func foldEvery(ctx context.Context, c *scrapeCollector, interval time.Duration) {
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
			c.fold()
		}
	}
}

// foldFirst folds the window before each scrape gathers: the counters it adds to are then up to
// date when read.
func foldFirst(c *scrapeCollector, g prometheus.Gatherer) prometheus.Gatherer {
	return prometheus.GathererFunc(func() ([]*dto.MetricFamily, error) {
		c.fold()
		return g.Gather()
	})
}

// exporterSink is serve's work per event: its counters, and the window the scrapes read.
func exporterSink(events *eventMetrics, win *window.Window) func(*tracer.Event) {
	return func(e *tracer.Event) {
		events.add(e)
		win.Add(e)
	}
}

// exporterRegistry holds the event metrics, the Go runtime's and the process's, and more.
func exporterRegistry(events *eventMetrics, more ...prometheus.Collector) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	events.register(reg)
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	reg.MustRegister(more...)
	return reg
}

// readEvents delivers events to fn until ctx ends. If the reader stops before that,
// runErr says why (and /healthz turns 503). The channel closes when it has returned.
func readEvents(ctx context.Context, run func(context.Context, func(*tracer.Event), func()) error,
	fn func(*tracer.Event), runErr *atomic.Pointer[error], log zerolog.Logger) <-chan struct{} {
	done := make(chan struct{})
	go func() {
		defer close(done)
		err := run(ctx, fn, nil)
		if err == nil && ctx.Err() == nil {
			err = errors.New("the event reader stopped")
		}
		if err != nil {
			runErr.Store(&err)
			log.Error().Err(err).Msg("tracer stopped delivering events")
		}
	}()
	return done
}

// newExporterServer bounds what a client can hold: slow headers, slow bodies, idle
// connections, big headers.
func newExporterServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      30 * time.Second,
		IdleTimeout:       60 * time.Second,
		MaxHeaderBytes:    8 << 10,
	}
}

// exporterHandler serves GET /metrics and GET /healthz and nothing else.
func exporterHandler(reg prometheus.Gatherer, runErr *atomic.Pointer[error]) http.Handler {
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{MaxRequestsInFlight: 8, Timeout: 20 * time.Second})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "only GET", http.StatusMethodNotAllowed)
			return
		}
		switch r.URL.Path {
		case "/metrics":
			metrics.ServeHTTP(w, r)
		case "/healthz":
			if p := runErr.Load(); p != nil {
				http.Error(w, "tracer stopped: "+(*p).Error(), http.StatusServiceUnavailable)
				return
			}
			io.WriteString(w, "ok\n")
		default:
			http.NotFound(w, r)
		}
	})
}
