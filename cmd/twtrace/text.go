package main

import (
	"fmt"
	"net/netip"
	"strconv"
	"syscall"
	"time"

	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

const textHeader = "TIME         PID     COMM             NETNS       WORKLOAD                 LOCAL                   REMOTE                  EVENT\n"

// workloadWidth keeps the WORKLOAD column narrow; JSON has the whole names.
const workloadWidth = 24

// appendText appends one event as an aligned line, like bcc's tcpstates, with its workload
// (nil when unknown).
func appendText(b []byte, e *tracer.Event, w *workload.Workload) []byte {
	comm := e.CommString()
	if !e.OwnerOK {
		comm = "?"
	}
	return fmt.Appendf(b, "%-12s %-7d %-16s %-11d %-24s %-23s %-23s %s\n",
		e.Time.Local().Format("15:04:05.000"), e.PID, comm, e.NetNS, workloadColumn(w),
		endpoint(e.SAddr, e.SPort), endpoint(e.DAddr, e.DPort), describe(e))
}

// workloadColumn is the workload's short name cut to the column from the left, so that a pod's
// container name (the end) stays; "?" when unknown.
func workloadColumn(w *workload.Workload) string {
	if w == nil || w.Name() == "" {
		return "?"
	}
	name := []rune(w.Name())
	if len(name) > workloadWidth {
		return "…" + string(name[len(name)-workloadWidth+1:])
	}
	return string(name)
}

func endpoint(a netip.Addr, port uint16) string {
	return netip.AddrPortFrom(a, port).String()
}

func describe(e *tracer.Event) string {
	switch e.Kind {
	case tracer.KindState:
		return fmt.Sprintf("%s -> %s (%s in %s)", e.OldState, e.NewState, duration(e.Duration, e.DurationOK), e.OldState)
	case tracer.KindTWEnter:
		return fmt.Sprintf("tw_enter %s, timer %s", e.Substate, duration(e.Timeout, e.TimeoutOK))
	case tracer.KindTWRearm:
		return fmt.Sprintf("tw_rearm %s, timer %s", e.Substate, duration(e.Timeout, e.TimeoutOK))
	case tracer.KindTWExit:
		how := e.Cause.String()
		if d := e.Detail.String(); d != "" {
			how += " (" + d + ")"
		}
		if e.Cause == tracer.CauseUnseen {
			return fmt.Sprintf("tw_exit %s unseen: gone from the kernel's table, no death reported, after %s to %s",
				e.Substate, duration(e.LifetimeMin, true), duration(e.LifetimeMax, true))
		}
		return fmt.Sprintf("tw_exit %s %s after %s", e.Substate, how, duration(e.Duration, e.DurationOK))
	case tracer.KindTWOverflow:
		return fmt.Sprintf("tw_overflow: closed without %s, table full (tcp_max_tw_buckets %d)", e.Substate, e.MaxBuckets)
	case tracer.KindReset:
		return resetStory(e)
	case tracer.KindConnectFail:
		return connectStory(e)
	}
	return e.Kind.String()
}

// connectStory tells why a connect() failed, and when.
func connectStory(e *tracer.Event) string {
	after := "after " + duration(e.Duration, e.DurationOK) + " in SYN_SENT"
	switch {
	case !e.ErrnoOK:
		return "connect_fail errno unknown (failed inside connect() once it had a local port) " + after
	case e.Errno == syscall.EADDRNOTAVAIL:
		return "connect_fail EADDRNOTAVAIL: no free local port towards this destination"
	}
	return "connect_fail " + e.ErrnoName() + " (" + e.Errno.Error() + ") " + after
}

// resetStory names a reset's cause in words.
func resetStory(e *tracer.Event) string {
	if e.Recv {
		return "RST received in " + e.OldState.String()
	}
	prefix := "RST sent: "
	if e.NoSocket {
		return prefix + "no socket for the packet (port closed)"
	}
	var why string
	switch e.Reason {
	case "tcp_abort_on_close":
		why = "close() with " + strconv.FormatUint(uint64(e.Unread), 10) + " unread bytes"
	case "tcp_state":
		why = "SO_LINGER 0 abort or disconnect"
	case "tcp_abort_on_linger":
		why = "orphaned FIN_WAIT2 with linger2 < 0"
	case "tcp_abort_on_memory":
		why = "out of memory for orphans"
	case "tcp_keepalive_timeout":
		why = "keepalive timed out"
	default:
		why = e.Reason
	}
	if !e.ReasonKernel {
		why += " (inferred)"
	}
	return prefix + why + " in " + e.OldState.String()
}

func duration(d time.Duration, ok bool) string {
	if !ok {
		return "unknown"
	}
	switch {
	case d >= time.Second:
		return strconv.FormatFloat(d.Seconds(), 'f', 3, 64) + "s"
	case d >= time.Millisecond:
		return strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', 3, 64) + "ms"
	}
	return strconv.FormatFloat(float64(d)/float64(time.Microsecond), 'f', 1, 64) + "µs"
}
