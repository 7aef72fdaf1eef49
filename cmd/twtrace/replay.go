package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"time"

	"github.com/twtrace/twtrace/internal/reconcile"
	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// maxLine bounds one line of a recording: an event is about 300 bytes.
const maxLine = 64 << 10

// recording is what a replayed `watch -o json` stream says about itself.
type recording struct {
	Name               string
	Since, Until       time.Time // the start and end records, or the first and last records' times
	HasStart, HasEnd   bool
	Traced             tracer.Families // from the start record, or the families events came from
	Missing            []tracer.MissingFamily
	NetNS              uint32 // the recording's --netns, 0 when it had none
	Lost, Missed       uint64
	Events, Unreadable uint64
	// Unattributed are the counts the live run's reconciliation found with no event.
	Unattributed []reconcile.Unattributed
	FirstError   string // the first unreadable line, and why
	Names        recordedNames
}

// recordedNames are the workloads a recording names, by cgroup id: a replay names them as the
// live run did, whatever runs on the machine that replays it.
type recordedNames map[uint64]workload.Workload

func (n recordedNames) cgroup(id uint64) (workload.Workload, bool) {
	w, ok := n[id]
	return w, ok
}

// netns: a recording does not say which pod held a namespace.
func (recordedNames) netns(uint32) (workload.Workload, bool) { return workload.Workload{}, false }

// replayFilter is what a replay keeps: the socket filter, and the workload filter (nil keeps
// every workload), matched against the names the recording holds.
type replayFilter struct {
	tracer.Filter
	Workload func(w workload.Workload, known bool) bool
}

// openRecording opens FILE, or standard input for "-".
func openRecording(name string, stdin io.Reader) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("--input: %w", err)
	}
	return f, nil
}

// replay reads a recording line by line and hands fn each event the filter keeps, as the
// tracer would have delivered it. A line it cannot read is counted and skipped: only an
// error reading the input itself stops it.
func replay(r io.Reader, name string, filter replayFilter, fn func(*tracer.Event)) (recording, error) {
	rec := recording{Name: name}
	var seen tracer.Families
	br := bufio.NewReaderSize(r, maxLine)
	var e tracer.Event
	for n := 1; ; n++ {
		line, err := br.ReadSlice('\n')
		tooLong := errors.Is(err, bufio.ErrBufferFull)
		for errors.Is(err, bufio.ErrBufferFull) { // skip the rest of an overlong line
			_, err = br.ReadSlice('\n')
		}
		if err != nil && err != io.EOF {
			return rec, fmt.Errorf("read %s: %w", name, err)
		}
		if len(line) > 0 || tooLong {
			var perr error
			if tooLong {
				perr = fmt.Errorf("longer than %d bytes", maxLine)
			} else {
				perr = rec.add(line, &e, filter, &seen, fn)
			}
			if perr != nil {
				rec.Unreadable++
				if rec.FirstError == "" {
					rec.FirstError = fmt.Sprintf("line %d: %v", n, perr)
				}
			}
		}
		if err == io.EOF {
			break
		}
	}
	if !rec.HasStart {
		rec.Traced = seen
	}
	return rec, nil
}

