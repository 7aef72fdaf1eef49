package main

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/twtrace/twtrace/tracer"
)

// unitRecording is a recording of every kind of event, as watch -o json writes it.
func unitRecording(tb testing.TB) ([]tracer.Event, []byte) {
	tb.Helper()
	start := unitTime.Add(-time.Second)
	evs := []tracer.Event{
		unitEvent(tracer.KindState, func(e *tracer.Event) {
			e.OldState, e.NewState, e.Duration, e.DurationOK = tracer.StateFinWait2, tracer.StateTimeWait, 86*time.Microsecond, true
		}),
		unitEvent(tracer.KindTWEnter, func(e *tracer.Event) {
			e.NewState, e.Substate, e.Timeout, e.TimeoutOK = tracer.StateTimeWait, tracer.StateTimeWait, 60*time.Second, true
		}),
		unitEvent(tracer.KindTWRearm, func(e *tracer.Event) {
			e.OldState, e.NewState, e.Substate, e.Timeout, e.TimeoutOK = tracer.StateTimeWait, tracer.StateTimeWait, tracer.StateTimeWait, 1500*time.Millisecond, true
		}),
		unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
			e.OldState, e.NewState, e.Substate, e.Cause = tracer.StateTimeWait, tracer.StateClose, tracer.StateTimeWait, tracer.CauseExpired
			e.Duration, e.DurationOK = 60312999123*time.Nanosecond, true
		}),
		unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
			e.OldState, e.NewState, e.Substate, e.Cause, e.Detail = tracer.StateTimeWait, tracer.StateClose, tracer.StateFinWait2, tracer.CauseKilled, tracer.DetailNetnsExit
			e.PID, e.Comm, e.OwnerOK = 0, [16]byte{}, false
		}),
		unitEvent(tracer.KindTWOverflow, func(e *tracer.Event) {
			e.Family, e.SAddr, e.DAddr = 6, netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("::ffff:10.0.0.2")
			e.Substate, e.MaxBuckets = tracer.StateFinWait2, 4
		}),
		unitEvent(tracer.KindReset, func(e *tracer.Event) {
			e.OldState, e.Reason, e.ReasonKernel, e.Unread, e.UnreadOK = tracer.StateClose, "tcp_abort_on_close", true, 10, true
		}),
		unitEvent(tracer.KindReset, func(e *tracer.Event) { e.OldState, e.Recv = tracer.StateEstablished, true }),
		unitEvent(tracer.KindReset, func(e *tracer.Event) { e.NoSocket, e.Reason = true, "no_socket" }),
		unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
			e.OldState, e.NewState, e.SPort, e.Errno, e.ErrnoOK = tracer.StateSynSent, tracer.StateClose, 0, syscall.EADDRNOTAVAIL, true
			e.Duration, e.DurationOK = 21*time.Microsecond, true
		}),
		unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
			e.OldState, e.NewState, e.Errno, e.ErrnoOK = tracer.StateSynSent, tracer.StateClose, syscall.ETIMEDOUT, true
			e.Duration, e.DurationOK = 3012345*time.Microsecond, true
		}),
		unitEvent(tracer.KindConnectFail, func(e *tracer.Event) { e.OldState, e.NewState = tracer.StateSynSent, tracer.StateClose }),
	}
	for i := range evs {
		evs[i].Time = evs[i].Time.UTC()
	}
	b := appendStart(nil, start, tracer.AllFamilies, tracer.Filter{NetNS: 4026531840})
	for i := range evs {
		b = appendJSON(b, &evs[i], nil)
	}
	b = appendEnd(b, unitTime.Add(time.Second), tracer.Stats{Decoded: 9, Emitted: 9, Lost: 3, Missed: 1})
	return evs, b
}

// A recording replays into the events watch wrote, exactly, and its own records into
// the window's bounds, its loss and the recording's filter.
func TestReplayRoundTrip(t *testing.T) {
	want, b := unitRecording(t)
	var got []tracer.Event
	rec, err := replay(bytes.NewReader(b), "unit", replayFilter{}, func(e *tracer.Event) { got = append(got, *e) })
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("replayed events differ:\n got %+v\nwant %+v", got, want)
	}
	if !rec.HasStart || !rec.HasEnd || !rec.Since.Equal(unitTime.Add(-time.Second)) || !rec.Until.Equal(unitTime.Add(time.Second)) ||
		rec.Traced != tracer.AllFamilies || rec.NetNS != 4026531840 || rec.Lost != 3 || rec.Missed != 1 ||
		rec.Events != uint64(len(want)) || rec.Unreadable != 0 {
		t.Errorf("recording %+v", rec)
	}
}

