package tracer

import (
	"bytes"
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"testing"
	"time"
)

// unitBoot is the Decoder's BootWall in every unit test.
var unitBoot = time.Date(2024, 5, 6, 7, 8, 9, 0, time.UTC)

// unitReasons stands in for the kernel's enum sk_rst_reason: index 5 is a hole.
var unitReasons = resetReasons{
	0:  "not_specified",
	1:  "no_socket",
	11: "tcp_abort_on_close",
}

func unitDecoder(hz uint32) *Decoder {
	return &Decoder{BootWall: unitBoot, HZ: hz, reasons: unitReasons}
}

// unitRecord serialises ev the way the kernel writes it into the ring buffer.
func unitRecord(tb testing.TB, ev twtraceEvent) []byte {
	tb.Helper()
	var buf bytes.Buffer
	if err := binary.Write(&buf, binary.LittleEndian, ev); err != nil {
		tb.Fatalf("binary.Write: %v", err)
	}
	if buf.Len() != RecordSize {
		tb.Fatalf("serialised record is %d bytes, RecordSize is %d", buf.Len(), RecordSize)
	}
	return buf.Bytes()
}

func unitAddr16(s string) [16]uint8 {
	a := netip.MustParseAddr(s)
	var out [16]uint8
	if a.Is4() {
		b := a.As4()
		copy(out[:], b[:])
		return out
	}
	return a.As16()
}

func unitComm(s string) [16]int8 {
	var out [16]int8
	for i := 0; i < len(s) && i < 15; i++ {
		out[i] = int8(s[i])
	}
	return out
}

func unitCommBytes(s string) [16]byte {
	var out [16]byte
	copy(out[:15], s)
	return out
}

// unitBase is a valid IPv4 record of the given kind: 10.0.0.1:8080 -> 10.0.0.2:443 in netns 4026531840,
// cgroup 5706.
func unitBase(kind Kind) twtraceEvent {
	return twtraceEvent{
		TsNs:   1_500_000_000,
		Cgroup: 5706,
		Netns:  4026531840,
		Sport:  8080,
		Dport:  443,
		Saddr:  unitAddr16("10.0.0.1"),
		Daddr:  unitAddr16("10.0.0.2"),
		Kind:   uint8(kind),
		Family: 4,
	}
}

func unitWith(ev twtraceEvent, mod func(*twtraceEvent)) twtraceEvent {
	mod(&ev)
	return ev
}

// unitWant is the Event unitBase decodes to; mod adjusts it per case.
func unitWant(kind Kind, mod func(*Event)) Event {
	e := Event{
		Time:   unitBoot.Add(1500 * time.Millisecond),
		Kind:   kind,
		Family: 4,
		SAddr:  netip.MustParseAddr("10.0.0.1"),
		DAddr:  netip.MustParseAddr("10.0.0.2"),
		SPort:  8080,
		DPort:  443,
		NetNS:  4026531840,
		Cgroup: 5706,
	}
	if mod != nil {
		mod(&e)
	}
	return e
}

const (
	unitFlagDuration = uint8(twtraceEventFlagF_DURATION_KNOWN)
	unitFlagOwner    = uint8(twtraceEventFlagF_OWNER_KNOWN)
	unitFlagKernel   = uint8(twtraceEventFlagF_REASON_KERNEL)
	unitFlagRecv     = uint8(twtraceEventFlagF_RESET_RECV)
	unitFlagValue    = uint8(twtraceEventFlagF_VALUE_KNOWN)
	unitFlagNoSocket = uint8(twtraceEventFlagF_NO_SOCKET)
)

func TestDecodeRecordSizeMatchesLayout(t *testing.T) {
	if got := binary.Size(twtraceEvent{}); got != RecordSize {
		t.Fatalf("binary.Size(twtraceEvent) = %d, RecordSize = %d", got, RecordSize)
	}
	if RecordSize != 104 {
		t.Fatalf("RecordSize = %d, want 104 (struct event in bpf/event.h)", RecordSize)
	}
}

