package main

import (
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// The metric names and labels are part of the product (README, "Metrics").

// lifetimeBuckets resolve sub-second kills and the timer wheel's rounding around 60 s.
var lifetimeBuckets = []float64{0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 59, 60, 60.25, 60.5, 61, 62, 65, 90, 120}

// eventMetrics are updated once per event.
type eventMetrics struct {
	created  *prometheus.CounterVec
	lifetime *prometheus.HistogramVec
	overflow *prometheus.CounterVec
	resets   *prometheus.CounterVec
	connect  *prometheus.CounterVec // by namespace and errno
	connectD *prometheus.CounterVec // the same, by destination too: the first topK, then "other"

	mu       sync.Mutex
	zeroed   map[uint32]bool // namespaces whose series exist
	families tracer.Families // delivered: their namespace series start at 0
	topK     int
	dests    map[snapshot.Destination]bool // destinations with their own connectD series
}

// otherDestinations labels the connect failures towards destinations past the first topK.
const otherDestinations = "other"

func newEventMetrics(topK int) *eventMetrics {
	return &eventMetrics{topK: topK, dests: map[snapshot.Destination]bool{},
		connect: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_connect_failures_total",
			Help: "connect() calls that failed, by namespace and errno (EADDRNOTAVAIL: no free local port; unknown: failed inside connect() once it had a port)."},
			[]string{"netns", "errno"}),
		connectD: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_connect_failures_by_destination_total",
			Help: "connect() calls that failed, by errno and destination: the first --top destinations seen, the others as daddr=\"other\"."},
			[]string{"netns", "errno", "saddr", "daddr", "dport"}),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_timewait_created_total",
			Help: "Timewait sockets created, by namespace and substate."}, []string{"netns", "substate"}),
		lifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "twtrace_timewait_lifetime_seconds",
			Help: "Lifetime of timewait sockets born while twtrace ran, by substate and how they ended.", Buckets: lifetimeBuckets},
			[]string{"substate", "cause"}),
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_timewait_overflow_total",
			Help: "Closes that found the namespace's timewait table full (tcp_max_tw_buckets): no TIME_WAIT protection."}, []string{"netns"}),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_tcp_resets_total",
			Help: "TCP resets sent and received, by the kernel's (or the inferred) reason."}, []string{"direction", "reason"}),
	}
}

func (m *eventMetrics) register(r *prometheus.Registry) {
	r.MustRegister(m.created, m.lifetime, m.overflow, m.resets, m.connect, m.connectD)
}

func (m *eventMetrics) add(e *tracer.Event) {
	m.mu.Lock()
	m.namespaceAtZero(e.NetNS)
	own := true
	if e.Kind == tracer.KindConnectFail {
		d := snapshot.Destination{NetNS: e.NetNS, SAddr: e.SAddr, DAddr: e.DAddr, DPort: e.DPort}
		if own = m.dests[d]; !own && len(m.dests) < m.topK {
			m.dests[d], own = true, true
		}
	}
	m.mu.Unlock()
	switch e.Kind {
	case tracer.KindTWEnter:
		m.created.WithLabelValues(strconv.FormatUint(uint64(e.NetNS), 10), e.Substate.String()).Inc()
	case tracer.KindTWExit:
		if e.DurationOK {
			m.lifetime.WithLabelValues(e.Substate.String(), lifetimeCause(e.Cause, e.Detail)).Observe(e.Duration.Seconds())
		}
	case tracer.KindTWOverflow:
		m.overflow.WithLabelValues(strconv.FormatUint(uint64(e.NetNS), 10)).Inc()
	case tracer.KindReset:
		dir, reason := "sent", e.Reason
		if e.Recv {
			dir, reason = "recv", "none"
		}
		m.resets.WithLabelValues(dir, reason).Inc()
	case tracer.KindConnectFail:
		netns, errno := strconv.FormatUint(uint64(e.NetNS), 10), e.ErrnoName()
		m.connect.WithLabelValues(netns, errno).Inc()
		if own {
			m.connectD.WithLabelValues(netns, errno, e.SAddr.String(), e.DAddr.String(), strconv.Itoa(int(e.DPort))).Inc()
		} else {
			m.connectD.WithLabelValues(netns, errno, otherDestinations, otherDestinations, otherDestinations).Inc()
		}
	}
}

// scrapeCollector reads what is true now, at each scrape: live timewait sockets and the
// limits they count against (a snapshot of each namespace the window saw events from), the
// busiest destinations, loss, backends.
type scrapeCollector struct {
	t        *tracer.Tracer
	win      *window.Window
	src      snapshotter
	only     uint32
	mu       sync.Mutex
	seen     map[uint32]bool // every namespace an event came from since the start
	topK     int
	live     *prometheus.Desc
	maxTW    *prometheus.Desc
	ports    *prometheus.Desc
	dest     *prometheus.Desc
	lost     *prometheus.Desc
	missed   *prometheus.Desc
	backends *prometheus.Desc
	families *prometheus.Desc
	// counted in the kernel (Options.CountTransitions), read at each scrape
	transitions *prometheus.Desc
}

