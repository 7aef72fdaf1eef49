package main

import (
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// unitTime is every unit test event's timestamp: not UTC, so the JSON must convert it.
var unitTime = time.Date(2024, 5, 6, 9, 8, 9, 123456789, time.FixedZone("CEST", 2*60*60))

const unitTS = "2024-05-06T07:08:09.123456789Z"

func unitCommOf(s string) [16]byte {
	var c [16]byte
	copy(c[:15], s)
	return c
}

// unitEvent is an IPv4 event with a known owner; mod adjusts it per case.
func unitEvent(kind tracer.Kind, mod func(*tracer.Event)) tracer.Event {
	e := tracer.Event{
		Time:    unitTime,
		Kind:    kind,
		Family:  4,
		SAddr:   netip.MustParseAddr("10.0.0.1"),
		DAddr:   netip.MustParseAddr("10.0.0.2"),
		SPort:   8080,
		DPort:   443,
		NetNS:   4026531840,
		PID:     4242,
		Comm:    unitCommOf("curl"),
		OwnerOK: true,
	}
	if mod != nil {
		mod(&e)
	}
	return e
}

// unitCommon is the JSON every unitEvent shares; kind-specific fields are merged in.
func unitCommon(kind string, specific map[string]any) map[string]any {
	m := map[string]any{
		"ts":     unitTS,
		"kind":   kind,
		"family": 4.0,
		"saddr":  "10.0.0.1",
		"sport":  8080.0,
		"daddr":  "10.0.0.2",
		"dport":  443.0,
		"netns":  4026531840.0,
		"pid":    4242.0,
		"comm":   "curl",
		// no workload known: the cgroup is null, the names absent
		"cgroup_id": nil,
		"cgroup":    nil,
	}
	for k, v := range specific {
		m[k] = v
	}
	return m
}

// unitDecodeJSON checks the framing of one appendJSON line and decodes it.
func unitDecodeJSON(t *testing.T, line []byte) map[string]any {
	t.Helper()
	s := string(line)
	if !strings.HasSuffix(s, "}\n") || strings.Count(s, "\n") != 1 {
		t.Fatalf("appendJSON output %q is not one object ending in one newline", s)
	}
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		t.Fatalf("appendJSON output %q is not valid JSON: %v", s, err)
	}
	return m
}