func TestDecode(t *testing.T) {
	tests := []struct {
		name string
		hz   uint32
		ev   twtraceEvent
		want Event
	}{
		{
			name: "state ipv4 owner and duration unknown",
			ev: unitWith(unitBase(KindState), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState = uint8(StateSynSent), uint8(StateEstablished)
				ev.Pid, ev.Comm, ev.DurationNs = 99, unitComm("ignored"), 12345 // flags say unknown
			}),
			want: unitWant(KindState, func(e *Event) { e.OldState, e.NewState = StateSynSent, StateEstablished }),
		},
		{
			name: "state ipv4 owner and duration known",
			ev: unitWith(unitBase(KindState), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState = uint8(StateEstablished), uint8(StateFinWait1)
				ev.Pid, ev.Comm, ev.DurationNs = 4242, unitComm("curl"), 3_500
				ev.Flags = unitFlagOwner | unitFlagDuration
			}),
			want: unitWant(KindState, func(e *Event) {
				e.OldState, e.NewState = StateEstablished, StateFinWait1
				e.PID, e.Comm, e.OwnerOK = 4242, unitCommBytes("curl"), true
				e.Duration, e.DurationOK = 3500*time.Nanosecond, true
			}),
		},
		{
			name: "state ipv4 full 15-byte comm",
			ev: unitWith(unitBase(KindState), func(ev *twtraceEvent) {
				ev.Pid, ev.Comm, ev.Flags = 1, unitComm("abcdefghijklmno"), unitFlagOwner
			}),
			want: unitWant(KindState, func(e *Event) {
				e.PID, e.Comm, e.OwnerOK = 1, unitCommBytes("abcdefghijklmno"), true
			}),
		},
		{
			name: "state ipv6",
			ev: unitWith(unitBase(KindState), func(ev *twtraceEvent) {
				ev.Family = 6
				ev.Saddr, ev.Daddr = unitAddr16("2001:db8::1"), unitAddr16("fe80::dead:beef")
				ev.Sport, ev.Dport, ev.Netns = 1, 65535, 0xffffffff
				ev.OldState, ev.NewState = uint8(StateListen), uint8(StateClose)
			}),
			want: unitWant(KindState, func(e *Event) {
				e.Family = 6
				e.SAddr, e.DAddr = netip.MustParseAddr("2001:db8::1"), netip.MustParseAddr("fe80::dead:beef")
				e.SPort, e.DPort, e.NetNS = 1, 65535, 0xffffffff
				e.OldState, e.NewState = StateListen, StateClose
			}),
		},
		{
			name: "state ipv4-mapped ipv6 stays 16 bytes",
			ev: unitWith(unitBase(KindState), func(ev *twtraceEvent) {
				ev.Family = 6
				ev.Saddr, ev.Daddr = unitAddr16("::ffff:10.0.0.1"), unitAddr16("::1")
			}),
			want: unitWant(KindState, func(e *Event) {
				e.Family = 6
				e.SAddr, e.DAddr = netip.MustParseAddr("::ffff:10.0.0.1"), netip.MustParseAddr("::1")
			}),
		},
		{
			name: "tw_enter timeout from jiffies at HZ=250",
			hz:   250,
			ev: unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState, ev.Substate = uint8(StateFinWait2), uint8(StateTimeWait), uint8(StateTimeWait)
				ev.Value, ev.Flags = 15000, unitFlagValue|unitFlagOwner
				ev.Pid, ev.Comm = 7, unitComm("nginx")
			}),
			want: unitWant(KindTWEnter, func(e *Event) {
				e.OldState, e.NewState, e.Substate = StateFinWait2, StateTimeWait, StateTimeWait
				e.Timeout, e.TimeoutOK = 60*time.Second, true
				e.PID, e.Comm, e.OwnerOK = 7, unitCommBytes("nginx"), true
			}),
		},
		{
			name: "tw_enter timeout from jiffies at HZ=1000",
			hz:   1000,
			ev: unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
				ev.Substate, ev.Value, ev.Flags = uint8(StateFinWait2), 1500, unitFlagValue
			}),
			want: unitWant(KindTWEnter, func(e *Event) {
				e.Substate, e.Timeout, e.TimeoutOK = StateFinWait2, 1500*time.Millisecond, true
			}),
		},
		{
			name: "tw_enter HZ=0 leaves timeout unknown",
			hz:   0,
			ev: unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
				ev.Substate, ev.Value, ev.Flags = uint8(StateTimeWait), 15000, unitFlagValue
			}),
			want: unitWant(KindTWEnter, func(e *Event) { e.Substate = StateTimeWait }),
		},
		{
			name: "tw_enter value unknown leaves timeout unknown",
			hz:   250,
			ev: unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
				ev.Substate, ev.Value = uint8(StateTimeWait), 15000
			}),
			want: unitWant(KindTWEnter, func(e *Event) { e.Substate = StateTimeWait }),
		},
		{
			name: "tw_enter timer already due is a negative timeout",
			hz:   250,
			ev: unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
				ev.Substate, ev.Value, ev.Flags = uint8(StateTimeWait), 0xffffffff, unitFlagValue // -1 jiffy
			}),
			want: unitWant(KindTWEnter, func(e *Event) {
				e.Substate, e.Timeout, e.TimeoutOK = StateTimeWait, -4*time.Millisecond, true
			}),
		},
		{
			name: "tw_rearm timeout from jiffies at HZ=250",
			hz:   250,
			ev: unitWith(unitBase(KindTWRearm), func(ev *twtraceEvent) {
				ev.Substate, ev.Value, ev.Flags = uint8(StateTimeWait), 250, unitFlagValue
			}),
			want: unitWant(KindTWRearm, func(e *Event) {
				e.Substate, e.Timeout, e.TimeoutOK = StateTimeWait, time.Second, true
			}),
		},
		{
			name: "tw_exit expired with lifetime",
			hz:   250,
			ev: unitWith(unitBase(KindTWExit), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState, ev.Substate = uint8(StateTimeWait), uint8(StateClose), uint8(StateTimeWait)
				ev.Cause, ev.DurationNs, ev.Flags = uint8(CauseExpired), 60_312_000_000, unitFlagDuration
				ev.Value = 15000 // not a timeout for tw_exit
			}),
			want: unitWant(KindTWExit, func(e *Event) {
				e.OldState, e.NewState, e.Substate = StateTimeWait, StateClose, StateTimeWait
				e.Cause, e.Duration, e.DurationOK = CauseExpired, 60312*time.Millisecond, true
			}),
		},
		{
			name: "tw_exit killed by netns exit, lifetime unknown",
			ev: unitWith(unitBase(KindTWExit), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState, ev.Substate = uint8(StateTimeWait), uint8(StateClose), uint8(StateFinWait2)
				ev.Cause, ev.Detail = uint8(CauseKilled), uint8(DetailNetnsExit)
			}),
			want: unitWant(KindTWExit, func(e *Event) {
				e.OldState, e.NewState, e.Substate = StateTimeWait, StateClose, StateFinWait2
				e.Cause, e.Detail = CauseKilled, DetailNetnsExit
			}),
		},
		{
			name: "tw_overflow max buckets",
			ev: unitWith(unitBase(KindTWOverflow), func(ev *twtraceEvent) {
				ev.Substate, ev.Value, ev.Flags = uint8(StateTimeWait), 262144, unitFlagValue
			}),
			want: unitWant(KindTWOverflow, func(e *Event) { e.Substate, e.MaxBuckets = StateTimeWait, 262144 }),
		},
		{
			name: "reset sent kernel reason with unread bytes",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason, ev.Value = uint8(StateEstablished), 11, 10
				ev.Flags = unitFlagKernel | unitFlagValue | unitFlagOwner
				ev.Pid, ev.Comm = 31337, unitComm("server")
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.ReasonKernel = StateEstablished, "tcp_abort_on_close", true
				e.Unread, e.UnreadOK = 10, true
				e.PID, e.Comm, e.OwnerOK = 31337, unitCommBytes("server"), true
			}),
		},
		{
			name: "reset sent kernel reason zero",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason, ev.Flags = uint8(StateSynRecv), 0, unitFlagKernel
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.ReasonKernel = StateSynRecv, "not_specified", true
			}),
		},
		{
			name: "reset sent kernel reason in a hole of the table",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason, ev.Flags = uint8(StateEstablished), 5, unitFlagKernel
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.ReasonKernel = StateEstablished, "unknown(5)", true
			}),
		},
		{
			name: "reset sent kernel reason past the table",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason, ev.Flags = uint8(StateEstablished), 40, unitFlagKernel
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.ReasonKernel = StateEstablished, "unknown(40)", true
			}),
		},
		{
			name: "reset sent inferred not_specified",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason = uint8(StateEstablished), uint16(twtraceInferredReasonINFERRED_NOT_SPECIFIED)
			}),
			want: unitWant(KindReset, func(e *Event) { e.OldState, e.Reason = StateEstablished, "not_specified" }),
		},
		{
			name: "reset sent inferred abort on close",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason = uint8(StateCloseWait), uint16(twtraceInferredReasonINFERRED_ABORT_ON_CLOSE)
				ev.Value, ev.Flags = 4096, unitFlagValue
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.Unread, e.UnreadOK = StateCloseWait, "tcp_abort_on_close", 4096, true
			}),
		},
		{
			name: "reset sent inferred tcp_state",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason = uint8(StateEstablished), uint16(twtraceInferredReasonINFERRED_TCP_STATE)
			}),
			want: unitWant(KindReset, func(e *Event) { e.OldState, e.Reason = StateEstablished, "tcp_state" }),
		},
		{
			name: "reset sent inferred value outside the inferred range",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason = uint8(StateEstablished), 11 // kernel value but no F_REASON_KERNEL
			}),
			want: unitWant(KindReset, func(e *Event) { e.OldState, e.Reason = StateEstablished, "not_specified" }),
		},
		{
			name: "reset sent kernel flag with an inferred value",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Flags = uint8(StateEstablished), unitFlagKernel
				ev.Reason = uint16(twtraceInferredReasonINFERRED_ABORT_ON_CLOSE)
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.OldState, e.Reason, e.ReasonKernel = StateEstablished, "unknown(65281)", true
			}),
		},
		{
			name: "reset received has no reason",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.OldState, ev.Reason = uint8(StateSynSent), 11
				ev.Flags = unitFlagRecv | unitFlagKernel
			}),
			want: unitWant(KindReset, func(e *Event) { e.OldState, e.Recv = StateSynSent, true }),
		},
		{
			name: "reset sent for no socket",
			ev: unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
				ev.Family = 6
				ev.Saddr, ev.Daddr = unitAddr16("::1"), unitAddr16("::1")
				ev.Reason, ev.Flags = 1, unitFlagNoSocket|unitFlagKernel
			}),
			want: unitWant(KindReset, func(e *Event) {
				e.Family = 6
				e.SAddr, e.DAddr = netip.MustParseAddr("::1"), netip.MustParseAddr("::1")
				e.NoSocket, e.Reason, e.ReasonKernel = true, "no_socket", true
			}),
		},
		{
			name: "connect failed with a known errno",
			ev: unitWith(unitBase(KindConnectFail), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState, ev.Value, ev.Flags = uint8(StateSynSent), uint8(StateClose), 99, unitFlagValue
			}),
			want: unitWant(KindConnectFail, func(e *Event) {
				e.OldState, e.NewState, e.Errno, e.ErrnoOK = StateSynSent, StateClose, syscall.EADDRNOTAVAIL, true
			}),
		},
		{
			name: "connect failed with an unknown errno",
			ev: unitWith(unitBase(KindConnectFail), func(ev *twtraceEvent) {
				ev.OldState, ev.NewState, ev.Value = uint8(StateSynSent), uint8(StateClose), 111
			}),
			want: unitWant(KindConnectFail, func(e *Event) { e.OldState, e.NewState = StateSynSent, StateClose }),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			raw := unitRecord(t, tt.ev)
			var got Event
			if err := unitDecoder(tt.hz).Decode(raw, &got); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got != tt.want {
				t.Errorf("Decode:\n got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestDecodeOverwritesPreviousEvent(t *testing.T) {
	stale := unitWant(KindReset, func(e *Event) {
		e.OwnerOK, e.PID, e.Comm = true, 9, unitCommBytes("stale")
		e.Reason, e.ReasonKernel, e.Recv, e.NoSocket = "stale", true, true, true
		e.TimeoutOK, e.DurationOK, e.UnreadOK = true, true, true
	})
	got := stale
	if err := unitDecoder(250).Decode(unitRecord(t, unitBase(KindState)), &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if want := unitWant(KindState, nil); got != want {
		t.Errorf("Decode into a used Event:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeIgnoresTrailingBytes(t *testing.T) {
	raw := append(unitRecord(t, unitBase(KindState)), 0xff, 0xff, 0xff, 0xff)
	var got Event
	if err := unitDecoder(0).Decode(raw, &got); err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if want := unitWant(KindState, nil); got != want {
		t.Errorf("Decode:\n got %+v\nwant %+v", got, want)
	}
}

func TestDecodeTruncated(t *testing.T) {
	full := unitRecord(t, unitBase(KindState))
	for n := 0; n < RecordSize; n++ {
		var e Event
		if err := unitDecoder(250).Decode(full[:n], &e); !errors.Is(err, ErrCorruptRecord) {
			t.Errorf("Decode(%d bytes) = %v, want ErrCorruptRecord", n, err)
		}
	}
	var e Event
	if err := unitDecoder(250).Decode(nil, &e); !errors.Is(err, ErrCorruptRecord) {
		t.Errorf("Decode(nil) = %v, want ErrCorruptRecord", err)
	}
}

func TestDecodeBadKindOrFamily(t *testing.T) {
	tests := []struct {
		name   string
		kind   uint8
		family uint8
	}{
		{"kind 0", 0, 4},
		{"kind 8", 8, 4},
		{"kind 255", 255, 6},
		{"family 0", uint8(KindState), 0},
		{"family 5", uint8(KindReset), 5},
		{"family 2 (AF_INET)", uint8(KindState), 2},
		{"family 10 (AF_INET6)", uint8(KindState), 10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ev := unitBase(KindState)
			ev.Kind, ev.Family = tt.kind, tt.family
			var e Event
			if err := unitDecoder(250).Decode(unitRecord(t, ev), &e); !errors.Is(err, ErrCorruptRecord) {
				t.Errorf("Decode = %v, want ErrCorruptRecord", err)
			}
		})
	}
}

func TestDecodeAllocs(t *testing.T) {
	records := map[string][]byte{
		"state": unitRecord(t, unitWith(unitBase(KindState), func(ev *twtraceEvent) {
			ev.Flags, ev.Pid, ev.Comm = unitFlagOwner|unitFlagDuration, 1, unitComm("curl")
		})),
		"tw_enter": unitRecord(t, unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
			ev.Flags, ev.Value = unitFlagValue, 15000
		})),
		"reset kernel reason": unitRecord(t, unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
			ev.Flags, ev.Reason = unitFlagKernel, 11
		})),
	}
	d := unitDecoder(250)
	for name, raw := range records {
		var e Event
		allocs := testing.AllocsPerRun(100, func() {
			if err := d.Decode(raw, &e); err != nil {
				t.Fatal(err)
			}
		})
		if allocs != 0 {
			t.Errorf("Decode(%s) allocates %v times per record, want 0", name, allocs)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(unitRecord(f, unitBase(KindState)))
	f.Add(unitRecord(f, unitWith(unitBase(KindTWEnter), func(ev *twtraceEvent) {
		ev.Family, ev.Flags, ev.Value = 6, unitFlagValue|unitFlagOwner, 0xffffffff
	})))
	f.Add(unitRecord(f, unitWith(unitBase(KindReset), func(ev *twtraceEvent) {
		ev.Flags, ev.Reason = unitFlagKernel, 0xffff
	})))
	f.Add(unitRecord(f, unitWith(unitBase(KindState), func(ev *twtraceEvent) { ev.Kind = 0 })))
	f.Add(unitRecord(f, unitWith(unitBase(KindState), func(ev *twtraceEvent) { ev.Family = 5 })))
	f.Add(unitRecord(f, unitBase(KindState))[:RecordSize-1])
	f.Add([]byte{})
	d := unitDecoder(250)
	f.Fuzz(func(t *testing.T, raw []byte) {
		var e Event
		err := d.Decode(raw, &e)
		if err != nil {
			if !errors.Is(err, ErrCorruptRecord) {
				t.Fatalf("Decode error %v is not ErrCorruptRecord", err)
			}
			return
		}
		if e.Kind < KindState || e.Kind > KindReset {
			t.Errorf("Decode accepted kind %d", e.Kind)
		}
		if e.Family != 4 && e.Family != 6 {
			t.Errorf("Decode accepted family %d", e.Family)
		}
		if e.Family == 4 && (!e.SAddr.Is4() || !e.DAddr.Is4()) {
			t.Errorf("family 4 with addresses %v, %v", e.SAddr, e.DAddr)
		}
		if e.Family == 6 && (!e.SAddr.Is6() || !e.DAddr.Is6()) {
			t.Errorf("family 6 with addresses %v, %v", e.SAddr, e.DAddr)
		}
	})
}

func BenchmarkDecode(b *testing.B) {
	raw := unitRecord(b, unitWith(unitBase(KindState), func(ev *twtraceEvent) {
		ev.Flags, ev.Pid, ev.Comm = unitFlagOwner|unitFlagDuration, 1, unitComm("curl")
	}))
	d := unitDecoder(250)
	var e Event
	b.ReportAllocs()
	b.SetBytes(int64(len(raw)))
	for b.Loop() {
		if err := d.Decode(raw, &e); err != nil {
			b.Fatal(err)
		}
	}
}

// unitCall is what a Dispatch callback saw.
type unitCall struct {
	Kind     Kind
	OldState State
	NewState State
}

func TestDispatch(t *testing.T) {
	twEnter := func(ev *twtraceEvent) {
		ev.OldState, ev.NewState, ev.Substate = uint8(StateFinWait2), uint8(StateTimeWait), uint8(StateTimeWait)
	}
	twExit := func(ev *twtraceEvent) {
		ev.OldState, ev.NewState, ev.Substate = uint8(StateTimeWait), uint8(StateClose), uint8(StateTimeWait)
		ev.Cause = uint8(CauseExpired)
	}
	stateChange := func(ev *twtraceEvent) {
		ev.OldState, ev.NewState = uint8(StateEstablished), uint8(StateFinWait1)
	}
	none := func(*twtraceEvent) {}
	var (
		enterAsState = unitCall{KindState, StateFinWait2, StateTimeWait}
		enterAsTW    = unitCall{KindTWEnter, StateFinWait2, StateTimeWait}
		exitAsState  = unitCall{KindState, StateTimeWait, StateClose}
		exitAsTW     = unitCall{KindTWExit, StateTimeWait, StateClose}
		state        = unitCall{KindState, StateEstablished, StateFinWait1}
	)
	others := FamilyOverflow | FamilyReset
	tests := []struct {
		name string
		kind Kind
		mod  func(*twtraceEvent)
		fs   Families
		want []unitCall
	}{
		{"tw_enter state only", KindTWEnter, twEnter, FamilyState, []unitCall{enterAsState}},
		{"tw_enter tw only", KindTWEnter, twEnter, FamilyTW, []unitCall{enterAsTW}},
		{"tw_enter both", KindTWEnter, twEnter, FamilyState | FamilyTW, []unitCall{enterAsState, enterAsTW}},
		{"tw_enter all", KindTWEnter, twEnter, AllFamilies, []unitCall{enterAsState, enterAsTW}},
		{"tw_enter neither", KindTWEnter, twEnter, others, nil},
		{"tw_exit state only", KindTWExit, twExit, FamilyState, []unitCall{exitAsState}},
		{"tw_exit tw only", KindTWExit, twExit, FamilyTW, []unitCall{exitAsTW}},
		{"tw_exit both", KindTWExit, twExit, FamilyState | FamilyTW, []unitCall{exitAsState, exitAsTW}},
		{"tw_exit neither", KindTWExit, twExit, others, nil},
		{"state with state", KindState, stateChange, FamilyState, []unitCall{state}},
		{"state without state", KindState, stateChange, AllFamilies &^ FamilyState, nil},
		{"rearm with tw", KindTWRearm, none, FamilyTW, []unitCall{{Kind: KindTWRearm}}},
		{"rearm without tw", KindTWRearm, none, AllFamilies &^ FamilyTW, nil},
		{"overflow with overflow", KindTWOverflow, none, FamilyOverflow, []unitCall{{Kind: KindTWOverflow}}},
		{"overflow without overflow", KindTWOverflow, none, AllFamilies &^ FamilyOverflow, nil},
		{"reset with reset", KindReset, stateChange, FamilyReset, []unitCall{{KindReset, StateEstablished, StateFinWait1}}},
		{"reset without reset", KindReset, stateChange, AllFamilies &^ FamilyReset, nil},
		{"no families", KindTWEnter, twEnter, 0, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var e Event
			if err := unitDecoder(250).Decode(unitRecord(t, unitWith(unitBase(tt.kind), tt.mod)), &e); err != nil {
				t.Fatalf("Decode: %v", err)
			}
			var got []unitCall
			Dispatch(&e, tt.fs, func(e *Event) { got = append(got, unitCall{e.Kind, e.OldState, e.NewState}) })
			if len(got) != len(tt.want) {
				t.Fatalf("Dispatch(%v) called back %+v, want %+v", tt.fs, got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("Dispatch(%v) call %d = %+v, want %+v", tt.fs, i, got[i], tt.want[i])
				}
			}
			if e.Kind != tt.kind {
				t.Errorf("after Dispatch, Kind = %v, want %v restored", e.Kind, tt.kind)
			}
		})
	}
}