// add reads one line: an event for fn, or one of the stream's own records.
func (rec *recording) add(line []byte, e *tracer.Event, filter replayFilter, seen *tracer.Families, fn func(*tracer.Event)) error {
	var w wireRecord
	if err := json.Unmarshal(line, &w); err != nil {
		return err
	}
	ts, err := time.Parse(time.RFC3339Nano, w.TS)
	if err != nil {
		return fmt.Errorf("ts: %w", err)
	}
	if rec.Since.IsZero() || (!rec.HasStart && ts.Before(rec.Since)) {
		rec.Since = ts
	}
	if !rec.HasEnd && ts.After(rec.Until) {
		rec.Until = ts
	}
	switch w.Kind {
	case "start":
		fs, err := tracer.ParseFamilies(w.Events)
		if w.Events == "" {
			fs, err = 0, nil // every family unavailable: nothing was traced
		}
		if err != nil {
			return err
		}
		rec.HasStart, rec.Since, rec.Traced, rec.NetNS = true, ts, fs, w.Filter.NetNS
		return nil
	case "end":
		rec.HasEnd, rec.Until, rec.Lost, rec.Missed = true, ts, w.Lost, w.Missed
		return nil
	case "unattributed":
		fs, err := tracer.ParseFamilies(w.Events)
		if err != nil {
			return err
		}
		// counts of a whole namespace: kept only where the live run would have reconciled
		wholeNamespaces := countedFamilies(fs, filter.Filter) != 0 && filter.Workload == nil
		if wholeNamespaces && (filter.NetNS == 0 || filter.NetNS == w.NetNS) {
			rec.Unattributed = append(rec.Unattributed, reconcile.Unattributed{NetNS: w.NetNS, Family: fs, Count: w.Count, Total: w.Total})
		}
		return nil
	case "lost":
		if !rec.HasEnd {
			rec.Lost = max(rec.Lost, w.Total)
		}
		return nil
	case "unavailable":
		fs, err := tracer.ParseFamilies(w.Events)
		if err != nil {
			return err
		}
		reason := ""
		if w.Reason != nil {
			reason = *w.Reason
		}
		rec.Missing = append(rec.Missing, tracer.MissingFamily{Family: fs, Reason: reason})
		return nil
	}
	if err := w.event(ts, e); err != nil {
		return err
	}
	rec.Events++
	*seen |= familyOf(e)
	if e.Cgroup != 0 && w.CgroupPath != nil {
		if rec.Names == nil {
			rec.Names = recordedNames{}
		}
		rec.Names[e.Cgroup] = w.workload()
	}
	if filter.MatchesEvent(e) && (filter.Workload == nil || filter.Workload(rec.Names.cgroup(e.Cgroup))) {
		fn(e)
	}
	return nil
}

// familyOf is the event family a delivered event belongs to.
func familyOf(e *tracer.Event) tracer.Families {
	switch e.Kind {
	case tracer.KindState:
		return tracer.FamilyState
	case tracer.KindTWEnter, tracer.KindTWRearm, tracer.KindTWExit:
		return tracer.FamilyTW
	case tracer.KindTWOverflow:
		return tracer.FamilyOverflow
	case tracer.KindConnectFail:
		return tracer.FamilyConnect
	}
	return tracer.FamilyReset
}

// wireRecord is one line of the stream, every kind's fields together (README, "JSON schema").
type wireRecord struct {
	TS     string `json:"ts"`
	Kind   string `json:"kind"`
	Family uint8  `json:"family"`
	SAddr  string `json:"saddr"`
	SPort  uint16 `json:"sport"`
	DAddr  string `json:"daddr"`
	DPort  uint16 `json:"dport"`
	NetNS  uint32 `json:"netns"`
	PID    uint32 `json:"pid"`
	Comm   string `json:"comm"`

	CgroupID     *uint64 `json:"cgroup_id"`
	CgroupPath   *string `json:"cgroup"`
	Unit         string  `json:"unit"`
	ContainerID  string  `json:"container_id"`
	PodUID       string  `json:"pod_uid"`
	PodNamespace string  `json:"pod_namespace"`
	Pod          string  `json:"pod"`
	Container    string  `json:"container"`

	Old          string  `json:"old"`
	New          string  `json:"new"`
	InOldUs      *int64  `json:"in_old_us"`
	Substate     string  `json:"substate"`
	TimeoutMs    *int64  `json:"timeout_ms"`
	LifetimeMs   *int64  `json:"lifetime_ms"`
	LifetimeNs   *int64  `json:"lifetime_ns"`
	LifetimeMin  *int64  `json:"lifetime_min_ms"` // cause unseen
	LifetimeMax  *int64  `json:"lifetime_max_ms"`
	Cause        string  `json:"cause"`
	Detail       *string `json:"detail"`
	MaxTW        uint32  `json:"max_tw_buckets"`
	Direction    string  `json:"direction"`
	State        *string `json:"state"`
	Reason       *string `json:"reason"`
	ReasonSource *string `json:"reason_source"`
	Unread       *uint32 `json:"unread_bytes"`
	Errno        *string `json:"errno"`
	ConnectingUs *int64  `json:"connecting_us"`

	Events string       `json:"events"` // start, unavailable
	Filter streamFilter `json:"filter"` // start
	Total  uint64       `json:"total"`  // lost, unattributed
	Count  uint64       `json:"count"`  // unattributed
	Lost   uint64       `json:"lost"`   // end
	Missed uint64       `json:"missed"` // end
}

