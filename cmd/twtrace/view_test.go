package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/forecast"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/window"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

const unitReason = "no backend can serve hook reset here: tracepoint: raw_tp twtrace_test_hidden_tcp_send_reset not supported"

// unitView is a view with a namespace, a destination, an overflow and a reset, as
// buildView makes it for a tracer delivering traced and missing the rest.
func unitView(traced tracer.Families, missing []tracer.MissingFamily, lost uint64) view {
	d := snapshot.Destination{NetNS: 7, SAddr: netip.MustParseAddr("127.0.0.1"), DAddr: netip.MustParseAddr("127.0.0.1"), DPort: 80}
	v := view{traceStatus: traceStatus{Lost: lost}, Since: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC), Elapsed: 10 * time.Second,
		Namespaces: []window.Occupancy{{NetNS: 7, Live: 3, MaxTWBuckets: 4, Created: 3, Overflows: 2, CounterDelta: 2, PortRangeSize: 10}},
		Dests: []window.Destination{{Destination: d, Live: 3, Share: 0.3, Rate: 0.3, Forecast: forecast.Ports(forecast.Kernel{PortLow: 1, PortHigh: 10, MaxTWBuckets: 4},
			forecast.Traffic{Rate: 0.3, NamespaceRate: 0.3, Lifetime: time.Minute, Live: 3}),
			Failures: map[string]uint64{"EADDRNOTAVAIL": 4, "ECONNREFUSED": 1}, Reused: 2}},
	}
	v.Traced, v.NotTraced = notTraced(traced, missing)
	v.NamespaceWorkloads = map[uint32]workload.Workload{7: {PodUID: "0f6ad3b4-1c3e-4b8f-9a1d-7e2c5b8a9d10", PodNamespace: "shop", Pod: "cart"}}
	v.Workloads = []workloadRow{{W: workload.Workload{Cgroup: "/system.slice/demo.service", Unit: "demo.service"}, Known: true, NetNS: 7,
		TimeWaitNow: 3, Created: 3, Overflows: 2, ResetsSent: 1, ConnectFails: map[string]uint64{"EADDRNOTAVAIL": 4, "ECONNREFUSED": 1}, Rate: 0.3, Forecast: forecast.Table(3, 0.3, time.Minute, 4), ForecastKnown: true}}
	if v.has(tracer.FamilyOverflow) {
		v.Overflows = []countRow{{d, 2}}
	}
	if v.has(tracer.FamilyReset) {
		v.Resets = []resetRow{{window.ResetKey{Reason: "tcp_abort_on_close"}, 1}}
		v.ByProcess = []processRow{{window.ProcessKey{PID: 42}, 1}}
	}
	if v.has(tracer.FamilyTW) {
		h := &window.Histogram{}
		h.Add(60 * time.Second)
		v.Lifetimes = []lifetimeRow{{window.LifetimeKey{Substate: tracer.StateTimeWait, Cause: tracer.CauseExpired}, h}}
	}
	return v
}

func missingFor(hook tracer.Hook, fs ...tracer.Families) []tracer.MissingFamily {
	var out []tracer.MissingFamily
	for _, f := range fs {
		out = append(out, tracer.MissingFamily{Family: f, Hook: hook, Reason: unitReason})
	}
	return out
}

// unitViewJSON is what a consumer of timewait -o json reads; pointers tell null from 0.
type unitViewJSON struct {
	Complete   bool              `json:"complete"`
	Lost       uint64            `json:"lost"`
	Families   []string          `json:"families"`
	NotTraced  map[string]string `json:"not_traced"`
	Lifetimes  *[]any            `json:"lifetimes"`
	Namespaces []struct {
		Created   *uint64 `json:"created"`
		Overflows *uint64 `json:"overflows"`
		Live      *int64  `json:"live"`
	} `json:"namespaces"`
	Dests []struct {
		Live     int                `json:"live"`
		Rate     *float64           `json:"created_per_s"`
		AtRisk   *bool              `json:"at_risk"`
		Steady   *float64           `json:"steady_state"`
		Failures *map[string]uint64 `json:"connect_failures"`
		Reused   *uint64            `json:"reused"`
	} `json:"destinations"`
	Overflows *[]any         `json:"overflows"`
	Resets    *[]any         `json:"resets"`
	ByProcess *[]any         `json:"resets_by_process"`
	Workloads []workloadJSON `json:"workloads"`
}

