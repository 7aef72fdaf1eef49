package main

import (
	"cmp"
	"maps"
	"slices"
	"sort"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/topk"
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
	// reconciliation with the kernel (internal/reconcile)
	unseen       *prometheus.CounterVec
	unattributed *prometheus.CounterVec
	connect      *prometheus.CounterVec // by namespace, errno and workload
	connectD     *prometheus.CounterVec // by destination: the first topDests, then "other"

	// limiter chooses the workloads with series of their own (--top-workloads)
	limiter *topk.Limiter[string]

	mu       sync.Mutex
	zeroed   map[uint32]bool // namespaces whose series exist
	families tracer.Families // delivered: their namespace series start at 0
	reasons  []string        // a sent reset can carry here: their series start at 0
	topDests int
	dests    map[snapshot.Destination]bool // destinations with their own connectD series
}

// otherDestinations labels the connect failures towards destinations past the first topDests.
const otherDestinations = "other"

// workloadLabelNames are on every series of a workload's own (workloadLabels).
var workloadLabelNames = []string{"namespace", "pod", "unit"}

func newEventMetrics(topWorkloads, topDests int) *eventMetrics {
	return &eventMetrics{topDests: topDests, dests: map[snapshot.Destination]bool{},
		connect: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_connect_failures_total",
			Help: "connect() calls that failed, by namespace, errno (EADDRNOTAVAIL: no free local port; unknown: failed inside connect() once it had a port) and the workload that called connect()."},
			append([]string{"netns", "errno"}, workloadLabelNames...)),
		connectD: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_connect_failures_by_destination_total",
			Help: "connect() calls that failed, by errno and destination: the first --top destinations seen, the others as daddr=\"other\"; namespace, pod and unit name the workload holding the network namespace."},
			append([]string{"netns", "errno", "saddr", "daddr", "dport"}, workloadLabelNames...)),
		created: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_timewait_created_total",
			Help: "Timewait sockets created, by namespace, substate and the workload whose socket it was."},
			append([]string{"netns", "substate"}, workloadLabelNames...)),
		lifetime: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "twtrace_timewait_lifetime_seconds",
			Help: "Lifetime of timewait sockets born while twtrace ran, by substate and how they ended.", Buckets: lifetimeBuckets},
			[]string{"substate", "cause"}),
		overflow: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_timewait_overflow_total",
			Help: "Closes that found the namespace's timewait table full (tcp_max_tw_buckets): no TIME_WAIT protection; by the workload whose socket it was."},
			append([]string{"netns"}, workloadLabelNames...)),
		resets: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_tcp_resets_total",
			Help: "TCP resets sent and received, by the kernel's (or the inferred) reason and the workload whose socket it was."},
			append([]string{"direction", "reason"}, workloadLabelNames...)),
		unseen: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_timewait_unseen_total",
			Help: "Timewait deaths no program reported: the socket was found gone from sock_diag (lifetime unknown)."}, []string{"netns"}),
		unattributed: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "twtrace_unattributed_total",
			Help: "Counts the kernel made with no event, by event family: overflows (TcpExtTCPTimeWaitOverflow), timewait births (TcpExtTW + TcpExtTWKilled)."},
			[]string{"events", "netns"}),
		limiter: topk.New[string](topWorkloads, workloadIdle),
	}
}

func (m *eventMetrics) register(r *prometheus.Registry) {
	r.MustRegister(m.created, m.lifetime, m.overflow, m.resets, m.unseen, m.unattributed, m.connect, m.connectD)
}

// add is the per-event work: the namespace's series, and the lifetime. The counters with
// workload labels are added to from the window when it folds (fold).
func (m *eventMetrics) add(e *tracer.Event) {
	m.mu.Lock()
	m.namespaceAtZero(e.NetNS)
	m.mu.Unlock()
	if e.Kind != tracer.KindTWExit {
		return
	}
	if e.Cause == tracer.CauseUnseen {
		m.unseen.WithLabelValues(strconv.FormatUint(uint64(e.NetNS), 10)).Inc()
	}
	if e.DurationOK {
		m.lifetime.WithLabelValues(e.Substate.String(), lifetimeCause(e.Cause, e.Detail)).Observe(e.Duration.Seconds())
	}
}

// addUnattributed counts what reconciliation found the kernel counted with no event.
func (m *eventMetrics) addUnattributed(u reconcile.Unattributed) {
	m.unattributed.WithLabelValues(u.Family.String(), strconv.FormatUint(uint64(u.NetNS), 10)).Add(float64(u.Count))
}

