// Package forecast models what the kernel does with one destination's ephemeral ports, to
// say whether connect() to it will fail for want of one, and when.
//
// What the model follows, from the kernel's sources:
//   - connect() (__inet_hash_connect) scans the ports of ip_local_port_range of one parity,
//     then the other (since 4.6; bind(0), inet_csk_find_open_port, starts with the other
//     parity): every port is open to connect(), but an odd-sized range is rounded down to an
//     even count, and a port someone bound with bind() (a listener) is never taken;
//   - a port is free for a new connection to a destination unless a socket to that same
//     destination holds it: established, or in TIME_WAIT;
//   - a TIME_WAIT socket exists only while the namespace's table has room (tcp_max_tw_buckets);
//     beyond it the closing socket overflows, gets none, and frees its port at once;
//   - with tcp_tw_reuse (1, or 2 for loopback), connect() takes over a TIME_WAIT socket to
//     the same destination once its last timestamp is older than tcp_tw_reuse_delay (6.13+;
//     about a second before), if timestamps were on: it then blocks its port that long only.
package forecast

import (
	"math"
	"time"
)

// Kernel is what the namespace's settings decide for every destination.
type Kernel struct {
	PortLow, PortHigh uint16 // ip_local_port_range
	// MaxTWBuckets is tcp_max_tw_buckets; negative when unknown (no cap assumed).
	MaxTWBuckets int64
	// TWReuse is tcp_tw_reuse: 0 never, 1 always, 2 loopback only.
	TWReuse int
	// Timestamps is tcp_timestamps != 0: reuse needs the timewait socket's last timestamp.
	Timestamps bool
	// ReuseDelay is tcp_tw_reuse_delay, or DefaultReuseDelay where the kernel has no such sysctl.
	ReuseDelay time.Duration
	// BoundPorts counts the range's ports held by bind() (listeners): connect() skips them.
	BoundPorts int
}

// DefaultReuseDelay is how old a timewait socket's last timestamp must be before connect()
// reuses it on kernels without tcp_tw_reuse_delay: the next second (up to one).
const DefaultReuseDelay = time.Second

// Traffic is what was measured for one destination (one local address to one remote
// address and port) and its namespace.
type Traffic struct {
	Rate          float64       // new timewait sockets per second to the destination
	NamespaceRate float64       // new timewait sockets per second in the namespace (shared cap)
	Lifetime      time.Duration // how long a timewait socket lives here
	Live          int           // timewait sockets to the destination now
	Established   int           // other sockets to it now, each holding a port
	Loopback      bool          // a loopback address on either end (tcp_tw_reuse=2)
}

// Forecast is the model's answer for one destination.
type Forecast struct {
	// SteadyState is how many timewait sockets to the destination there will be once births
	// and deaths balance: rate x lifetime, within its share of the namespace's table and
	// within the ports connect() may use.
	SteadyState float64
	// Reuse says connect() takes over this destination's timewait sockets after ReuseDelay.
	Reuse bool
	// Blocking is how many of the destination's ports connect() cannot take, in steady state
	// (all of them when AtRisk).
	Blocking float64
	// Usable is how many ports of the range connect() may use at all.
	Usable int
	// AtRisk says connect() to the destination will fail with EADDRNOTAVAIL.
	AtRisk bool
	// Exhaustion is when, from now, when AtRisk (0: already).
	Exhaustion time.Duration
}

// Ports applies the model.
func Ports(k Kernel, t Traffic) Forecast {
	var f Forecast
	if k.PortHigh >= k.PortLow && k.PortHigh != 0 {
		size := int(k.PortHigh) - int(k.PortLow) + 1
		if size > 1 {
			size &^= 1
		}
		f.Usable = max(size-k.BoundPorts, 0)
	}
	lifetime := t.Lifetime.Seconds()
	// the share of births that get a timewait socket once the table is full
	kept := 1.0
	if nsRate := max(t.NamespaceRate, t.Rate); k.MaxTWBuckets >= 0 && nsRate*lifetime > float64(k.MaxTWBuckets) {
		kept = float64(k.MaxTWBuckets) / (nsRate * lifetime)
	}
	f.SteadyState = t.Rate * kept * lifetime
	f.Reuse = k.Timestamps && (k.TWReuse == 1 || k.TWReuse == 2 && t.Loopback)
	hold := lifetime
	if f.Reuse {
		hold = min(hold, k.ReuseDelay.Seconds())
	}
	f.Blocking = t.Rate * kept * hold
	if f.Usable > 0 {
		// each timewait socket to the destination holds a port of its own: when they would
		// outnumber the ports, connect() fails first and they stop being born
		f.SteadyState = min(f.SteadyState, float64(f.Usable))
	}
	if f.Usable == 0 || f.Blocking+float64(t.Established) < float64(f.Usable) {
		return f
	}
	f.Blocking = float64(f.Usable)
	f.AtRisk = true
	blockingNow := float64(t.Live)
	if f.Reuse {
		blockingNow = min(blockingNow, f.Blocking)
	}
	if free := float64(f.Usable) - blockingNow - float64(t.Established); free > 0 && t.Rate > 0 {
		f.Exhaustion = time.Duration(math.Round(free/(t.Rate*kept)*1000)) * time.Millisecond
	}
	return f
}

// TableForecast is the model's answer for a namespace's timewait table under a creation rate.
type TableForecast struct {
	// SteadyState is how many timewait sockets the rate keeps alive: rate x lifetime, and
	// never more than the table holds (tcp_max_tw_buckets).
	SteadyState float64
	// Full says the rate alone would fill the table: closes beyond it overflow (no TIME_WAIT).
	Full bool
	// FullIn is when, from now, when Full (0: already).
	FullIn time.Duration
}

// Table applies the table's cap to a rate of new timewait sockets each living lifetime, with
// live in the table now; maxTW negative is no cap.
func Table(live int64, rate float64, lifetime time.Duration, maxTW int64) TableForecast {
	f := TableForecast{SteadyState: rate * lifetime.Seconds()}
	if maxTW < 0 || f.SteadyState < float64(maxTW) {
		return f
	}
	f.SteadyState, f.Full = float64(maxTW), true
	if free := maxTW - live; free > 0 && rate > 0 {
		f.FullIn = time.Duration(math.Round(float64(free)/rate*1000)) * time.Millisecond
	}
	return f
}
