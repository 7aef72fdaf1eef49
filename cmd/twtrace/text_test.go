package main

import (
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/twtrace/twtrace/internal/workload"
	"github.com/twtrace/twtrace/tracer"
)

// unitLocal is in the local zone, so the text's wall clock reads 12:34:56.789 whatever TZ is.
var unitLocal = time.Date(2024, 5, 6, 12, 34, 56, 789_000_000, time.Local)

func TestTextLine(t *testing.T) {
	tests := []struct {
		name string
		e    tracer.Event
		want string
	}{
		{
			name: "state",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.Time = unitLocal
				e.OldState, e.NewState = tracer.StateEstablished, tracer.StateFinWait1
				e.Duration, e.DurationOK = 12345*time.Microsecond, true
			}),
			want: "12:34:56.789 4242    curl             4026531840  ?                        10.0.0.1:8080           10.0.0.2:443            ESTABLISHED -> FIN_WAIT1 (12.345ms in ESTABLISHED)\n",
		},
		{
			name: "unknown owner ipv6",
			e: unitEvent(tracer.KindReset, func(e *tracer.Event) {
				e.Time = unitLocal
				e.PID, e.Comm, e.OwnerOK = 0, unitCommOf("stale"), false
				e.Family, e.SAddr, e.DAddr = 6, netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::2")
				e.NoSocket, e.Reason, e.ReasonKernel = true, "no_socket", true
			}),
			want: "12:34:56.789 0       ?                4026531840  ?                        [::1]:8080              [2001:db8::2]:443       RST sent: no socket for the packet (port closed)\n",
		},
		{
			name: "connect failed for want of a port",
			e: unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
				e.Time, e.SPort, e.Errno, e.ErrnoOK = unitLocal, 0, syscall.EADDRNOTAVAIL, true
			}),
			want: "12:34:56.789 4242    curl             4026531840  ?                        10.0.0.1:0              10.0.0.2:443            connect_fail EADDRNOTAVAIL: no free local port towards this destination\n",
		},
		{
			name: "connect refused",
			e: unitEvent(tracer.KindConnectFail, func(e *tracer.Event) {
				e.Time, e.Errno, e.ErrnoOK, e.Duration, e.DurationOK = unitLocal, syscall.ECONNREFUSED, true, 120*time.Microsecond, true
			}),
			want: "12:34:56.789 4242    curl             4026531840  ?                        10.0.0.1:8080           10.0.0.2:443            connect_fail ECONNREFUSED (connection refused) after 120.0µs in SYN_SENT\n",
		},
		{
			name: "long comm and endpoints keep one space between columns",
			e: unitEvent(tracer.KindTWOverflow, func(e *tracer.Event) {
				e.Time = unitLocal
				e.PID, e.Comm = 4194303, unitCommOf("abcdefghijklmno")
				e.Family = 6
				e.SAddr = netip.MustParseAddr("2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff")
				e.DAddr = netip.MustParseAddr("2001:db8::1")
				e.SPort, e.DPort, e.NetNS = 65535, 1, 4294967295
				e.Substate, e.MaxBuckets = tracer.StateTimeWait, 5
			}),
			want: "12:34:56.789 4194303 abcdefghijklmno  4294967295  ?                        [2001:db8:aaaa:bbbb:cccc:dddd:eeee:ffff]:65535 [2001:db8::1]:1         tw_overflow: closed without TIME_WAIT, table full (tcp_max_tw_buckets 5)\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := string(appendText(nil, &tt.e, nil)); got != tt.want {
				t.Errorf("appendText:\n got %q\nwant %q", got, tt.want)
			}
		})
	}
}

func TestTextHeaderAligned(t *testing.T) {
	e := unitEvent(tracer.KindState, func(e *tracer.Event) { e.Time = unitLocal })
	line := string(appendText(nil, &e, nil))
	for _, col := range []string{"PID", "COMM", "NETNS", "WORKLOAD", "LOCAL", "REMOTE", "EVENT"} {
		i := strings.Index(textHeader, col)
		if i <= 0 || line[i-1] != ' ' || line[i] == ' ' {
			t.Errorf("column %s at %d does not line up with %q", col, i, line)
		}
	}
}