// foldDestinations adds a window's connect failures by destination: the first topDests
// destinations failures went to (within a window, the most failed first) have series of
// their own, every later one counts in "other"; the workload labels name the pod (or
// container) holding the namespace, as on twtrace_timewait_destination_sockets.
func (m *eventMetrics) foldDestinations(a *window.Aggregate, names namer) {
	m.mu.Lock()
	defer m.mu.Unlock()
	keys := slices.SortedFunc(maps.Keys(a.ConnectFails), func(x, y window.ConnectKey) int {
		return cmp.Or(cmp.Compare(a.ConnectFails[y], a.ConnectFails[x]), cmp.Compare(x.Dest.NetNS, y.Dest.NetNS),
			x.Dest.SAddr.Compare(y.Dest.SAddr), x.Dest.DAddr.Compare(y.Dest.DAddr), cmp.Compare(x.Dest.DPort, y.Dest.DPort),
			cmp.Compare(x.Errno, y.Errno))
	})
	for _, k := range keys {
		d, n := k.Dest, a.ConnectFails[k]
		own := m.dests[d]
		if !own && len(m.dests) < m.topDests {
			m.dests[d], own = true, true
		}
		l := heldByLabels(names, d.NetNS)
		netns := strconv.FormatUint(uint64(d.NetNS), 10)
		saddr, daddr, dport := otherDestinations, otherDestinations, otherDestinations
		if own {
			saddr, daddr, dport = d.SAddr.String(), d.DAddr.String(), strconv.Itoa(int(d.DPort))
		}
		m.connectD.WithLabelValues(netns, k.Errno, saddr, daddr, dport, l.Namespace, l.Pod, l.Unit).Add(float64(n))
	}
}

// scrapeCollector reads what is true now, at each scrape: live timewait sockets and the
// limits they count against (a snapshot of each namespace the window saw events from), the
// busiest destinations, loss, backends.
type scrapeCollector struct {
	t    *tracer.Tracer
	win  *window.Window
	src  snapshotter
	only uint32
	topK int
	// events get the window's counts at each fold (nil: nobody counts them); names names
	// workloads (nil: all unknown); topWorkloads bounds the workload gauge's series.
	events       *eventMetrics
	names        namer
	topWorkloads int

	folding sync.Mutex // one fold at a time: a scrape's and foldEvery's
	mu      sync.Mutex
	seen    map[uint32]bool             // every namespace an event came from since the start
	held    map[window.CgroupKey]uint64 // timewait sockets each cgroup holds, at the last fold

	live     *prometheus.Desc
	maxTW    *prometheus.Desc
	ports    *prometheus.Desc
	dest     *prometheus.Desc
	lost     *prometheus.Desc
	missed   *prometheus.Desc
	records  *prometheus.Desc
	backends *prometheus.Desc
	families *prometheus.Desc
	// counted in the kernel (Options.CountTransitions), read at each scrape
	transitions *prometheus.Desc
	// traced per workload: the timewait sockets each holds, of those born while tracing
	workloadTW *prometheus.Desc
}

// netnsLabels are a namespace's, and the workload's holding it (heldByLabels).
var netnsLabels = append([]string{"netns"}, workloadLabelNames...)

func newScrapeCollector(t *tracer.Tracer, win *window.Window, src snapshotter, only uint32, topK int) *scrapeCollector {
	return &scrapeCollector{t: t, win: win, src: src, only: only, topK: topK, seen: map[uint32]bool{}, topWorkloads: defaultTopWorkloads,
		live: prometheus.NewDesc("twtrace_timewait_sockets",
			"Timewait sockets alive now (sock_diag), those born before twtrace included; namespace, pod and unit name the workload holding the network namespace, empty for the host's.", netnsLabels, nil),
		maxTW: prometheus.NewDesc("twtrace_timewait_max_buckets", "The namespace's net.ipv4.tcp_max_tw_buckets.", netnsLabels, nil),
		ports: prometheus.NewDesc("twtrace_ephemeral_ports", "Size of the namespace's net.ipv4.ip_local_port_range.", netnsLabels, nil),
		dest: prometheus.NewDesc("twtrace_timewait_destination_sockets",
			"Timewait sockets alive now towards one destination (each holds a local port); only the top K destinations.",
			append([]string{"saddr", "daddr", "dport"}, netnsLabels...), nil),
		workloadTW: prometheus.NewDesc("twtrace_workload_timewait_sockets",
			"Timewait sockets a workload holds now, of those born while twtrace ran; the top K workloads, the others summed as unit=\"other\".",
			append([]string{"netns"}, workloadLabelNames...), nil),
		lost:   prometheus.NewDesc("twtrace_events_lost_total", "Events the kernel could not write: the ring buffer was full.", nil, nil),
		missed: prometheus.NewDesc("twtrace_events_missed_total", "Hook runs the kernel skipped: the program was already running on that CPU.", nil, nil),
		records: prometheus.NewDesc("twtrace_socket_records_dropped_total",
			"Per-socket records the kernel side could not keep: reason=\"no_room\" a socket left unrecorded (its bucket full: owner or lifetime unknown), reason=\"stale\" a record taken over from a socket whose end was missed.",
			[]string{"reason"}, nil),
		backends: prometheus.NewDesc("twtrace_backend_info", "The backend serving each hook (value 1).", []string{"hook", "backend"}, nil),
		families: prometheus.NewDesc("twtrace_event_family_available",
			"1 for each event family traced, 0 for one asked for that this kernel cannot deliver (no backend for a hook it needs).", []string{"family"}, nil),
		transitions: prometheus.NewDesc("twtrace_tcp_state_transitions_total",
			"TCP state transitions, the timewait hand-off (->TIME_WAIT) and death (TIME_WAIT->CLOSE) included.", []string{"from", "to"}, nil),
	}
}