func newScrapeCollector(t *tracer.Tracer, win *window.Window, src snapshotter, only uint32, topK int) *scrapeCollector {
	return &scrapeCollector{t: t, win: win, src: src, only: only, topK: topK, seen: map[uint32]bool{},
		live:  prometheus.NewDesc("twtrace_timewait_sockets", "Timewait sockets alive now (sock_diag), those born before twtrace included.", []string{"netns"}, nil),
		maxTW: prometheus.NewDesc("twtrace_timewait_max_buckets", "The namespace's net.ipv4.tcp_max_tw_buckets.", []string{"netns"}, nil),
		ports: prometheus.NewDesc("twtrace_ephemeral_ports", "Size of the namespace's net.ipv4.ip_local_port_range.", []string{"netns"}, nil),
		dest: prometheus.NewDesc("twtrace_timewait_destination_sockets",
			"Timewait sockets alive now towards one destination (each holds a local port); only the top K destinations.",
			[]string{"netns", "saddr", "daddr", "dport"}, nil),
		lost:     prometheus.NewDesc("twtrace_events_lost_total", "Events the kernel could not write: the ring buffer was full.", nil, nil),
		missed:   prometheus.NewDesc("twtrace_events_missed_total", "Hook runs the kernel skipped: the program was already running on that CPU.", nil, nil),
		backends: prometheus.NewDesc("twtrace_backend_info", "The backend serving each hook (value 1).", []string{"hook", "backend"}, nil),
		families: prometheus.NewDesc("twtrace_event_family_available",
			"1 for each event family traced, 0 for one asked for that this kernel cannot deliver (no backend for a hook it needs).", []string{"family"}, nil),
		transitions: prometheus.NewDesc("twtrace_tcp_state_transitions_total",
			"TCP state transitions, the timewait hand-off (->TIME_WAIT) and death (TIME_WAIT->CLOSE) included.", []string{"from", "to"}, nil),
	}
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.live, c.maxTW, c.ports, c.dest, c.lost, c.missed, c.backends, c.families, c.transitions} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if s, err := c.t.Stats(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(s.Lost))
		ch <- prometheus.MustNewConstMetric(c.missed, prometheus.CounterValue, float64(s.Missed))
	}
	if counts, err := c.t.Transitions(); err == nil {
		for tr, n := range counts {
			ch <- prometheus.MustNewConstMetric(c.transitions, prometheus.CounterValue, float64(n), tr.Old.String(), tr.New.String())
		}
	}
	for _, ch0 := range c.t.Choices() {
		if ch0.Backend != "" {
			ch <- prometheus.MustNewConstMetric(c.backends, prometheus.GaugeValue, 1, string(ch0.Hook), string(ch0.Backend))
		}
	}
	for _, f := range families {
		if c.t.Families()&f != 0 {
			ch <- prometheus.MustNewConstMetric(c.families, prometheus.GaugeValue, 1, f.String())
		}
	}
	for _, m := range c.t.Unavailable() {
		ch <- prometheus.MustNewConstMetric(c.families, prometheus.GaugeValue, 0, m.Family.String())
	}
	type destLive struct {
		d    snapshot.Destination
		live int
	}
	var dests []destLive
	for _, inode := range c.namespaces() {
		n, err := c.src.Take(inode)
		if err != nil {
			continue // gone: its sockets went with it
		}
		label := strconv.FormatUint(uint64(inode), 10)
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(n.TimeWaitTable), label)
		if n.Limits.MaxTWBuckets >= 0 {
			ch <- prometheus.MustNewConstMetric(c.maxTW, prometheus.GaugeValue, float64(n.Limits.MaxTWBuckets), label)
		}
		if size := n.Limits.PortRangeSize(); size > 0 {
			ch <- prometheus.MustNewConstMetric(c.ports, prometheus.GaugeValue, float64(size), label)
		}
		for d, live := range n.TimeWait {
			dests = append(dests, destLive{d, live})
		}
	}
	// bounded cardinality whatever the traffic: only the K busiest destinations
	sort.Slice(dests, func(i, j int) bool { return dests[i].live > dests[j].live })
	for _, d := range dests[:min(c.topK, len(dests))] {
		ch <- prometheus.MustNewConstMetric(c.dest, prometheus.GaugeValue, float64(d.live),
			strconv.FormatUint(uint64(d.d.NetNS), 10), d.d.SAddr.String(), d.d.DAddr.String(), strconv.Itoa(int(d.d.DPort)))
	}
}

// fold ends the window and keeps the namespaces its events came from, all a scrape needs of
// it so far: a window never restarted would grow with every destination ever seen.
func (c *scrapeCollector) fold() {
	ended := c.win.Restart(time.Now(), nil)
	c.mu.Lock()
	defer c.mu.Unlock()
	for ns := range ended.Netns {
		c.seen[ns] = true
	}
}

// namespaces lists the namespace filtered on, or those events came from and twtrace's own.
func (c *scrapeCollector) namespaces() []uint32 {
	c.fold()
	if c.only != 0 {
		return []uint32{c.only}
	}
	c.mu.Lock()
	out := make([]uint32, 0, len(c.seen)+1)
	for ns := range c.seen {
		out = append(out, ns)
	}
	c.mu.Unlock()
	if self, err := netns.Self(); err == nil && !slices.Contains(out, self.Inode) {
		out = append(out, self.Inode)
	}
	slices.Sort(out)
	return out
}
