package forecast

import (
	"testing"
	"time"
)

// The issue's setup: 5,000 ports, 3,000 buckets, tcp_tw_reuse=2 on loopback, about 350
// new timewait sockets a second to the backend, all of the namespace's.
var issue = Kernel{PortLow: 40000, PortHigh: 44999, MaxTWBuckets: 3000, TWReuse: 2, Timestamps: true, ReuseDelay: time.Second}

func TestPorts(t *testing.T) {
	for _, c := range []struct {
		name   string
		k      Kernel
		t      Traffic
		steady float64
		block  float64
		usable int
		risk   bool
		exh    time.Duration
	}{
		{"the table caps the occupancy, reuse frees the ports after a second", issue,
			Traffic{Rate: 350, NamespaceRate: 350, Lifetime: time.Minute, Live: 3000, Loopback: true},
			3000, 50, 5000, false, 0},
		{"without reuse the capped occupancy still fits the range", func() Kernel { k := issue; k.TWReuse = 0; return k }(),
			Traffic{Rate: 350, NamespaceRate: 350, Lifetime: time.Minute, Live: 3000, Loopback: true},
			3000, 3000, 5000, false, 0},
		{"reuse 2 does not apply away from loopback", func() Kernel { k := issue; k.MaxTWBuckets = 262144; return k }(),
			Traffic{Rate: 350, NamespaceRate: 350, Lifetime: time.Minute, Live: 1500},
			5000, 5000, 5000, true, 10 * time.Second},
		{"reuse needs timestamps", Kernel{PortLow: 50000, PortHigh: 50009, MaxTWBuckets: -1, TWReuse: 1, ReuseDelay: time.Second},
			Traffic{Rate: 5, NamespaceRate: 5, Lifetime: time.Minute, Live: 2},
			10, 10, 10, true, 1600 * time.Millisecond},
		{"reuse at 5 a second keeps 5 of 10 ports", Kernel{PortLow: 50000, PortHigh: 50009, MaxTWBuckets: -1, TWReuse: 1, Timestamps: true, ReuseDelay: time.Second},
			Traffic{Rate: 5, NamespaceRate: 5, Lifetime: time.Minute, Live: 10},
			10, 5, 10, false, 0},
		{"an odd range loses a port, listeners theirs", Kernel{PortLow: 50000, PortHigh: 50010, MaxTWBuckets: -1, BoundPorts: 2},
			Traffic{Rate: 1, NamespaceRate: 1, Lifetime: time.Second, Established: 7},
			1, 8, 8, true, time.Second},
		{"other destinations fill the table too", func() Kernel { k := issue; k.TWReuse = 0; return k }(),
			Traffic{Rate: 100, NamespaceRate: 400, Lifetime: time.Minute},
			750, 750, 5000, false, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := Ports(c.k, c.t)
			if f.SteadyState != c.steady || f.Blocking != c.block || f.Usable != c.usable || f.AtRisk != c.risk || f.Exhaustion != c.exh {
				t.Errorf("got steady %v blocking %v usable %d at risk %v in %v, want %v %v %d %v %v",
					f.SteadyState, f.Blocking, f.Usable, f.AtRisk, f.Exhaustion, c.steady, c.block, c.usable, c.risk, c.exh)
			}
		})
	}
}

// A namespace's timewait table under one rate: it never holds more than tcp_max_tw_buckets.
func TestTable(t *testing.T) {
	for _, c := range []struct {
		name   string
		live   int64
		rate   float64
		maxTW  int64
		steady float64
		full   bool
		fullIn time.Duration
	}{
		{"below the cap", 10, 1, 100, 60, false, 0},
		{"the issue's rate settles at the cap", 1000, 350, 3000, 3000, true, 5714 * time.Millisecond},
		{"full now", 3000, 350, 3000, 3000, true, 0},
		{"no cap known", 0, 350, -1, 21000, false, 0},
	} {
		f := Table(c.live, c.rate, time.Minute, c.maxTW)
		if f.SteadyState != c.steady || f.Full != c.full || f.FullIn != c.fullIn {
			t.Errorf("%s: %+v, want steady %.0f, full %v in %s", c.name, f, c.steady, c.full, c.fullIn)
		}
	}
}
