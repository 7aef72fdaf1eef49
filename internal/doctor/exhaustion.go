package doctor

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
)

// PortFailure is a destination towards which connect() found no free local port.
type PortFailure struct {
	Dest   snapshot.Destination
	Failed uint64 // connect() calls that failed with EADDRNOTAVAIL
	Reused uint64 // timewait sockets connect() took over there instead (tcp_tw_reuse)
	Live   int    // TIME_WAIT sockets towards it now; -1 unknown (offline)
}

// WorkloadFailures is a workload whose connect() calls failed with EADDRNOTAVAIL.
type WorkloadFailures struct {
	Name   string // as the views name it; "unknown" for a socket of no known cgroup
	Failed uint64
}

// exhaustionFinding reports connect() calls that failed for want of a local port, with
// what holds the ports and the advice that holds on this kernel; nil when none failed.
// sysctls is nil offline.
func exhaustionFinding(sysctls map[string]string, m *Measurement) []Finding {
	if m == nil || m.ConnectUntraced || len(m.PortFailures) == 0 {
		return nil
	}
	var failed uint64
	var towards []string
	for i, p := range m.PortFailures {
		failed += p.Failed
		if i == 3 {
			towards = append(towards, fmt.Sprintf("and %d more destinations", len(m.PortFailures)-3))
			break
		}
		s := fmt.Sprintf("%d towards %s from %s (", p.Failed, fmtAddrPort(p.Dest), p.Dest.SAddr)
		if p.Live >= 0 {
			s += fmt.Sprintf("%d sockets in TIME_WAIT towards it now, ", p.Live)
		}
		if m.ReuseUntraced {
			s += "reuses not traced)"
		} else {
			s += fmt.Sprintf("reused %d, failed %d)", p.Reused, p.Failed)
		}
		towards = append(towards, s)
	}
	ev := fmt.Sprintf("%d connect() calls failed with EADDRNOTAVAIL in %s: %s", failed, m.Window.Round(time.Second), strings.Join(towards, "; "))
	if len(m.PortFailuresBy) > 0 {
		var by []string
		for i, w := range m.PortFailuresBy {
			if i == 3 {
				by = append(by, fmt.Sprintf("and %d more", len(m.PortFailuresBy)-3))
				break
			}
			by = append(by, fmt.Sprintf("%s %d", w.Name, w.Failed))
		}
		ev += "; called by " + strings.Join(by, ", ")
	}
	if sysctls == nil {
		ev += "; the namespace's settings are not available offline"
		return []Finding{{ID: "ephemeral_ports_exhausted", Severity: SeverityCritical, Title: exhaustedTitle, Evidence: ev,
			Advice: "reuse connections (keep-alive, pools); see twtrace doctor on the live system for the settings"}}
	}
	lo, hi, rangeOK := portRange(sysctls["ip_local_port_range"])
	size := "unknown"
	if rangeOK {
		size = fmt.Sprintf("%d-%d, %d ports", lo, hi, hi-lo+1)
	}
	ev += fmt.Sprintf("; ip_local_port_range %s; tcp_tw_reuse = %s, tcp_timestamps = %s", size,
		orAbsent(sysctls, "tcp_tw_reuse"), orAbsent(sysctls, "tcp_timestamps"))
	if delay, ok := sysctls["tcp_tw_reuse_delay"]; ok {
		ev += ", tcp_tw_reuse_delay = " + delay + " ms"
	}
	return []Finding{{ID: "ephemeral_ports_exhausted", Severity: SeverityCritical, Title: exhaustedTitle, Evidence: ev,
		Advice: exhaustionAdvice(sysctls, m.PortFailures[0].Dest, rangeOK, lo, hi)}}
}

const exhaustedTitle = "connect() ran out of local ports: calls failed with EADDRNOTAVAIL (Cannot assign requested address)"

// exhaustionAdvice says what frees ports on this kernel, given its settings, and which
// common advice does not.
func exhaustionAdvice(sysctls map[string]string, d snapshot.Destination, rangeOK bool, lo, hi int) string {
	reuse, ts := sysctls["tcp_tw_reuse"], sysctls["tcp_timestamps"]
	age := "1 s"
	if delay, ok := sysctls["tcp_tw_reuse_delay"]; ok {
		age = delay + " ms (tcp_tw_reuse_delay)"
	}
	reuseRule := "it lets connect() take over a TIME_WAIT socket to the same destination once the peer's last timestamp is " +
		"older than " + age + "; it needs timestamps on both ends, applies to outgoing connections only and never to " +
		"orphaned FIN_WAIT2 timewait sockets"
	var reuseAdvice string
	switch {
	case ts == "0":
		reuseAdvice = "tcp_timestamps = 0 rules out tcp_tw_reuse: set net.ipv4.tcp_timestamps = 1, then tcp_tw_reuse = 1 (" + reuseRule + ")"
	case reuse == "1":
		reuseAdvice = "tcp_tw_reuse = 1 is already on, yet connect() failed: the TIME_WAIT sockets were younger than " + age +
			", orphaned FIN_WAIT2 ones, or the peer sends no timestamps; the remedies below are the ones left"
	case reuse == "2" && loopback(d):
		reuseAdvice = "tcp_tw_reuse = 2 already reuses loopback connections like this one, yet connect() failed: the TIME_WAIT " +
			"sockets were younger than " + age + " or without timestamps; set 1 only if other destinations need it too"
	case reuse == "2":
		reuseAdvice = "set net.ipv4.tcp_tw_reuse = 1: 2 (the default) reuses loopback connections only, and " +
			d.DAddr.String() + " is not loopback; " + reuseRule
	default:
		reuseAdvice = "set net.ipv4.tcp_tw_reuse = 1: " + reuseRule
	}
	wider := "a wider net.ipv4.ip_local_port_range"
	if rangeOK {
		wider += " (now " + strconv.Itoa(hi-lo+1) + " ports; every destination gets the whole range)"
	}
	return "reuse connections (keep-alive, pools): a connection whose client closes first keeps its local port in TIME_WAIT " +
		"for 60 s; " + reuseAdvice + "; " + wider + "; more source addresses, each with its own ports per destination, bound " +
		"with IP_BIND_ADDRESS_NO_PORT so that connect() picks the port per destination (a bind() to port 0 without it needs a " +
		"port free towards every destination and fails with EADDRINUSE first). Myths this rules out: tcp_tw_recycle (removed " +
		"in 4.12), tcp_fin_timeout (the orphaned FIN_WAIT2 timeout: TIME_WAIT stays 60 s), SO_REUSEADDR (lets bind() take " +
		"a port held in TIME_WAIT, not connect() a tuple still in it), a lower tcp_max_tw_buckets (frees ports only by " +
		"closing without TIME_WAIT, an overflow), SO_LINGER 0 (skips TIME_WAIT by resetting the connection, losing data in flight)"
}

func loopback(d snapshot.Destination) bool {
	return d.DAddr.Unmap().IsLoopback()
}

func orAbsent(sysctls map[string]string, name string) string {
	if v, ok := sysctls[name]; ok {
		return v
	}
	return "absent"
}