// event fills e from an event line, checking every value the way Decode checks a record.
func (w *wireRecord) event(ts time.Time, e *tracer.Event) error {
	*e = tracer.Event{Time: ts, Family: w.Family, SPort: w.SPort, DPort: w.DPort, NetNS: w.NetNS, PID: w.PID, OwnerOK: w.PID != 0}
	if w.CgroupID != nil {
		e.Cgroup = *w.CgroupID
	}
	var ok bool
	if e.Kind, ok = parseKind(w.Kind); !ok {
		return fmt.Errorf("unknown kind %q", w.Kind)
	}
	if w.Family != 4 && w.Family != 6 {
		return fmt.Errorf("family %d", w.Family)
	}
	var err error
	if e.SAddr, err = parseAddr(w.SAddr, w.Family); err != nil {
		return fmt.Errorf("saddr: %w", err)
	}
	if e.DAddr, err = parseAddr(w.DAddr, w.Family); err != nil {
		return fmt.Errorf("daddr: %w", err)
	}
	if len(w.Comm) > len(e.Comm) {
		return fmt.Errorf("comm longer than %d bytes", len(e.Comm))
	}
	copy(e.Comm[:], w.Comm)
	state := func(field, name string) (tracer.State, error) {
		s, ok := tracer.ParseState(name)
		if !ok {
			return 0, fmt.Errorf("%s: unknown state %q", field, name)
		}
		return s, nil
	}
	duration := func(v *int64, unit time.Duration) (time.Duration, bool, error) {
		if v == nil {
			return 0, false, nil
		}
		if *v < 0 || *v > int64(1<<63-1)/int64(unit) {
			return 0, false, fmt.Errorf("duration %d out of range", *v)
		}
		return time.Duration(*v) * unit, true, nil
	}
	switch e.Kind {
	case tracer.KindState:
		if e.OldState, err = state("old", w.Old); err != nil {
			return err
		}
		if e.NewState, err = state("new", w.New); err != nil {
			return err
		}
		e.Duration, e.DurationOK, err = duration(w.InOldUs, time.Microsecond)
		return err
	case tracer.KindTWEnter, tracer.KindTWRearm:
		if e.Substate, err = state("substate", w.Substate); err != nil {
			return err
		}
		e.NewState = tracer.StateTimeWait // a birth's old state is the state event's, not in this line
		if e.Kind == tracer.KindTWRearm {
			e.OldState = tracer.StateTimeWait
		}
		e.Timeout, e.TimeoutOK, err = duration(w.TimeoutMs, time.Millisecond)
		return err
	case tracer.KindTWExit:
		if e.Substate, err = state("substate", w.Substate); err != nil {
			return err
		}
		e.OldState, e.NewState = tracer.StateTimeWait, tracer.StateClose
		if e.Cause, ok = parseCause(w.Cause); !ok {
			return fmt.Errorf("unknown cause %q", w.Cause)
		}
		if w.Detail != nil {
			if e.Detail, ok = parseDetail(*w.Detail); !ok {
				return fmt.Errorf("unknown detail %q", *w.Detail)
			}
		}
		if w.LifetimeNs != nil { // exact; lifetime_ms alone comes from recordings made before it existed
			e.Duration, e.DurationOK, err = duration(w.LifetimeNs, time.Nanosecond)
		} else {
			e.Duration, e.DurationOK, err = duration(w.LifetimeMs, time.Millisecond)
		}
		if err != nil || e.Cause != tracer.CauseUnseen {
			return err
		}
		if e.LifetimeMin, _, err = duration(w.LifetimeMin, time.Millisecond); err != nil {
			return err
		}
		e.LifetimeMax, _, err = duration(w.LifetimeMax, time.Millisecond)
		return err
	case tracer.KindTWOverflow:
		if e.Substate, err = state("substate", w.Substate); err != nil {
			return err
		}
		e.MaxBuckets = w.MaxTW
		return nil
	case tracer.KindConnectFail:
		e.OldState, e.NewState = tracer.StateSynSent, tracer.StateClose
		if w.Errno != nil {
			if e.Errno, e.ErrnoOK, ok = tracer.ParseErrno(*w.Errno); !ok || !e.ErrnoOK {
				return fmt.Errorf("unknown errno %q", *w.Errno)
			}
		}
		e.Duration, e.DurationOK, err = duration(w.ConnectingUs, time.Microsecond)
		return err
	}
	return w.reset(e)
}

