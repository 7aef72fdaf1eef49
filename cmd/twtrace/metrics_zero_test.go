package main

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/tracer"
)

// gathered returns every sample of the event metrics as "name{label="value",...}" (labels
// sorted by name) → value; a histogram as its _count.
func gathered(t *testing.T, m *eventMetrics) map[string]float64 {
	t.Helper()
	reg := prometheus.NewRegistry()
	m.register(reg)
	families, err := reg.Gather()
	must(t, err)
	out := map[string]float64{}
	for _, f := range families {
		for _, s := range f.GetMetric() {
			var labels []string
			for _, l := range s.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", l.GetName(), l.GetValue()))
			}
			name := f.GetName()
			v := s.GetCounter().GetValue()
			if h := s.GetHistogram(); h != nil {
				name, v = name+"_count", float64(h.GetSampleCount())
			}
			out[name+"{"+strings.Join(labels, ",")+"}"] = v
		}
	}
	return out
}

func seriesOf(m map[string]float64, name string) []string {
	var out []string
	for k := range m {
		if strings.HasPrefix(k, name+"{") {
			out = append(out, k)
		}
	}
	slices.Sort(out)
	return out
}

// The series whose labels are known in advance exist at 0 before any event, for the
// families traced only; a namespace's appear with its first event.
func TestMetricsKnownSeriesStartAtZero(t *testing.T) {
	tests := []struct {
		name     string
		families tracer.Families
		want     map[string][]string // metric → its series, sorted
	}{
		{"all families", tracer.AllFamilies, map[string][]string{
			"twtrace_tcp_resets_total":                resetSeries(),
			"twtrace_timewait_lifetime_seconds_count": lifetimeSeries(),
			"twtrace_timewait_created_total": {
				`twtrace_timewait_created_total{namespace="",netns="7",pod="",substate="FIN_WAIT2",unit="other"}`,
				`twtrace_timewait_created_total{namespace="",netns="7",pod="",substate="FIN_WAIT2",unit="unknown"}`,
				`twtrace_timewait_created_total{namespace="",netns="7",pod="",substate="TIME_WAIT",unit="other"}`,
				`twtrace_timewait_created_total{namespace="",netns="7",pod="",substate="TIME_WAIT",unit="unknown"}`,
			},
			"twtrace_timewait_overflow_total": overflowSeries("7"),
		}},
		{"resets only", tracer.FamilyReset, map[string][]string{
			"twtrace_tcp_resets_total": resetSeries(),
		}},
		{"overflow only", tracer.FamilyOverflow, map[string][]string{
			"twtrace_timewait_overflow_total": overflowSeries("7"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := newEventMetrics(defaultTopWorkloads, 20)
			m.startAtZero(tt.families, []string{"no_socket", "tcp_state"}, []uint32{7})
			got := gathered(t, m)
			for _, name := range []string{"twtrace_tcp_resets_total", "twtrace_timewait_lifetime_seconds_count",
				"twtrace_timewait_created_total", "twtrace_timewait_overflow_total"} {
				if series := seriesOf(got, name); !slices.Equal(series, tt.want[name]) {
					t.Errorf("%s: series %q, want %q", name, series, tt.want[name])
				}
			}
			for k, v := range got {
				if v != 0 {
					t.Errorf("%s = %v before any event, want 0", k, v)
				}
			}
		})
	}
}

// resetSeries are the reset series of the other and unknown workloads, for the reasons
// no_socket and tcp_state.
func resetSeries() []string {
	var out []string
	for _, unit := range []string{"other", "unknown"} {
		for _, dr := range [][2]string{{"recv", "none"}, {"sent", "no_socket"}, {"sent", "tcp_state"}} {
			out = append(out, fmt.Sprintf(`twtrace_tcp_resets_total{direction=%q,namespace="",pod="",reason=%q,unit=%q}`, dr[0], dr[1], unit))
		}
	}
	slices.Sort(out)
	return out
}

func overflowSeries(netns string) []string {
	return []string{
		fmt.Sprintf(`twtrace_timewait_overflow_total{namespace="",netns=%q,pod="",unit="other"}`, netns),
		fmt.Sprintf(`twtrace_timewait_overflow_total{namespace="",netns=%q,pod="",unit="unknown"}`, netns),
	}
}

func lifetimeSeries() []string {
	var out []string
	for _, s := range []string{"FIN_WAIT2", "TIME_WAIT"} {
		for _, c := range []string{"expired", "killed", "killed_netns_exit", "killed_reuse", "killed_rst", "killed_syn"} {
			out = append(out, fmt.Sprintf(`twtrace_timewait_lifetime_seconds_count{cause=%q,substate=%q}`, c, s))
		}
	}
	slices.Sort(out)
	return out
}

// The first event from a namespace brings all of its series: a later overflow there is
// an increase from 0. The counts come with the window's fold.
func TestMetricsNamespaceSeriesStartWithItsFirstEvent(t *testing.T) {
	m := newEventMetrics(defaultTopWorkloads, 20)
	m.startAtZero(tracer.AllFamilies, nil, []uint32{7})
	win := window.New(time.Now(), nil)
	a := netip.MustParseAddr("10.0.0.1")
	e := tracer.Event{Time: time.Now(), Kind: tracer.KindTWEnter, Family: 4, SAddr: a, DAddr: a, NetNS: 9, Substate: tracer.StateTimeWait}
	exporterSink(m, win)(&e)
	got := gathered(t, m)
	if v := got[`twtrace_timewait_created_total{namespace="",netns="9",pod="",substate="TIME_WAIT",unit="unknown"}`]; v != 0 {
		t.Errorf("counted before the window folded: %v", v)
	}
	m.fold(win.Restart(time.Now(), nil), nil, time.Now())
	got = gathered(t, m)
	for k, want := range map[string]float64{
		`twtrace_timewait_created_total{namespace="",netns="9",pod="",substate="TIME_WAIT",unit="unknown"}`: 1,
		`twtrace_timewait_created_total{namespace="",netns="9",pod="",substate="FIN_WAIT2",unit="unknown"}`: 0,
		`twtrace_timewait_created_total{namespace="",netns="9",pod="",substate="TIME_WAIT",unit="other"}`:   0,
		`twtrace_timewait_overflow_total{namespace="",netns="9",pod="",unit="other"}`:                       0,
		`twtrace_timewait_overflow_total{namespace="",netns="7",pod="",unit="unknown"}`:                     0,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
}

// Every lifetime an event can report is one of the series created in advance.
func TestMetricsLifetimeCausesComplete(t *testing.T) {
	for _, c := range []tracer.Cause{tracer.CauseExpired, tracer.CauseKilled} {
		for d := tracer.Detail(0); d < 255; d++ {
			if d.String() == "" && d != tracer.DetailNone {
				continue
			}
			if c == tracer.CauseExpired && d != tracer.DetailNone {
				continue // a timer that fired has no killer
			}
			if cause := lifetimeCause(c, d); !slices.Contains(lifetimeCauses, cause) {
				t.Errorf("cause %s, detail %d: label %q is not created in advance", c, d, cause)
			}
		}
	}
}

// A namespace's connect failures start at 0 for the usual errnos (for the other and unknown
// workloads) when the family is traced, never when it is not; they count by the workload that
// called connect() at each fold; destinations past --top share daddr="other".
func TestMetricsConnectFailures(t *testing.T) {
	m := newEventMetrics(defaultTopWorkloads, 2)
	m.startAtZero(tracer.FamilyConnect, nil, []uint32{7})
	got := gathered(t, m)
	if series := seriesOf(got, "twtrace_connect_failures_total"); len(series) != 2*len(connectErrnos) {
		t.Errorf("series at 0: %q, want one per errno of %v for other and unknown", series, connectErrnos)
	}
	none := newEventMetrics(defaultTopWorkloads, 2)
	none.startAtZero(tracer.FamilyTW, nil, []uint32{7})
	if series := seriesOf(gathered(t, none), "twtrace_connect_failures_total"); len(series) != 0 {
		t.Errorf("connect family not traced, yet series %q exist", series)
	}
	win := window.New(time.Now(), nil)
	sink := exporterSink(m, win)
	a := netip.MustParseAddr("10.0.0.1")
	for port := uint16(1); port <= 3; port++ {
		sink(&tracer.Event{Time: time.Now(), Kind: tracer.KindConnectFail, Family: 4, SAddr: a, DAddr: a, DPort: port, NetNS: 7, Cgroup: 4,
			Errno: syscall.EADDRNOTAVAIL, ErrnoOK: true})
	}
	sink(&tracer.Event{Time: time.Now(), Kind: tracer.KindConnectFail, Family: 4, SAddr: a, DAddr: a, DPort: 1, NetNS: 7})
	if v := gathered(t, m)[`twtrace_connect_failures_total{errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",unit="unknown"}`]; v != 0 {
		t.Errorf("counted before the window folded: %v", v)
	}
	m.fold(win.Restart(time.Now(), nil), fakeNames{4: {Cgroup: "/system.slice/demo.service", Unit: "demo.service"}}, time.Now())
	got = gathered(t, m)
	for k, want := range map[string]float64{
		`twtrace_connect_failures_total{errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",unit="demo.service"}`:                                                0, // joined the top K now: its own series count from the next fold
		`twtrace_connect_failures_total{errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",unit="other"}`:                                                       3,
		`twtrace_connect_failures_total{errno="unknown",namespace="",netns="7",pod="",unit="unknown"}`:                                                           1,
		`twtrace_connect_failures_total{errno="ETIMEDOUT",namespace="",netns="7",pod="",unit="unknown"}`:                                                         0,
		`twtrace_connect_failures_by_destination_total{daddr="10.0.0.1",dport="1",errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",saddr="10.0.0.1",unit=""}`: 1,
		`twtrace_connect_failures_by_destination_total{daddr="10.0.0.1",dport="2",errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",saddr="10.0.0.1",unit=""}`: 1,
		`twtrace_connect_failures_by_destination_total{daddr="other",dport="other",errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",saddr="other",unit=""}`:   1,
		`twtrace_connect_failures_by_destination_total{daddr="10.0.0.1",dport="1",errno="unknown",namespace="",netns="7",pod="",saddr="10.0.0.1",unit=""}`:       1,
	} {
		if v, ok := got[k]; !ok || v != want {
			t.Errorf("%s = %v (present %v), want %v", k, v, ok, want)
		}
	}
	if n := len(seriesOf(got, "twtrace_connect_failures_by_destination_total")); n != 4 {
		t.Errorf("%d destination series, want 4 (2 destinations, other, and a second errno)", n)
	}
	sink(&tracer.Event{Time: time.Now(), Kind: tracer.KindConnectFail, Family: 4, SAddr: a, DAddr: a, DPort: 1, NetNS: 7, Cgroup: 4,
		Errno: syscall.EADDRNOTAVAIL, ErrnoOK: true})
	m.fold(win.Restart(time.Now(), nil), fakeNames{4: {Cgroup: "/system.slice/demo.service", Unit: "demo.service"}}, time.Now())
	if v := gathered(t, m)[`twtrace_connect_failures_total{errno="EADDRNOTAVAIL",namespace="",netns="7",pod="",unit="demo.service"}`]; v != 1 {
		t.Errorf("demo.service's own series = %v after its next failure, want 1", v)
	}
}