// A family that is not traced is null in the JSON view and "unknown" in the text one,
// with the reason: never a 0 or an empty list that would read as measured.
func TestViewFamiliesNotTraced(t *testing.T) {
	unavailable := "unavailable on this kernel: " + unitReason
	tests := []struct {
		name      string
		traced    tracer.Families
		missing   []tracer.MissingFamily
		lost      uint64
		notTraced map[string]string
		text      []string // lines (trimmed) the text view must have
		notText   []string // substrings it must not have
	}{
		{name: "everything", traced: tracer.AllFamilies, notTraced: map[string]string{},
			text: []string{"TIME_WAIT since 03:04:05 (10s)", "Resets by reason", "Overflows by destination (closed without TIME_WAIT: tcp_max_tw_buckets reached)",
				"7                  3                4   75.0%        3          2          2  shop/cart",
				"demo.service             7                  3        3      0.3          2         1         0          5  fills the table in ~3s",
				"connect() failures: EADDRNOTAVAIL 4, ECONNREFUSED 1",
				"connect(): reused 2, failed 4 (EADDRNOTAVAIL: no free local port); other failures: ECONNREFUSED 1"},
			notText: []string{"unknown:", "NOT TRACED", "INCOMPLETE"}},
		{name: "reset hook missing, events lost", traced: tracer.FamilyState | tracer.FamilyTW | tracer.FamilyConnect,
			missing: missingFor(tracer.HookReset, tracer.FamilyOverflow, tracer.FamilyReset), lost: 5,
			notTraced: map[string]string{"overflow": unavailable, "reset": unavailable},
			text: []string{"TIME_WAIT since 03:04:05 (10s) -- INCOMPLETE: 5 events lost, 0 missed",
				"NOT TRACED: overflow events, " + unavailable, "NOT TRACED: reset events, " + unavailable,
				"Overflows by destination: unknown: overflow events " + unavailable,
				"Resets: unknown: reset events " + unavailable,
				"7                  3                4   75.0%        3    unknown          2  shop/cart",
				"demo.service             7                  3        3      0.3    unknown   unknown   unknown          5  fills the table in ~3s"},
			notText: []string{"Resets by reason", "tcp_abort_on_close"}},
		{name: "timewait hook missing", traced: tracer.FamilyReset | tracer.FamilyConnect,
			missing:   missingFor(tracer.HookTimewait, tracer.FamilyState, tracer.FamilyTW, tracer.FamilyOverflow),
			notTraced: map[string]string{"state": unavailable, "tw": unavailable, "overflow": unavailable},
			text: []string{"unknown: tw events " + unavailable, "NOT TRACED: tw events, " + unavailable,
				"7                  3                4   75.0%  unknown    unknown          2  shop/cart",
				"7           shop/cart                127.0.0.1                                127.0.0.1:80                                        3   30.0%   unknown  unknown: tw events not traced",
				"demo.service             7            unknown  unknown  unknown    unknown         1         0          5  unknown: tw events not traced",
				"Resets by reason", "connect(): reused unknown, failed 4 (EADDRNOTAVAIL: no free local port); other failures: ECONNREFUSED 1"},
			notText: []string{"none yet", "INCOMPLETE"}},
		{name: "not selected", traced: tracer.FamilyReset,
			notTraced: map[string]string{"state": "not selected (--events)", "tw": "not selected (--events)", "overflow": "not selected (--events)",
				"connect": "not selected (--events)"},
			text: []string{"unknown: tw events not selected (--events)", "Overflows by destination: unknown: overflow events not selected (--events)",
				"connect() failures: unknown: connect events not selected (--events)"},
			notText: []string{"NOT TRACED", "connect(): reused", "connect() failures: EADDRNOTAVAIL"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := unitView(tt.traced, tt.missing, tt.lost)
			var b bytes.Buffer
			if err := writeViewJSON(&b, v); err != nil {
				t.Fatal(err)
			}
			var got unitViewJSON
			if err := json.Unmarshal(b.Bytes(), &got); err != nil {
				t.Fatalf("%v: %s", err, b.String())
			}
			if got.Complete != (tt.lost == 0) || got.Lost != tt.lost {
				t.Errorf("complete %v, lost %d; want complete only without loss (%d lost)", got.Complete, got.Lost, tt.lost)
			}
			if strings.Join(got.Families, ",") != tt.traced.String() {
				t.Errorf("families %v, want %s", got.Families, tt.traced)
			}
			if len(got.NotTraced) != len(tt.notTraced) {
				t.Errorf("not_traced %v, want %v", got.NotTraced, tt.notTraced)
			}
			for f, why := range tt.notTraced {
				if got.NotTraced[f] != why {
					t.Errorf("not_traced[%s] = %q, want %q", f, got.NotTraced[f], why)
				}
			}
			has := func(f tracer.Families) bool { return tt.traced&f != 0 }
			if (got.Lifetimes != nil) != has(tracer.FamilyTW) || (got.Overflows != nil) != has(tracer.FamilyOverflow) ||
				(got.Resets != nil) != has(tracer.FamilyReset) || (got.ByProcess != nil) != has(tracer.FamilyReset) {
				t.Errorf("sections must be null exactly when their family is not traced: %s", b.String())
			}
			n, d := got.Namespaces[0], got.Dests[0]
			if (n.Created != nil) != has(tracer.FamilyTW) || (n.Overflows != nil) != has(tracer.FamilyOverflow) || n.Live == nil || *n.Live != 3 {
				t.Errorf("namespace counts must be null exactly when their family is not traced: %s", b.String())
			}
			if (d.Rate != nil) != has(tracer.FamilyTW) || (d.AtRisk != nil) != has(tracer.FamilyTW) || (d.Steady != nil) != has(tracer.FamilyTW) || d.Live != 3 {
				t.Errorf("the forecast needs tw events: %s", b.String())
			}
			if (d.Failures != nil) != has(tracer.FamilyConnect) || (d.Reused != nil) != has(tracer.FamilyTW) ||
				(d.Failures != nil && (*d.Failures)["EADDRNOTAVAIL"] != 4) || (d.Reused != nil && *d.Reused != 2) {
				t.Errorf("connect failures need connect events, reuses tw events: %s", b.String())
			}
			w := got.Workloads[0]
			if (w.TimeWaitNow != nil) != has(tracer.FamilyTW) || (w.Created != nil) != has(tracer.FamilyTW) || (w.Rate != nil) != has(tracer.FamilyTW) ||
				(w.Forecast != nil) != has(tracer.FamilyTW) || (w.Overflows != nil) != has(tracer.FamilyOverflow) ||
				(w.ResetsSent != nil) != has(tracer.FamilyReset) || (w.ResetsRecv != nil) != has(tracer.FamilyReset) ||
				(w.ConnectFailures != nil) != has(tracer.FamilyConnect) || (w.ConnectFailures != nil && w.ConnectFailures["EADDRNOTAVAIL"] != 4) ||
				w.Workload == nil || w.Workload.Unit != "demo.service" || w.NetNS != 7 {
				t.Errorf("workload counts must be null exactly when their family is not traced: %s", b.String())
			}

			b.Reset()
			writeViewText(&b, v)
			lines := map[string]bool{}
			for _, l := range strings.Split(b.String(), "\n") {
				lines[strings.TrimSpace(l)] = true
			}
			for _, want := range tt.text {
				if !lines[want] {
					t.Errorf("text view has no line %q:\n%s", want, b.String())
				}
			}
			for _, not := range tt.notText {
				if strings.Contains(b.String(), not) {
					t.Errorf("text view says %q:\n%s", not, b.String())
				}
			}
		})
	}
}