func TestTextDescribe(t *testing.T) {
	tests := []struct {
		name string
		e    tracer.Event
		want string
	}{
		{
			name: "state",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.OldState, e.NewState = tracer.StateSynSent, tracer.StateEstablished
				e.Duration, e.DurationOK = 3500*time.Nanosecond, true
			}),
			want: "SYN_SENT -> ESTABLISHED (3.5µs in SYN_SENT)",
		},
		{
			name: "state in_old unknown",
			e: unitEvent(tracer.KindState, func(e *tracer.Event) {
				e.OldState, e.NewState = tracer.StateEstablished, tracer.StateCloseWait
			}),
			want: "ESTABLISHED -> CLOSE_WAIT (unknown in ESTABLISHED)",
		},
		{
			name: "tw_enter",
			e: unitEvent(tracer.KindTWEnter, func(e *tracer.Event) {
				e.Substate, e.Timeout, e.TimeoutOK = tracer.StateTimeWait, 60*time.Second, true
			}),
			want: "tw_enter TIME_WAIT, timer 60.000s",
		},
		{
			name: "tw_enter timer unknown",
			e:    unitEvent(tracer.KindTWEnter, func(e *tracer.Event) { e.Substate = tracer.StateFinWait2 }),
			want: "tw_enter FIN_WAIT2, timer unknown",
		},
		{
			name: "tw_rearm",
			e: unitEvent(tracer.KindTWRearm, func(e *tracer.Event) {
				e.Substate, e.Timeout, e.TimeoutOK = tracer.StateTimeWait, 1500*time.Millisecond, true
			}),
			want: "tw_rearm TIME_WAIT, timer 1.500s",
		},
		{
			name: "tw_exit expired",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause = tracer.StateTimeWait, tracer.CauseExpired
				e.Duration, e.DurationOK = 60312*time.Millisecond, true
			}),
			want: "tw_exit TIME_WAIT expired after 60.312s",
		},
		{
			name: "tw_exit killed with detail",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause, e.Detail = tracer.StateFinWait2, tracer.CauseKilled, tracer.DetailNetnsExit
			}),
			want: "tw_exit FIN_WAIT2 killed (netns_exit) after unknown",
		},
		{
			name: "tw_exit killed by syn",
			e: unitEvent(tracer.KindTWExit, func(e *tracer.Event) {
				e.Substate, e.Cause, e.Detail = tracer.StateTimeWait, tracer.CauseKilled, tracer.DetailSYN
				e.Duration, e.DurationOK = 2*time.Second, true
			}),
			want: "tw_exit TIME_WAIT killed (syn) after 2.000s",
		},
		{
			name: "tw_overflow",
			e: unitEvent(tracer.KindTWOverflow, func(e *tracer.Event) {
				e.Substate, e.MaxBuckets = tracer.StateTimeWait, 262144
			}),
			want: "tw_overflow: closed without TIME_WAIT, table full (tcp_max_tw_buckets 262144)",
		},
		{
			name: "unknown kind",
			e:    unitEvent(tracer.Kind(9), nil),
			want: "unknown",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := describe(&tt.e); got != tt.want {
				t.Errorf("describe = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestTextResetStory(t *testing.T) {
	reset := func(mod func(*tracer.Event)) tracer.Event {
		return unitEvent(tracer.KindReset, func(e *tracer.Event) {
			e.OldState = tracer.StateEstablished
			mod(e)
		})
	}
	tests := []struct {
		name string
		e    tracer.Event
		want string
	}{
		{
			name: "abort on close kernel",
			e: reset(func(e *tracer.Event) {
				e.Reason, e.ReasonKernel, e.Unread, e.UnreadOK = "tcp_abort_on_close", true, 10, true
			}),
			want: "RST sent: close() with 10 unread bytes in ESTABLISHED",
		},
		{
			name: "abort on close inferred",
			e: reset(func(e *tracer.Event) {
				e.OldState = tracer.StateCloseWait
				e.Reason, e.Unread, e.UnreadOK = "tcp_abort_on_close", 4096, true
			}),
			want: "RST sent: close() with 4096 unread bytes (inferred) in CLOSE_WAIT",
		},
		{
			name: "tcp_state kernel",
			e:    reset(func(e *tracer.Event) { e.Reason, e.ReasonKernel = "tcp_state", true }),
			want: "RST sent: SO_LINGER 0 abort or disconnect in ESTABLISHED",
		},
		{
			name: "tcp_state inferred",
			e:    reset(func(e *tracer.Event) { e.Reason = "tcp_state" }),
			want: "RST sent: SO_LINGER 0 abort or disconnect (inferred) in ESTABLISHED",
		},
		{
			name: "abort on linger",
			e: reset(func(e *tracer.Event) {
				e.OldState, e.Reason, e.ReasonKernel = tracer.StateFinWait2, "tcp_abort_on_linger", true
			}),
			want: "RST sent: orphaned FIN_WAIT2 with linger2 < 0 in FIN_WAIT2",
		},
		{
			name: "abort on memory",
			e:    reset(func(e *tracer.Event) { e.Reason, e.ReasonKernel = "tcp_abort_on_memory", true }),
			want: "RST sent: out of memory for orphans in ESTABLISHED",
		},
		{
			name: "keepalive",
			e:    reset(func(e *tracer.Event) { e.Reason, e.ReasonKernel = "tcp_keepalive_timeout", true }),
			want: "RST sent: keepalive timed out in ESTABLISHED",
		},
		{
			name: "other kernel reason verbatim",
			e:    reset(func(e *tracer.Event) { e.Reason, e.ReasonKernel = "unknown(40)", true }),
			want: "RST sent: unknown(40) in ESTABLISHED",
		},
		{
			name: "not specified inferred",
			e:    reset(func(e *tracer.Event) { e.Reason = "not_specified" }),
			want: "RST sent: not_specified (inferred) in ESTABLISHED",
		},
		{
			name: "received",
			e:    reset(func(e *tracer.Event) { e.OldState, e.Recv = tracer.StateSynSent, true }),
			want: "RST received in SYN_SENT",
		},
		{
			name: "no socket",
			e: reset(func(e *tracer.Event) {
				e.OldState, e.NoSocket, e.Reason, e.ReasonKernel = 0, true, "no_socket", true
			}),
			want: "RST sent: no socket for the packet (port closed)",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := resetStory(&tt.e); got != tt.want {
				t.Errorf("resetStory = %q, want %q", got, tt.want)
			}
			if got := describe(&tt.e); got != tt.want {
				t.Errorf("describe = %q, want the reset story %q", got, tt.want)
			}
		})
	}
}

func TestTextDuration(t *testing.T) {
	tests := []struct {
		d    time.Duration
		ok   bool
		want string
	}{
		{time.Second, false, "unknown"},
		{0, false, "unknown"},
		{0, true, "0.0µs"},
		{3500 * time.Nanosecond, true, "3.5µs"},
		{999 * time.Microsecond, true, "999.0µs"},
		{time.Millisecond, true, "1.000ms"},
		{12345 * time.Microsecond, true, "12.345ms"},
		{time.Second, true, "1.000s"},
		{60312 * time.Millisecond, true, "60.312s"},
	}
	for _, tt := range tests {
		if got := duration(tt.d, tt.ok); got != tt.want {
			t.Errorf("duration(%v, %v) = %q, want %q", tt.d, tt.ok, got, tt.want)
		}
	}
}

func TestTextWorkloadColumn(t *testing.T) {
	for _, tt := range []struct {
		w    *workload.Workload
		want string
	}{
		{nil, "?"},
		{&workload.Workload{Cgroup: "/"}, "/"},
		{&workload.Workload{Unit: "nginx.service"}, "nginx.service"},
		{&workload.Workload{PodNamespace: "shop", Pod: "cart", Container: "web"}, "shop/cart/web"},
		{&workload.Workload{PodNamespace: "payments", Pod: "checkout-7d9f5b6c4-x2x9z", Container: "envoy"}, "…t-7d9f5b6c4-x2x9z/envoy"},
	} {
		got := workloadColumn(tt.w)
		if got != tt.want || utf8.RuneCountInString(got) > workloadWidth {
			t.Errorf("%+v: %q, want %q", tt.w, got, tt.want)
		}
	}
}
