package snapshot

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// TimewaitSysctls are the net.ipv4 settings that shape TIME_WAIT, in the order doctor
// shows them.
var TimewaitSysctls = []string{
	"tcp_tw_reuse", "tcp_tw_reuse_delay", "tcp_timestamps", "tcp_max_tw_buckets",
	"tcp_fin_timeout", "ip_local_port_range", "tcp_rfc1337", "tcp_tw_recycle",
}

// readSysctls reads TimewaitSysctls in the calling thread's namespace.
func readSysctls() map[string]string {
	out := map[string]string{}
	for _, name := range TimewaitSysctls {
		b, err := os.ReadFile(filepath.Join("/proc/sys/net/ipv4", name))
		if err == nil {
			out[name] = strings.Join(strings.Fields(string(b)), " ")
		}
	}
	return out
}

func limitsOf(sysctls map[string]string) Limits {
	l := Limits{MaxTWBuckets: -1}
	if v, err := strconv.ParseInt(sysctls["tcp_max_tw_buckets"], 10, 64); err == nil {
		l.MaxTWBuckets = v
	}
	if f := strings.Fields(sysctls["ip_local_port_range"]); len(f) == 2 {
		lo, err1 := strconv.ParseUint(f[0], 10, 16)
		hi, err2 := strconv.ParseUint(f[1], 10, 16)
		if err1 == nil && err2 == nil {
			l.PortLow, l.PortHigh = uint16(lo), uint16(hi)
		}
	}
	return l
}
