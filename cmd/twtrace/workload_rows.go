package main

import (
	"cmp"
	"time"

	"slices"

	"github.com/twtrace/twtrace/internal/forecast"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
)

// workloadRow is what the window traced of one workload's sockets in one namespace. A workload
// is what internal/workload names a cgroup: the cgroups of one container (or unit) add up.
type workloadRow struct {
	W     workload.Workload // zero when unknown: cgroup 0, or one no longer found
	Known bool
	NetNS uint32
	// TimeWaitNow counts its timewait sockets alive now, of those born while tracing.
	TimeWaitNow                                uint64
	Created, Overflows, ResetsSent, ResetsRecv uint64
	Rate                                       float64 // timewait sockets created per second
	// ConnectFails counts the connect()s its tasks called that failed, by errno name (nil: none).
	ConnectFails map[string]uint64
	// Forecast is the namespace's timewait table (tcp_max_tw_buckets) under this workload's
	// creation rate alone: whether it would fill it, and when. ForecastKnown is false when
	// the table could not be read (offline, or the namespace is gone).
	Forecast      forecast.TableForecast
	ForecastKnown bool
}

// Name is the row's workload name, "unknown" when it is not known.
func (r *workloadRow) Name() string {
	if !r.Known || r.W.Name() == "" {
		return "unknown"
	}
	return r.W.Name()
}

func (r *workloadRow) connectFailures() uint64 {
	var n uint64
	for _, v := range r.ConnectFails {
		n += v
	}
	return n
}

// workloadRows names the window's cgroups (names may be nil: every one unknown), adds up those
// of one workload in one namespace, and joins each with its namespace's timewait table (snaps:
// nil entries, or none, offline), busiest first.
func workloadRows(a *window.Aggregate, names namer, snaps map[uint32]*snapshot.Namespace, now time.Time) []workloadRow {
	type rowKey struct {
		name  string
		netns uint32
	}
	rows := map[rowKey]*workloadRow{}
	row := func(k window.CgroupKey) *workloadRow {
		var w workload.Workload
		known := false
		if names != nil && k.Cgroup != 0 {
			w, known = names.cgroup(k.Cgroup)
		}
		rk := rowKey{netns: k.NetNS}
		if known {
			rk.name = w.Name()
		}
		r := rows[rk]
		if r == nil {
			r = &workloadRow{W: w, Known: known && rk.name != "", NetNS: k.NetNS}
			rows[rk] = r
		}
		return r
	}
	for k, c := range a.ByCgroup {
		r := row(k)
		r.Created += c.Created()
		r.Overflows += c.Overflows
		r.ResetsSent += c.ResetsSent()
		r.ResetsRecv += c.ResetsRecv()
		for errno, n := range c.ConnectFails {
			if r.ConnectFails == nil {
				r.ConnectFails = map[string]uint64{}
			}
			r.ConnectFails[errno] += n
		}
	}
	for k, n := range a.TimeWaitNow {
		row(k).TimeWaitNow += n
	}
	elapsed := now.Sub(a.Since).Seconds()
	lifetime := a.ForecastLifetime()
	out := make([]workloadRow, 0, len(rows))
	for _, r := range rows {
		if elapsed > 0 {
			r.Rate = float64(r.Created) / elapsed
		}
		if n := snaps[r.NetNS]; n != nil && n.Limits.MaxTWBuckets > 0 {
			r.Forecast = forecast.Table(int64(n.TimeWaitTable), r.Rate, lifetime, n.Limits.MaxTWBuckets)
			r.ForecastKnown = true
		}
		out = append(out, *r)
	}
	slices.SortFunc(out, func(x, y workloadRow) int {
		return cmp.Or(cmp.Compare(y.TimeWaitNow, x.TimeWaitNow), cmp.Compare(y.Created, x.Created),
			cmp.Compare(y.Overflows, x.Overflows), cmp.Compare(y.ResetsSent+y.ResetsRecv, x.ResetsSent+x.ResetsRecv),
			cmp.Compare(y.connectFailures(), x.connectFailures()),
			cmp.Compare(x.Name(), y.Name()), cmp.Compare(x.NetNS, y.NetNS))
	})
	return out
}

// namespaceWorkloads names the pod (or container) that holds each namespace of its own.
func namespaceWorkloads(names namer, inodes []uint32) map[uint32]workload.Workload {
	out := map[uint32]workload.Workload{}
	if names == nil {
		return out
	}
	for _, inode := range inodes {
		if w, ok := names.netns(inode); ok {
			out[inode] = w
		}
	}
	return out
}
