// Package doctor turns a namespace's TIME_WAIT settings, and what twtrace measured there,
// into findings with their evidence and advice.
package doctor

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
)

// Severity orders findings.
type Severity string

const (
	SeverityInfo     Severity = "info"
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// Finding is one diagnosis with its evidence. ID is stable: scripts may match on it.
type Finding struct {
	ID       string   `json:"id"`
	Severity Severity `json:"severity"`
	Title    string   `json:"title"`
	Evidence string   `json:"evidence"`
	Advice   string   `json:"advice,omitempty"`
}

// Measurement is what doctor saw in one namespace while tracing; nil when it did not trace.
type Measurement struct {
	Window    time.Duration
	Overflows uint64 // tw_overflow events
	// OverflowsUntraced: the overflow family was not traced (unavailable here), so
	// Overflows is unknown, not zero
	OverflowsUntraced bool
	CounterDelta      int64 // TcpExtTCPTimeWaitOverflow over the window, -1 unknown
	PeakLive          int64 // most TIME_WAIT sockets seen at once (sampled each second)
	TimeWaitP50       time.Duration
	TimeWaitCount     uint64 // TIME_WAIT lifetimes measured
	FinWait2P50       time.Duration
	FinWait2Count     uint64
	KilledByRST       uint64
	// TopDestination holds the destination with the most live TIME_WAIT sockets.
	TopDestination snapshot.Destination
	TopLive        int
	// PortFailures lists the destinations connect() found no free local port towards,
	// most failures first. ConnectUntraced: the connect family was not traced, so they are
	// unknown; ReuseUntraced: the tw family was not, so the reuses are.
	PortFailures []PortFailure
	// PortFailuresBy names the workloads whose connect() found no port, most failures first.
	PortFailuresBy  []WorkloadFailures
	ConnectUntraced bool
	ReuseUntraced   bool
	// ConnectFailures counts every failed connect() by errno name; Reused the timewait
	// sockets connect() took over.
	ConnectFailures map[string]uint64
	Reused          uint64
}

// Diagnose turns one namespace's settings, the kernel release and an optional
// measurement into findings, most severe first.
func Diagnose(kernel string, sysctls map[string]string, m *Measurement) []Finding {
	var f []Finding
	num := func(name string) (int64, bool) {
		v, err := strconv.ParseInt(sysctls[name], 10, 64)
		return v, err == nil
	}
	if recycle, exists := sysctls["tcp_tw_recycle"]; !exists {
		f = append(f, Finding{ID: "tw_recycle_removed", Severity: SeverityInfo,
			Title:    "tcp_tw_recycle does not exist on this kernel: advice to set it is obsolete",
			Evidence: fmt.Sprintf("net.ipv4.tcp_tw_recycle is absent on Linux %s (removed in 4.12)", kernel)})
	} else if recycle != "0" {
		f = append(f, Finding{ID: "tw_recycle_enabled", Severity: SeverityWarning,
			Title:    "tcp_tw_recycle is on: clients behind NAT will see their connections dropped",
			Evidence: "net.ipv4.tcp_tw_recycle = " + recycle,
			Advice:   "set it to 0; use connection reuse or tcp_tw_reuse instead"})
	}
	if fin, ok := num("tcp_fin_timeout"); ok {
		ev := fmt.Sprintf("net.ipv4.tcp_fin_timeout = %d s", fin)
		if m != nil && m.TimeWaitCount > 0 {
			ev += fmt.Sprintf("; measured: %d TIME_WAIT sockets lived %s (median)", m.TimeWaitCount, m.TimeWaitP50.Round(time.Millisecond))
		}
		if m != nil && m.FinWait2Count > 0 {
			ev += fmt.Sprintf(", %d orphaned FIN_WAIT2 sockets %s", m.FinWait2Count, m.FinWait2P50.Round(time.Millisecond))
		}
		f = append(f, Finding{ID: "fin_timeout_not_time_wait", Severity: SeverityInfo,
			Title:    "tcp_fin_timeout sets the orphaned FIN_WAIT2 timeout, not TIME_WAIT's 60 s",
			Evidence: ev,
			Advice:   "lowering it does not shorten TIME_WAIT (fixed at 60 s since 4.12)"})
	}
	reuse, _ := num("tcp_tw_reuse")
	if ts, ok := num("tcp_timestamps"); ok && ts == 0 && reuse != 0 {
		f = append(f, Finding{ID: "tw_reuse_without_timestamps", Severity: SeverityWarning,
			Title:    "tcp_tw_reuse is on but TCP timestamps are off: reuse never happens",
			Evidence: fmt.Sprintf("net.ipv4.tcp_tw_reuse = %d, net.ipv4.tcp_timestamps = 0", reuse),
			Advice:   "tcp_tw_reuse needs timestamps to tell old segments from new: set tcp_timestamps = 1"})
	}
	f = append(f, exhaustionFinding(sysctls, m)...) // failures seen come before the risks that explain them
	portLow, portHigh, rangeOK := portRange(sysctls["ip_local_port_range"])
	maxTW, maxOK := num("tcp_max_tw_buckets")
	if m != nil && (m.Overflows > 0 || m.CounterDelta > 0) {
		f = append(f, Finding{ID: "max_tw_buckets_reached", Severity: SeverityCritical,
			Title: "the timewait table was full: connections closed without TIME_WAIT protection",
			Evidence: fmt.Sprintf("%s in %s (TcpExtTCPTimeWaitOverflow +%d), tcp_max_tw_buckets = %d, peak %d live",
				tracedOverflows(m), m.Window.Round(time.Second), max(m.CounterDelta, 0), maxTW, m.PeakLive),
			Advice: "raise net.ipv4.tcp_max_tw_buckets above the peak, or reuse connections so fewer close"})
	} else if m != nil && maxOK && maxTW > 0 && m.PeakLive*10 >= maxTW*8 {
		f = append(f, Finding{ID: "max_tw_buckets_near", Severity: SeverityWarning,
			Title:    "TIME_WAIT occupancy reached 80% of tcp_max_tw_buckets",
			Evidence: fmt.Sprintf("peak %d live of %d in %s", m.PeakLive, maxTW, m.Window.Round(time.Second)),
			Advice:   "raise net.ipv4.tcp_max_tw_buckets before it overflows"})
	}
	if m != nil && rangeOK && m.TopLive > 0 {
		size := portHigh - portLow + 1
		share := float64(m.TopLive) / float64(size)
		sev := SeverityInfo
		switch {
		case share >= 0.8:
			sev = SeverityCritical
		case share >= 0.2:
			sev = SeverityWarning
		}
		d := m.TopDestination
		f = append(f, Finding{ID: "ephemeral_ports_pressure", Severity: sev,
			Title: fmt.Sprintf("%.0f%% of the ephemeral port range is in TIME_WAIT towards one destination", 100*share),
			Evidence: fmt.Sprintf("%d sockets from %s to %s in TIME_WAIT; ip_local_port_range %d-%d (%d ports)",
				m.TopLive, d.SAddr, fmtAddrPort(d), portLow, portHigh, size),
			Advice: fmt.Sprintf("what helps: reuse connections (keep-alive, pools); tcp_tw_reuse (now %d: 1 lets outgoing "+
				"connections take over a TIME_WAIT socket once its timestamp is older than tcp_tw_reuse_delay or 1 s; 2, the default, "+
				"only on loopback); a wider ip_local_port_range; more source addresses (IP_BIND_ADDRESS_NO_PORT). "+
				"Myths: tcp_tw_recycle (gone), tcp_fin_timeout (does not touch TIME_WAIT)", reuse)})
	}
	if rfc, ok := num("tcp_rfc1337"); ok && rfc == 0 && m != nil && m.KilledByRST > 0 {
		f = append(f, Finding{ID: "rst_kills_time_wait", Severity: SeverityInfo,
			Title:    "resets end TIME_WAIT early (tcp_rfc1337 = 0)",
			Evidence: fmt.Sprintf("%d timewait sockets killed by a reset in %s", m.KilledByRST, m.Window.Round(time.Second)),
			Advice:   "set net.ipv4.tcp_rfc1337 = 1 to keep TIME_WAIT's protection against old duplicates"})
	}
	rank := map[Severity]int{SeverityCritical: 0, SeverityWarning: 1, SeverityInfo: 2}
	sort.SliceStable(f, func(i, j int) bool { return rank[f[i].Severity] < rank[f[j].Severity] })
	return f
}

func portRange(s string) (lo, hi int, ok bool) {
	fields := strings.Fields(s)
	if len(fields) != 2 {
		return 0, 0, false
	}
	lo, err1 := strconv.Atoi(fields[0])
	hi, err2 := strconv.Atoi(fields[1])
	return lo, hi, err1 == nil && err2 == nil && hi >= lo
}

func fmtAddrPort(d snapshot.Destination) string {
	if d.DAddr.Is6() {
		return fmt.Sprintf("[%s]:%d", d.DAddr, d.DPort)
	}
	return fmt.Sprintf("%s:%d", d.DAddr, d.DPort)
}

func tracedOverflows(m *Measurement) string {
	if m.OverflowsUntraced {
		return "overflows not traced (the family is unavailable on this kernel)"
	}
	return fmt.Sprintf("%d overflows traced", m.Overflows)
}

// DiagnoseTraced is Diagnose for a recording replayed offline: neither the namespace's
// settings nor its live state are known, so only what the traced events show alone is
// found.
func DiagnoseTraced(m *Measurement) []Finding {
	var f []Finding
	if !m.OverflowsUntraced && m.Overflows > 0 {
		f = append(f, Finding{ID: "max_tw_buckets_reached", Severity: SeverityCritical,
			Title: "the timewait table was full: connections closed without TIME_WAIT protection",
			Evidence: fmt.Sprintf("%d overflows traced in %s; tcp_max_tw_buckets, the kernel's counter and the peak occupancy "+
				"are not available offline", m.Overflows, m.Window.Round(time.Second)),
			Advice: "raise net.ipv4.tcp_max_tw_buckets above the peak, or reuse connections so fewer close"})
	}
	return append(exhaustionFinding(nil, m), f...)
}