func TestJSONEvents(t *testing.T) {
	tests := []struct {
		name string
		e    tracer.Event
		want map[string]any
	}{
		{
			name: "state in_old known",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.OldState, e.NewState = tracer.StateEstablished, tracer.StateFinWait1
				e.Duration, e.DurationOK = 12345678*time.Nanosecond, true
			}),
			want: unitCommon("state", map[string]any{"old": "ESTABLISHED", "new": "FIN_WAIT1", "in_old_us": 12345.0}),
		},
		{
			name: "state in_old unknown",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.OldState, e.NewState = tracer.StateSynSent, tracer.StateEstablished
				e.Duration = time.Second // ignored: DurationOK is false
			}),
			want: unitCommon("state", map[string]any{"old": "SYN_SENT", "new": "ESTABLISHED", "in_old_us": nil}),
		},
		{
			name: "state ipv6",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.Family = 6
				e.SAddr, e.DAddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.0.0.2")
				e.OldState, e.NewState = tracer.StateListen, tracer.StateClose
			}),
			want: unitCommon("state", map[string]any{
				"family": 6.0, "saddr": "2001:db8::1", "daddr": "::ffff:10.0.0.2",
				"old": "LISTEN", "new": "CLOSE", "in_old_us": nil,
			}),
		},
		{
			name: "tw_enter",
			e: unitEvent(tracer.KindTWEnter, func(e *tracer.Event) {
				e.OldState, e.NewState, e.Substate = tracer.StateFinWait2, tracer.StateTimeWait, tracer.StateTimeWait
				e.Timeout, e.TimeoutOK = 60*time.Second, true
			}),
			want: unitCommon("tw_enter", map[string]any{"substate": "TIME_WAIT", "timeout_ms": 60000.0}),
		},
		{
			name: "tw_enter timeout unknown",
			e: unitEvent(tracer.KindTWEnter, func(e *tracer.Event) {
				e.Substate = tracer.StateFinWait2
			}),
			want: unitCommon("tw_enter", map[string]any{"substate": "FIN_WAIT2", "timeout_ms": nil}),
		},
		{
			name: "tw_rearm",
			e: unitEvent(tracer.KindTWRearm, func(e *tracer.Event) {
				e.Substate, e.Timeout, e.TimeoutOK = tracer.StateTimeWait, 1500*time.Millisecond, true
			}),
			want: unitCommon("tw_rearm", map[string]any{"substate": "TIME_WAIT", "timeout_ms": 1500.0}),
		},
		{
			name: "tw_exit expired lifetime and detail unknown",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.OldState, e.NewState, e.Substate = tracer.StateTimeWait, tracer.StateClose, tracer.StateTimeWait
				e.Cause = tracer.CauseExpired
			}),
			want: unitCommon("tw_exit", map[string]any{
				"substate": "TIME_WAIT", "lifetime_ms": nil, "lifetime_ns": nil, "cause": "expired", "detail": nil,
			}),
		},
		{
			name: "tw_exit expired with lifetime",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause = tracer.StateTimeWait, tracer.CauseExpired
				e.Duration, e.DurationOK = 60312*time.Millisecond+999*time.Microsecond, true
			}),
			want: unitCommon("tw_exit", map[string]any{
				"substate": "TIME_WAIT", "lifetime_ms": 60312.0, "lifetime_ns": 60312999000.0, "cause": "expired", "detail": nil,
			}),
		},
		{
			name: "tw_exit killed by netns exit",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause, e.Detail = tracer.StateFinWait2, tracer.CauseKilled, tracer.DetailNetnsExit
				e.Duration, e.DurationOK = 2*time.Second, true
			}),
			want: unitCommon("tw_exit", map[string]any{
				"substate": "FIN_WAIT2", "lifetime_ms": 2000.0, "lifetime_ns": 2e9, "cause": "killed", "detail": "netns_exit",
			}),
		},
		{
			name: "tw_exit killed by syn",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause, e.Detail = tracer.StateTimeWait, tracer.CauseKilled, tracer.DetailSYN
			}),
			want: unitCommon("tw_exit", map[string]any{
				"substate": "TIME_WAIT", "lifetime_ms": nil, "lifetime_ns": nil, "cause": "killed", "detail": "syn",
			}),
		},
		{
			name: "tw_overflow",
			e: unitEvent(tracer.KindTWOverflow, func(e *tracer.Event) {
				e.Substate, e.MaxBuckets = tracer.StateTimeWait, 262144
			}),
			want: unitCommon("tw_overflow", map[string]any{"substate": "TIME_WAIT", "max_tw_buckets": 262144.0}),
		},
		{
			name: "reset sent kernel reason with unread",
			e: unitEvent(tracer.KindReset, func(e *tracer.Event) {
				e.OldState, e.Reason, e.ReasonKernel = tracer.StateEstablished, "tcp_abort_on_close", true
				e.Unread, e.UnreadOK = 10, true
			}),
			want: unitCommon("reset", map[string]any{
				"direction": "sent", "state": "ESTABLISHED", "reason": "tcp_abort_on_close",
				"reason_source": "kernel", "unread_bytes": 10.0,
			}),
		},
		{
			name: "reset sent inferred",
			e: unitEvent(tracer.KindReset, func(e *tracer.Event) {
				e.OldState, e.Reason = tracer.StateEstablished, "tcp_state"
			}),
			want: unitCommon("reset", map[string]any{
				"direction": "sent", "state": "ESTABLISHED", "reason": "tcp_state",
				"reason_source": "inferred", "unread_bytes": nil,
			}),
		},
		{
			name: "reset recv",
			e: unitEvent(tracer.KindReset, func(e *tracer.Event) {
				e.OldState, e.Recv = tracer.StateSynSent, true
			}),
			want: unitCommon("reset", map[string]any{
				"direction": "recv", "state": "SYN_SENT", "reason": nil,
				"reason_source": nil, "unread_bytes": nil,
			}),
		},
		{
			// No socket means no owner. Today an unknown owner is written as pid 0 and
			// comm "", which a reader cannot tell from a real pid 0; if the schema moves
			// to null for an unknown owner, change these two values to nil.
			name: "reset no socket",
			e: unitEvent(tracer.KindReset, func(e *tracer.Event) {
				e.PID, e.Comm, e.OwnerOK = 0, [16]byte{}, false
				e.NoSocket, e.Reason, e.ReasonKernel = true, "no_socket", true
			}),
			want: unitCommon("reset", map[string]any{
				"pid": 0.0, "comm": "",
				"direction": "sent", "state": nil, "reason": "no_socket",
				"reason_source": "kernel", "unread_bytes": nil,
			}),
		},
		{
			name: "connect_fail EADDRNOTAVAIL",
			e: unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
				e.OldState, e.NewState, e.SPort = tracer.StateSynSent, tracer.StateClose, 0
				e.Errno, e.ErrnoOK, e.Duration, e.DurationOK = syscall.EADDRNOTAVAIL, true, 13*time.Microsecond, true
			}),
			want: unitCommon("connect_fail", map[string]any{"sport": 0.0, "errno": "EADDRNOTAVAIL", "connecting_us": 13.0}),
		},
		{
			name: "connect_fail errno unknown",
			e: unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
				e.OldState, e.NewState = tracer.StateSynSent, tracer.StateClose
			}),
			want: unitCommon("connect_fail", map[string]any{"errno": nil, "connecting_us": nil}),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := unitDecodeJSON(t, appendJSON(nil, &tt.e, nil))
			if !reflect.DeepEqual(unitKeys(got), unitKeys(tt.want)) {
				t.Errorf("keys = %v, want %v", unitKeys(got), unitKeys(tt.want))
			}
			for k, want := range tt.want {
				if g, ok := got[k]; ok && !reflect.DeepEqual(g, want) {
					t.Errorf("%q = %#v, want %#v", k, g, want)
				}
			}
		})
	}
}