// A truncated, corrupt or overlong line is counted, the first one named, and the replay
// goes on; the user's filters apply to the recorded events as the kernel applies them.
func TestReplayCountsUnreadableLines(t *testing.T) {
	_, b := unitRecording(t)
	lines := strings.SplitAfter(string(b), "\n")
	var in strings.Builder
	in.WriteString(lines[0])
	in.WriteString(lines[1][:len(lines[1])/2] + "\n") // cut mid-line
	in.WriteString("not json\n")
	in.WriteString(`{"ts":"2024-05-06T07:08:09Z","kind":"tw_exit","family":5}` + "\n")
	in.WriteString(`{"ts":"2024-05-06T07:08:09Z","kind":"from_a_future_version","family":4}` + "\n")
	in.WriteString(strings.Repeat("x", 2*maxLine) + "\n")
	for _, l := range lines[2:] {
		in.WriteString(l)
	}
	in.WriteString(`{"ts":"2024-05-06T07:08:09Z","kind":"tw_enter"`) // the last line, cut: no newline
	n := 0
	rec, err := replay(strings.NewReader(in.String()), "unit", replayFilter{Filter: tracer.Filter{Port: 443, Family: 4}}, func(*tracer.Event) { n++ })
	if err != nil {
		t.Fatal(err)
	}
	if rec.Unreadable != 6 || !strings.HasPrefix(rec.FirstError, "line 2: ") {
		t.Errorf("%d unreadable lines, first %q; want 6, the first on line 2", rec.Unreadable, rec.FirstError)
	}
	// the IPv6 overflow does not pass -4; the rest of the readable events have port 443
	if rec.Events != 11 || n != 10 {
		t.Errorf("%d events read, %d kept by the filter; want 11 and 10", rec.Events, n)
	}
	st := recordingStatus(rec)
	if st.complete() || !strings.Contains(st.incomplete(), "6 unreadable lines") {
		t.Errorf("a view of this recording must say it is incomplete: %q", st.incomplete())
	}
}

// Without a start record the families are known only where events show them: the others
// are unknown, never "none".
func TestReplayWithoutStartRecord(t *testing.T) {
	e := unitEvent(tracer.KindReset, func(e *tracer.Event) { e.Recv, e.OldState = true, tracer.StateEstablished })
	rec, err := replay(bytes.NewReader(appendJSON(nil, &e, nil)), "unit", replayFilter{}, func(*tracer.Event) {})
	if err != nil {
		t.Fatal(err)
	}
	st := recordingStatus(rec)
	if st.Traced != tracer.FamilyReset || !st.NoEnd || !strings.HasPrefix(st.NotTraced[tracer.FamilyTW], "unknown") {
		t.Errorf("status %+v", st)
	}
}

