package window

import (
	"strconv"
	"strings"
	"time"

	"github.com/twtrace/twtrace/internal/forecast"
	"github.com/twtrace/twtrace/internal/snapshot"
)

// Forecast is the port model's answer for one destination (internal/forecast).
type Forecast = forecast.Forecast

// kernelOf is what a namespace's settings decide for the port model.
func kernelOf(n *snapshot.Namespace) forecast.Kernel {
	k := forecast.Kernel{PortLow: n.Limits.PortLow, PortHigh: n.Limits.PortHigh, MaxTWBuckets: n.Limits.MaxTWBuckets,
		BoundPorts: n.BoundPorts, ReuseDelay: forecast.DefaultReuseDelay}
	if v, err := strconv.Atoi(n.Sysctls["tcp_tw_reuse"]); err == nil {
		k.TWReuse = v
	}
	k.Timestamps = strings.TrimSpace(n.Sysctls["tcp_timestamps"]) != "0"
	if ms, err := strconv.Atoi(n.Sysctls["tcp_tw_reuse_delay"]); err == nil { // 6.13+, milliseconds
		k.ReuseDelay = time.Duration(ms) * time.Millisecond
	}
	return k
}
