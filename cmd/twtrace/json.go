package main

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// appendJSON appends one event as a JSON object and a newline, with its workload (nil when
// unknown). The schema is part of the product (README, "JSON schema"): add fields, never
// rename them.
func appendJSON(b []byte, e *tracer.Event, w *workload.Workload) []byte {
	b = append(b, `{"ts":"`...)
	b = e.Time.UTC().AppendFormat(b, time.RFC3339Nano)
	b = append(b, `","kind":"`...)
	b = append(b, e.Kind.String()...)
	b = append(b, `","family":`...)
	b = strconv.AppendUint(b, uint64(e.Family), 10)
	b = append(b, `,"saddr":"`...)
	b = e.SAddr.AppendTo(b)
	b = append(b, `","sport":`...)
	b = strconv.AppendUint(b, uint64(e.SPort), 10)
	b = append(b, `,"daddr":"`...)
	b = e.DAddr.AppendTo(b)
	b = append(b, `","dport":`...)
	b = strconv.AppendUint(b, uint64(e.DPort), 10)
	b = append(b, `,"netns":`...)
	b = strconv.AppendUint(b, uint64(e.NetNS), 10)
	b = append(b, `,"pid":`...)
	b = strconv.AppendUint(b, uint64(e.PID), 10)
	b = append(b, `,"comm":`...)
	b = appendString(b, e.Comm[:])
	b = appendWorkload(b, e.Cgroup, w)
	switch e.Kind {
	case tracer.KindState:
		b = appendField(b, "old", e.OldState.String())
		b = appendField(b, "new", e.NewState.String())
		b = append(b, `,"in_old_us":`...)
		b = appendDuration(b, e.Duration, e.DurationOK, time.Microsecond)
	case tracer.KindTWEnter, tracer.KindTWRearm:
		b = appendField(b, "substate", e.Substate.String())
		b = append(b, `,"timeout_ms":`...)
		b = appendDuration(b, e.Timeout, e.TimeoutOK, time.Millisecond)
	case tracer.KindTWExit:
		b = appendField(b, "substate", e.Substate.String())
		b = append(b, `,"lifetime_ms":`...)
		b = appendDuration(b, e.Duration, e.DurationOK, time.Millisecond)
		b = append(b, `,"lifetime_ns":`...) // exact: a replayed view reports the same percentiles
		b = appendDuration(b, e.Duration, e.DurationOK, time.Nanosecond)
		b = appendField(b, "cause", e.Cause.String())
		b = appendOptional(b, "detail", e.Detail.String())
		if e.Cause == tracer.CauseUnseen { // the lifetime is known to lie between these
			b = append(b, `,"lifetime_min_ms":`...)
			b = appendDuration(b, e.LifetimeMin, true, time.Millisecond)
			b = append(b, `,"lifetime_max_ms":`...)
			b = appendDuration(b, e.LifetimeMax, true, time.Millisecond)
		}
	case tracer.KindTWOverflow:
		b = appendField(b, "substate", e.Substate.String())
		b = append(b, `,"max_tw_buckets":`...)
		b = strconv.AppendUint(b, uint64(e.MaxBuckets), 10)
	case tracer.KindReset:
		b = appendReset(b, e)
	case tracer.KindConnectFail:
		errno := ""
		if e.ErrnoOK {
			errno = e.ErrnoName()
		}
		b = appendOptional(b, "errno", errno)
		b = append(b, `,"connecting_us":`...)
		b = appendDuration(b, e.Duration, e.DurationOK, time.Microsecond)
	}
	return append(b, "}\n"...)
}

func appendReset(b []byte, e *tracer.Event) []byte {
	if e.Recv {
		b = appendField(b, "direction", "recv")
	} else {
		b = appendField(b, "direction", "sent")
	}
	if e.NoSocket {
		b = appendOptional(b, "state", "")
	} else {
		b = appendField(b, "state", e.OldState.String())
	}
	b = appendOptional(b, "reason", e.Reason)
	source := ""
	if !e.Recv {
		source = "inferred"
		if e.ReasonKernel {
			source = "kernel"
		}
	}
	b = appendOptional(b, "reason_source", source)
	b = append(b, `,"unread_bytes":`...)
	if e.UnreadOK {
		return strconv.AppendUint(b, uint64(e.Unread), 10)
	}
	return append(b, "null"...)
}

// appendWorkload writes the socket's cgroup id and path (null when unknown), then whatever names
// the workload there, each field only when it applies: unit, container_id, pod_uid, pod_namespace,
// pod, container.
func appendWorkload(b []byte, id uint64, w *workload.Workload) []byte {
	b = append(b, `,"cgroup_id":`...)
	if id == 0 {
		b = append(b, "null"...)
	} else {
		b = strconv.AppendUint(b, id, 10)
	}
	if w == nil {
		return append(b, `,"cgroup":null`...)
	}
	b = append(b, `,"cgroup":`...)
	b = appendString(b, []byte(w.Cgroup))
	for _, f := range [...]struct{ key, value string }{
		{"unit", w.Unit}, {"container_id", w.ContainerID}, {"pod_uid", w.PodUID},
		{"pod_namespace", w.PodNamespace}, {"pod", w.Pod}, {"container", w.Container},
	} {
		if f.value != "" {
			b = append(b, `,"`...)
			b = append(b, f.key...)
			b = append(b, `":`...)
			b = appendString(b, []byte(f.value))
		}
	}
	return b
}

func appendField(b []byte, key, value string) []byte {
	b = append(b, `,"`...)
	b = append(b, key...)
	b = append(b, `":"`...)
	b = append(b, value...)
	return append(b, '"')
}

// appendOptional writes null for an empty value.
func appendOptional(b []byte, key, value string) []byte {
	if value == "" {
		b = append(b, `,"`...)
		b = append(b, key...)
		return append(b, `":null`...)
	}
	return appendField(b, key, value)
}

func appendDuration(b []byte, d time.Duration, ok bool, unit time.Duration) []byte {
	if !ok {
		return append(b, "null"...)
	}
	return strconv.AppendInt(b, int64(d/unit), 10)
}

// appendString writes a NUL-terminated kernel string as a JSON string.
func appendString(b []byte, raw []byte) []byte {
	n := 0
	for n < len(raw) && raw[n] != 0 {
		n++
	}
	b = append(b, '"')
	for _, r := range string(raw[:n]) {
		switch {
		case r == '"' || r == '\\':
			b = append(b, '\\', byte(r))
		case r == utf8.RuneError:
			b = append(b, `\ufffd`...)
		case r < 0x20:
			b = append(b, `\u00`...)
			b = append(b, "0123456789abcdef"[byte(r)>>4&0xf], "0123456789abcdef"[byte(r)&0xf])
		default:
			b = utf8.AppendRune(b, r)
		}
	}
	return append(b, '"')
}