func TestNotTraced(t *testing.T) {
	traced, why := notTraced(tracer.FamilyState, missingFor(tracer.HookReset, tracer.FamilyReset))
	want := map[tracer.Families]string{tracer.FamilyReset: "unavailable on this kernel: " + unitReason,
		tracer.FamilyTW: "not selected (--events)", tracer.FamilyOverflow: "not selected (--events)", tracer.FamilyConnect: "not selected (--events)"}
	if traced != tracer.FamilyState || len(why) != len(want) {
		t.Fatalf("notTraced = %s, %v; want state, %v", traced, why, want)
	}
	for f, w := range want {
		if why[f] != w {
			t.Errorf("why[%s] = %q, want %q", f, why[f], w)
		}
	}
}

// The stream's own records: a family that is not traced, and events the kernel lost.
func TestStreamRecords(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	m := tracer.MissingFamily{Family: tracer.FamilyReset, Hook: tracer.HookReset, Reason: `a "quoted"` + "\n reason"}
	tests := []struct {
		name string
		got  []byte
		want string
	}{
		{"unavailable json", appendUnavailable(nil, now, m, true),
			`{"ts":"2026-01-02T03:04:05.000000006Z","kind":"unavailable","events":"reset","reason":"a \"quoted\"\u000a reason"}` + "\n"},
		{"unavailable text", appendUnavailable(nil, now, tracer.MissingFamily{Family: tracer.FamilyOverflow, Reason: "why"}, false),
			now.Local().Format("15:04:05.000") + " UNAVAILABLE overflow events are not traced: why\n"},
		{"lost json", appendLost(nil, now, 3, 10, []uint64{4, 0, 6}, true),
			`{"ts":"2026-01-02T03:04:05.000000006Z","kind":"lost","count":3,"total":10,"per_cpu":[4,0,6]}` + "\n"},
		{"lost text", appendLost(nil, now, 3, 10, []uint64{4, 0, 6}, false),
			now.Local().Format("15:04:05.000") + " LOST 3 events (ring buffer full; 10 in total, per CPU [4 0 6]): raise --ringbuf-size or narrow the filters\n"},
	}
	for _, tt := range tests {
		if string(tt.got) != tt.want {
			t.Errorf("%s:\n got %q\nwant %q", tt.name, tt.got, tt.want)
		}
		if strings.HasSuffix(tt.name, "json") && !json.Valid(tt.got) {
			t.Errorf("%s: not valid JSON: %s", tt.name, tt.got)
		}
	}
}