func unitKeys(m map[string]any) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	// sorted, so DeepEqual compares sets
	for i := 1; i < len(keys); i++ {
		for j := i; j > 0 && keys[j] < keys[j-1]; j-- {
			keys[j], keys[j-1] = keys[j-1], keys[j]
		}
	}
	return keys
}

func TestJSONExactLine(t *testing.T) {
	e := unitEvent(tracer.KindState, func(e *tracer.Event) {
		e.OldState, e.NewState = tracer.StateEstablished, tracer.StateFinWait1
		e.Duration, e.DurationOK = 3500*time.Nanosecond, true
	})
	want := `{"ts":"2024-05-06T07:08:09.123456789Z","kind":"state","family":4,"saddr":"10.0.0.1","sport":8080,` +
		`"daddr":"10.0.0.2","dport":443,"netns":4026531840,"pid":4242,"comm":"curl","cgroup_id":null,"cgroup":null,` +
		`"old":"ESTABLISHED","new":"FIN_WAIT1","in_old_us":3}` + "\n"
	if got := string(appendJSON(nil, &e, nil)); got != want {
		t.Errorf("appendJSON:\n got %s\nwant %s", got, want)
	}
}

// A workload's fields appear when they apply: a pod's container, a systemd unit, a cgroup that
// names nothing, and a cgroup id no cgroup answers to any more.
func TestJSONWorkload(t *testing.T) {
	const ctr = "5c1c5d1a3f1f4f2a8d1e0b7c2a9e6d4b3f2e1d0c9b8a7f6e5d4c3b2a1f0e9d8c"
	pod := &workload.Workload{Cgroup: "/kubepods/besteffort/pod0f6a/" + ctr, ContainerID: ctr, PodUID: "0f6a",
		PodNamespace: "shop", Pod: "cart-7d9f", Container: "web"}
	unit := &workload.Workload{Cgroup: "/system.slice/nginx.service", Unit: "nginx.service"}
	plain := &workload.Workload{Cgroup: "/batch \"q\""}
	for _, tt := range []struct {
		id   uint64
		w    *workload.Workload
		want string
	}{
		{5706, pod, `"cgroup_id":5706,"cgroup":"/kubepods/besteffort/pod0f6a/` + ctr + `","container_id":"` + ctr +
			`","pod_uid":"0f6a","pod_namespace":"shop","pod":"cart-7d9f","container":"web"`},
		{17, unit, `"cgroup_id":17,"cgroup":"/system.slice/nginx.service","unit":"nginx.service"`},
		{18, plain, `"cgroup_id":18,"cgroup":"/batch \"q\""`},
		{19, nil, `"cgroup_id":19,"cgroup":null`},
	} {
		e := unitEvent(tracer.KindTWOverflow, func(e *tracer.Event) { e.Cgroup = tt.id })
		line := string(appendJSON(nil, &e, tt.w))
		if !strings.Contains(line, `"comm":"curl",`+tt.want+`,"substate"`) {
			t.Errorf("%+v:\n got %s\nwant %s", tt.w, line, tt.want)
		}
		unitDecodeJSON(t, []byte(line))
	}
}