func (c *scrapeCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.live, c.maxTW, c.ports, c.dest, c.lost, c.missed, c.records, c.backends, c.families, c.transitions, c.workloadTW} {
		ch <- d
	}
}

func (c *scrapeCollector) Collect(ch chan<- prometheus.Metric) {
	if s, err := c.t.Stats(); err == nil {
		ch <- prometheus.MustNewConstMetric(c.lost, prometheus.CounterValue, float64(s.Lost))
		ch <- prometheus.MustNewConstMetric(c.missed, prometheus.CounterValue, float64(s.Missed))
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.RecordNoRoom), "no_room")
		ch <- prometheus.MustNewConstMetric(c.records, prometheus.CounterValue, float64(s.RecordStale), "stale")
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
	heldBy := map[uint32][]string{}
	inodes := c.namespaces()
	for _, inode := range inodes {
		n, err := c.src.Take(inode)
		if err != nil {
			continue // gone: its sockets went with it
		}
		l := heldByLabels(c.names, inode)
		labels := []string{strconv.FormatUint(uint64(inode), 10), l.Namespace, l.Pod, l.Unit}
		heldBy[inode] = labels
		ch <- prometheus.MustNewConstMetric(c.live, prometheus.GaugeValue, float64(n.TimeWaitTable), labels...)
		if n.Limits.MaxTWBuckets >= 0 {
			ch <- prometheus.MustNewConstMetric(c.maxTW, prometheus.GaugeValue, float64(n.Limits.MaxTWBuckets), labels...)
		}
		if size := n.Limits.PortRangeSize(); size > 0 {
			ch <- prometheus.MustNewConstMetric(c.ports, prometheus.GaugeValue, float64(size), labels...)
		}
		for d, live := range n.TimeWait {
			dests = append(dests, destLive{d, live})
		}
	}
	// bounded cardinality whatever the traffic: only the K busiest destinations
	sort.Slice(dests, func(i, j int) bool { return dests[i].live > dests[j].live })
	for _, d := range dests[:min(c.topK, len(dests))] {
		labels := append([]string{d.d.SAddr.String(), d.d.DAddr.String(), strconv.Itoa(int(d.d.DPort))}, heldBy[d.d.NetNS]...)
		ch <- prometheus.MustNewConstMetric(c.dest, prometheus.GaugeValue, float64(d.live), labels...)
	}
	c.collectWorkloads(ch, inodes)
}

// collectWorkloads exports the timewait sockets each workload holds: the K largest (per
// namespace and workload) with series of their own, the rest summed per namespace as other.
func (c *scrapeCollector) collectWorkloads(ch chan<- prometheus.Metric, namespaces []uint32) {
	if c.t != nil && c.t.Families()&tracer.FamilyTW == 0 {
		return // not traced: no series, never a 0 that would look measured
	}
	c.mu.Lock()
	held := c.held
	c.mu.Unlock()
	type series struct {
		netns uint32
		l     workloadLabels
	}
	values := map[string]float64{}
	of := map[string]series{}
	unknown := map[uint32]float64{}
	for k, n := range held {
		l := unknownWorkload
		if c.names != nil && k.Cgroup != 0 {
			l = labelsOf(c.names.cgroup(k.Cgroup))
		}
		if l == unknownWorkload {
			unknown[k.NetNS] += float64(n)
			continue
		}
		key := strconv.FormatUint(uint64(k.NetNS), 10) + "\x00" + l.key()
		values[key] += float64(n)
		of[key] = series{k.NetNS, l}
	}
	top, _ := topk.Split(values, c.topWorkloads)
	other := map[uint32]float64{}
	for key, v := range values {
		if _, ok := top[key]; !ok {
			other[of[key].netns] += v
		}
	}
	emit := func(netns uint32, l workloadLabels, v float64) {
		ch <- prometheus.MustNewConstMetric(c.workloadTW, prometheus.GaugeValue, v, strconv.FormatUint(uint64(netns), 10), l.Namespace, l.Pod, l.Unit)
	}
	for key, v := range top {
		emit(of[key].netns, of[key].l, v)
	}
	for _, ns := range namespaces { // other and unknown exist in every namespace listed
		emit(ns, otherWorkloads, other[ns])
		emit(ns, unknownWorkload, unknown[ns])
	}
}

// fold ends the window, adds its counts to the event metrics and keeps the namespaces its
// events came from and the timewait sockets each cgroup holds, all a scrape needs of it: a
// window never restarted would grow with every destination ever seen.
func (c *scrapeCollector) fold() {
	c.folding.Lock()
	defer c.folding.Unlock()
	now := time.Now()
	ended := c.win.Restart(now, nil)
	if c.events != nil {
		c.events.fold(ended, c.names, now)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for ns := range ended.Netns {
		c.seen[ns] = true
	}
	c.held = ended.TimeWaitNow
}

// namespaces lists the namespace filtered on, or those events came from and twtrace's own.
func (c *scrapeCollector) namespaces() []uint32 {
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