// probe names the hook no backend serves and the families that cost.
func TestProbeUnavailableFamilies(t *testing.T) {
	r := tracer.Report{Kernel: "6.1.0", BTF: true,
		Choices: []tracer.Choice{{Hook: tracer.HookState, Backend: tracer.BackendTracepoint},
			{Hook: tracer.HookReset, Unavailable: map[tracer.Backend]string{tracer.BackendTracepoint: "raw_tp tcp_send_reset not supported"}}},
		Missing: missingFor(tracer.HookReset, tracer.FamilyOverflow, tracer.FamilyReset)}
	var b bytes.Buffer
	writeProbeText(&b, r)
	for _, want := range []string{
		"  reset     -> none\n               tracepoint: raw_tp tcp_send_reset not supported\n",
		"event families unavailable here (the others are traced):\n  overflow  needs hook reset: " + unitReason + "\n  reset     needs hook reset: " + unitReason + "\n",
	} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("probe text lacks %q:\n%s", want, b.String())
		}
	}
	b.Reset()
	if err := writeProbeJSON(&b, r, nil); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Hooks []struct {
			Hook    string  `json:"hook"`
			Backend *string `json:"backend"`
		} `json:"hooks"`
		Missing map[string]string `json:"unavailable_families"`
	}
	if err := json.Unmarshal(b.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got.Hooks[0].Backend == nil || *got.Hooks[0].Backend != "tracepoint" || got.Hooks[1].Backend != nil {
		t.Errorf("hooks: want state tracepoint, reset null: %s", b.String())
	}
	if len(got.Missing) != 2 || got.Missing["reset"] != unitReason || got.Missing["overflow"] != unitReason {
		t.Errorf("unavailable_families: %v", got.Missing)
	}
}