func TestJSONAppends(t *testing.T) {
	e := unitEvent(tracer.KindState, nil)
	prefix := []byte("prefix\n")
	got := appendJSON(prefix, &e, nil)
	if !strings.HasPrefix(string(got), "prefix\n{") {
		t.Errorf("appendJSON did not append after the existing bytes: %q", got)
	}
}

func TestJSONTimestamp(t *testing.T) {
	tests := []struct {
		t    time.Time
		want string
	}{
		{unitTime, unitTS},
		{time.Date(2024, 1, 2, 3, 4, 5, 0, time.UTC), "2024-01-02T03:04:05Z"},
		{time.Date(2024, 1, 2, 3, 4, 5, 120000000, time.FixedZone("X", -5*60*60)), "2024-01-02T08:04:05.12Z"},
	}
	for _, tt := range tests {
		e := unitEvent(tracer.KindState, func(e *tracer.Event) { e.Time = tt.t })
		if got := unitDecodeJSON(t, appendJSON(nil, &e, nil))["ts"]; got != tt.want {
			t.Errorf("ts for %v = %v, want %q", tt.t, got, tt.want)
		}
	}
}

func TestJSONCommEscaping(t *testing.T) {
	tests := []struct {
		name string
		comm string
		raw  string // exact JSON text of the comm value
		want string // the value after decoding
	}{
		{"plain", "nginx", `"nginx"`, "nginx"},
		{"quote backslash control", "a\"b\\c\x01d", `"a\"b\\c\u0001d"`, "a\"b\\c\x01d"},
		{"tab newline", "x\ty\n", `"x\u0009y\u000a"`, "x\ty\n"},
		{"escape 0x1f", "\x1f", `"\u001f"`, "\x1f"},
		{"utf-8 passes through", "naïve", `"naïve"`, "naïve"},
		{"full 15 bytes", "abcdefghijklmno", `"abcdefghijklmno"`, "abcdefghijklmno"},
		{"empty", "", `""`, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := unitEvent(tracer.KindState, func(e *tracer.Event) { e.Comm = unitCommOf(tt.comm) })
			line := appendJSON(nil, &e, nil)
			if !strings.Contains(string(line), `"comm":`+tt.raw+`,`) {
				t.Errorf("appendJSON = %s, want comm written as %s", line, tt.raw)
			}
			if got := unitDecodeJSON(t, line)["comm"]; got != tt.want {
				t.Errorf("comm decodes to %q, want %q", got, tt.want)
			}
		})
	}
}

// A comm is bytes, not necessarily UTF-8: whatever it holds, the line must stay valid JSON.
func TestJSONCommInvalidUTF8(t *testing.T) {
	for _, comm := range []string{"\xff", "a\xc3", "\xed\xa0\x80", "\xef\xbf\xbd"} {
		e := unitEvent(tracer.KindState, func(e *tracer.Event) { e.Comm = unitCommOf(comm) })
		line := appendJSON(nil, &e, nil)
		got := unitDecodeJSON(t, line)["comm"]
		var want strings.Builder // as encoding/json does: U+FFFD for each invalid byte
		for _, r := range comm {
			want.WriteRune(r)
		}
		if got != want.String() {
			t.Errorf("comm %q written as %s, decodes to %q; want %q", comm, line, got, want.String())
		}
	}
}

func TestJSONAllocs(t *testing.T) {
	events := map[string]tracer.Event{
		"state": unitEvent(tracer.KindState, func(e *tracer.Event) {
			e.OldState, e.NewState = tracer.StateEstablished, tracer.StateFinWait1
			e.Duration, e.DurationOK = time.Millisecond, true
		}),
		"state ipv6": unitEvent(tracer.KindState, func(e *tracer.Event) {
			e.Family, e.SAddr, e.DAddr = 6, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::1")
			e.OldState, e.NewState = tracer.StateSynSent, tracer.StateEstablished
		}),
		"tw_exit": unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
			e.Substate, e.Cause, e.Detail = tracer.StateTimeWait, tracer.CauseKilled, tracer.DetailRST
		}),
		"reset": unitEvent(tracer.KindReset, func(e *tracer.Event) {
			e.OldState, e.Reason, e.ReasonKernel, e.Unread, e.UnreadOK = tracer.StateEstablished, "tcp_abort_on_close", true, 10, true
		}),
	}
	buf := make([]byte, 0, 1024)
	for name, e := range events {
		allocs := testing.AllocsPerRun(100, func() {
			buf = appendJSON(buf[:0], &e, nil)
		})
		if allocs != 0 {
			t.Errorf("appendJSON(%s) allocates %v times with a large enough buffer, want 0", name, allocs)
		}
	}
}