// timewait --input - reads standard input and needs nothing of the kernel: the live
// sections say they are not available offline, never 0.
func TestTimewaitInputFromStdin(t *testing.T) {
	_, b := unitRecording(t)
	var stdout, stderr bytes.Buffer
	if err := timewait([]string{"--input", "-", "-o", "json"}, bytes.NewReader(b), &stdout, &stderr); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	var v struct {
		Offline    bool   `json:"offline"`
		Input      string `json:"input"`
		Complete   bool   `json:"complete"`
		Lost       uint64 `json:"lost"`
		Namespaces []struct {
			Live, MaxTWBuckets, CounterDelta *int64
			Created                          *uint64 `json:"created"`
		} `json:"namespaces"`
		Destinations *[]any `json:"destinations"`
		Lifetimes    []struct {
			Count uint64  `json:"count"`
			MaxMs float64 `json:"max_ms"`
		} `json:"lifetimes"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &v); err != nil {
		t.Fatalf("%v: %s", err, stdout.String())
	}
	if !v.Offline || v.Input != "-" || v.Complete || v.Lost != 3 || v.Destinations != nil || len(v.Namespaces) != 1 ||
		v.Namespaces[0].Live != nil || v.Namespaces[0].Created == nil || *v.Namespaces[0].Created != 1 {
		t.Errorf("offline view:\n%s", stdout.String())
	}
	if len(v.Lifetimes) != 1 || v.Lifetimes[0].MaxMs != 60312.999123 { // the exact lifetime, from lifetime_ns
		t.Errorf("lifetimes: %+v", v.Lifetimes)
	}
	if !strings.Contains(stderr.String(), "replayed 12 events from -") {
		t.Errorf("stderr: %s", stderr.String())
	}
	stdout.Reset()
	if err := timewait([]string{"--input", "-"}, bytes.NewReader(b), &stdout, &stderr); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"replayed from -", "Live TIME_WAIT per namespace: not available offline",
		"4026531840   offline          offline offline        1          1    offline", "Top destinations by live TIME_WAIT: not available offline"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("text view lacks %q:\n%s", want, stdout.String())
		}
	}
	for _, args := range [][]string{{"--backend", "tracepoint"}, {"--duration", "1s"}, {"--interval", "1s"}, {"--events", "tw"}, {"--bpf-stats"}} {
		err := timewait(append([]string{"--input", "-"}, args...), strings.NewReader(""), &stdout, &stderr)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "does not trace") {
			t.Errorf("timewait --input - %v: %v, want a usage error", args, err)
		}
	}
}

// doctor --input diagnoses what the recording's events show, and nothing it cannot know.
func TestDoctorInput(t *testing.T) {
	_, b := unitRecording(t)
	var stdout, stderr bytes.Buffer
	if err := doctorCmd([]string{"--input", "-", "-o", "json"}, bytes.NewReader(b), &stdout, &stderr); err != nil {
		t.Fatalf("%v: %s", err, stderr.String())
	}
	var r doctorReport
	if err := json.Unmarshal(stdout.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Kernel != nil || !r.Offline || r.Measured == nil || *r.Measured != 2 || len(r.Namespaces) != 1 {
		t.Fatalf("report:\n%s", stdout.String())
	}
	n := r.Namespaces[0]
	if n.Sysctls != nil || n.Traced == nil || *n.Traced.Overflows != 1 || n.Traced.TimeWait.Count != 1 ||
		*n.Traced.TimeWait.P50Ms != 60312.999123 || len(n.Findings) != 2 || n.Findings[0].ID != "ephemeral_ports_exhausted" ||
		n.Findings[1].ID != "max_tw_buckets_reached" || !strings.Contains(n.Findings[0].Evidence, "not available offline") {
		t.Errorf("namespace:\n%s", stdout.String())
	}
	if f := n.Traced.ConnectFailures; len(f) != 3 || f["EADDRNOTAVAIL"] != 1 || f["ETIMEDOUT"] != 1 || f["unknown"] != 1 {
		t.Errorf("connect failures %v, want one EADDRNOTAVAIL, ETIMEDOUT and unknown each", f)
	}
}

// FuzzReplayLine: no line crashes the reader, and what it reads, watch writes back the
// same way (the encoder and the reader agree on every field).
func FuzzReplayLine(f *testing.F) {
	_, b := unitRecording(f)
	for _, l := range strings.SplitAfter(string(b), "\n") {
		f.Add([]byte(l))
	}
	f.Fuzz(func(t *testing.T, line []byte) {
		var e tracer.Event
		rec := recording{}
		var seen tracer.Families
		if err := rec.add(line, &e, replayFilter{}, &seen, func(*tracer.Event) {}); err != nil || rec.Events == 0 {
			return
		}
		first := appendJSON(nil, &e, nil)
		var again tracer.Event
		rec = recording{}
		if err := rec.add(first, &again, replayFilter{}, &seen, func(*tracer.Event) {}); err != nil {
			t.Fatalf("watch's own line %s does not read back: %v", first, err)
		}
		if second := appendJSON(nil, &again, nil); !bytes.Equal(first, second) {
			t.Fatalf("a line read back is written differently:\n%s%s", first, second)
		}
	})
}