// workload is the workload the line names; its runtime is not in the stream, but the cgroup
// path it came from is.
func (w *wireRecord) workload() workload.Workload {
	named := workload.Parse(*w.CgroupPath)
	named.Unit, named.ContainerID, named.PodUID = w.Unit, w.ContainerID, w.PodUID
	named.PodNamespace, named.Pod, named.Container = w.PodNamespace, w.Pod, w.Container
	return named
}

func (w *wireRecord) reset(e *tracer.Event) error {
	switch w.Direction {
	case "recv":
		e.Recv = true
	case "sent":
		if w.Reason == nil || *w.Reason == "" {
			return fmt.Errorf("a sent reset without a reason")
		}
		e.Reason = *w.Reason
		e.ReasonKernel = w.ReasonSource != nil && *w.ReasonSource == "kernel"
	default:
		return fmt.Errorf("unknown direction %q", w.Direction)
	}
	if w.State == nil {
		e.NoSocket = true
	} else {
		s, ok := tracer.ParseState(*w.State)
		if !ok {
			return fmt.Errorf("state: unknown state %q", *w.State)
		}
		e.OldState = s
	}
	if w.Unread != nil {
		e.Unread, e.UnreadOK = *w.Unread, true
	}
	return nil
}

func parseAddr(s string, family uint8) (netip.Addr, error) {
	a, err := netip.ParseAddr(s)
	switch {
	case err != nil:
		return a, err
	case a.Zone() != "":
		return a, fmt.Errorf("%q has a zone", s)
	case (family == 4) != a.Is4():
		return a, fmt.Errorf("%q is not an IPv%d address", s, family)
	}
	return a, nil
}

func parseKind(s string) (tracer.Kind, bool) {
	for k := tracer.KindState; k <= tracer.KindConnectFail; k++ {
		if k.String() == s {
			return k, true
		}
	}
	return 0, false
}

func parseCause(s string) (tracer.Cause, bool) {
	for _, c := range []tracer.Cause{tracer.CauseExpired, tracer.CauseKilled, tracer.CauseUnseen} {
		if c.String() == s {
			return c, true
		}
	}
	return 0, false
}

func parseDetail(s string) (tracer.Detail, bool) {
	for _, d := range []tracer.Detail{tracer.DetailSYN, tracer.DetailRST, tracer.DetailReuse, tracer.DetailNetnsExit} {
		if d.String() == s {
			return d, true
		}
	}
	return 0, false
}
