package main

import (
	"encoding/json"
	"io"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// writeViewJSON writes one object per print; the keys are part of the product (README).
func writeViewJSON(w io.Writer, v view) error {
	type bucket struct {
		LoMs  uint64 `json:"lo_ms"`
		HiMs  uint64 `json:"hi_ms"`
		Count uint64 `json:"count"`
	}
	type lifetime struct {
		Substate string   `json:"substate"`
		Cause    string   `json:"cause"`
		Detail   *string  `json:"detail"`
		Count    uint64   `json:"count"`
		MinMs    float64  `json:"min_ms"`
		P50Ms    float64  `json:"p50_ms"`
		P99Ms    float64  `json:"p99_ms"`
		MaxMs    float64  `json:"max_ms"`
		Exact    bool     `json:"exact"`
		Buckets  []bucket `json:"buckets"`
	}
	type netns struct {
		NetNS        uint32  `json:"netns"`
		Live         *int64  `json:"live"`
		MaxTWBuckets *int64  `json:"max_tw_buckets"`
		Created      *uint64 `json:"created"`
		Overflows    *uint64 `json:"overflows"`
		CounterDelta *int64  `json:"overflow_counter_delta"`
		// reconciliation: overflows + unattributed_overflows is what the kernel counted
		UnattributedOverflows uint64 `json:"unattributed_overflows"`
		UnattributedBirths    uint64 `json:"unattributed_births"`
		UnseenDeaths          uint64 `json:"unseen_deaths"`
		// the pod (or container) holding the namespace; null when none does
		Workload *workloadNames `json:"workload"`
	}
	type dest struct {
		NetNS       uint32   `json:"netns"`
		SAddr       string   `json:"saddr"`
		DAddr       string   `json:"daddr"`
		DPort       uint16   `json:"dport"`
		Live        int      `json:"live"`
		Share       float64  `json:"port_range_share"`
		Rate        *float64 `json:"created_per_s"`
		AtRisk      *bool    `json:"at_risk"`
		Steady      *float64 `json:"steady_state"`
		ExhaustionS *float64 `json:"exhaustion_s"`
		// the port model's inputs and middle terms (README, "The forecast")
		Reuse    *bool    `json:"tw_reuse"`
		Usable   *int     `json:"usable_ports"`
		Blocking *float64 `json:"blocking_ports"`
		// connect() towards it in the window: null when the family counting it is not traced
		ConnectFailures map[string]uint64 `json:"connect_failures"`
		Reused          *uint64           `json:"reused"`
		Count           uint64            `json:"count,omitempty"`
		Workload        *workloadNames    `json:"workload"` // the namespace's
	}
	type reset struct {
		Direction string  `json:"direction"`
		Reason    *string `json:"reason"`
		Count     uint64  `json:"count"`
	}
	type process struct {
		PID   uint32 `json:"pid"`
		Comm  string `json:"comm"`
		Count uint64 `json:"count"`
	}
	out := struct {
		TS         string            `json:"ts"`
		Since      string            `json:"since"`
		Seconds    float64           `json:"seconds"`
		Complete   bool              `json:"complete"`
		Lost       uint64            `json:"lost"`
		Missed     uint64            `json:"missed"`
		Offline    bool              `json:"offline"`
		Input      *string           `json:"input"`
		Unreadable uint64            `json:"unreadable_lines"`
		Families   []string          `json:"families"`
		NotTraced  map[string]string `json:"not_traced"`
		Lifetimes  []lifetime        `json:"lifetimes"`
		Namespaces []netns           `json:"namespaces"`
		Dests      []dest            `json:"destinations"`
		Overflows  []dest            `json:"overflows"`
		Resets     []reset           `json:"resets"`
		ByProcess  []process         `json:"resets_by_process"`
		Workloads  []workloadJSON    `json:"workloads"`
		More       int               `json:"more_workloads"`
	}{
		TS: time.Now().UTC().Format(time.RFC3339Nano), Since: v.Since.UTC().Format(time.RFC3339Nano),
		Seconds: v.Elapsed.Seconds(), Complete: v.complete(), Lost: v.Lost, Missed: v.Missed,
		Offline: v.Offline, Unreadable: v.Unreadable,
		Families: []string{}, NotTraced: map[string]string{},
		Namespaces: []netns{}, Dests: []dest{}, Workloads: []workloadJSON{}, More: v.MoreWorkloads,
	}
	if v.Offline {
		out.Input = &v.Input
		out.Dests = nil // the kernel's sockets now: not in a recording
	}
	for _, f := range families {
		if v.has(f) {
			out.Families = append(out.Families, f.String())
		} else {
			out.NotTraced[f.String()] = v.NotTraced[f]
		}
	}
	// a family not traced is null, never an empty list or a 0 that would look measured
	if v.has(tracer.FamilyTW) {
		out.Lifetimes = []lifetime{}
	}
	if v.has(tracer.FamilyOverflow) {
		out.Overflows = []dest{}
	}
	if v.has(tracer.FamilyReset) {
		out.Resets, out.ByProcess = []reset{}, []process{}
	}
	counted := func(f tracer.Families, n uint64) *uint64 {
		if !v.has(f) {
			return nil
		}
		return &n
	}
	msf := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
	known := func(n int64) *int64 {
		if n < 0 {
			return nil
		}
		return &n
	}
	for _, l := range v.Lifetimes {
		lt := lifetime{Substate: l.Key.Substate.String(), Cause: l.Key.Cause.String(), Count: l.H.Count,
			MinMs: msf(l.H.Min), P50Ms: msf(l.H.Percentile(0.5)), P99Ms: msf(l.H.Percentile(0.99)), MaxMs: msf(l.H.Max),
			Exact: l.H.Exact(), Buckets: []bucket{}}
		if d := l.Key.Detail.String(); d != "" {
			lt.Detail = &d
		}
		for i, n := range l.H.Buckets {
			if n > 0 {
				lo, hi := uint64(0), uint64(1)
				if i > 0 {
					lo, hi = 1<<(i-1), 1<<i
				}
				lt.Buckets = append(lt.Buckets, bucket{lo, hi, n})
			}
		}
		out.Lifetimes = append(out.Lifetimes, lt)
	}
	for _, n := range v.Namespaces {
		out.Namespaces = append(out.Namespaces, netns{n.NetNS, known(n.Live), known(n.MaxTWBuckets),
			counted(tracer.FamilyTW, n.Created), counted(tracer.FamilyOverflow, n.Overflows), known(n.CounterDelta),
			n.UnattributedOverflows, n.UnattributedBirths, n.Unseen,
			namespaceNames(v.NamespaceWorkloads, n.NetNS)})
	}
	for _, d := range v.Dests {
		row := dest{NetNS: d.NetNS, SAddr: d.SAddr.String(), DAddr: d.DAddr.String(), DPort: d.DPort,
			Live: d.Live, Share: d.Share, Workload: namespaceNames(v.NamespaceWorkloads, d.NetNS)}
		if v.has(tracer.FamilyConnect) {
			row.ConnectFailures = d.Failures
		}
		row.Reused = counted(tracer.FamilyTW, d.Reused)
		if v.has(tracer.FamilyTW) { // the forecast needs the creation rate
			f := d.Forecast
			row.Rate, row.AtRisk, row.Steady = &d.Rate, &f.AtRisk, &f.SteadyState
			row.Reuse, row.Blocking = &f.Reuse, &f.Blocking
			if f.Usable > 0 {
				row.Usable = &f.Usable
			}
			if f.AtRisk {
				s := f.Exhaustion.Seconds()
				row.ExhaustionS = &s
			}
		}
		out.Dests = append(out.Dests, row)
	}
	for _, o := range v.Overflows {
		out.Overflows = append(out.Overflows, dest{NetNS: o.Dest.NetNS, SAddr: o.Dest.SAddr.String(), DAddr: o.Dest.DAddr.String(), DPort: o.Dest.DPort, Count: o.Count,
			Workload: namespaceNames(v.NamespaceWorkloads, o.Dest.NetNS)})
	}
	for _, r := range v.Resets {
		row := reset{Direction: "sent", Count: r.Count}
		if r.Key.Recv {
			row.Direction = "recv"
		} else {
			reason := r.Key.Reason
			row.Reason = &reason
		}
		out.Resets = append(out.Resets, row)
	}
	for _, p := range v.ByProcess {
		out.ByProcess = append(out.ByProcess, process{p.Key.PID, commString(p.Key.Comm), p.Count})
	}
	for _, r := range v.Workloads {
		out.Workloads = append(out.Workloads, workloadRowJSON(r, v.Traced))
	}
	b, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(append(b, '\n'))
	return err
}
