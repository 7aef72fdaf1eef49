package tracer

import (
	"encoding/binary"
	"errors"
	"net/netip"
	"syscall"
	"time"
	"unsafe"
)

// Offsets come from the bpf2go-generated struct, so the C layout is the only definition.
var (
	offTs       = unsafe.Offsetof(twtraceEvent{}.TsNs)
	offDuration = unsafe.Offsetof(twtraceEvent{}.DurationNs)
	offCgroup   = unsafe.Offsetof(twtraceEvent{}.Cgroup)
	offNetns    = unsafe.Offsetof(twtraceEvent{}.Netns)
	offPid      = unsafe.Offsetof(twtraceEvent{}.Pid)
	offValue    = unsafe.Offsetof(twtraceEvent{}.Value)
	offSport    = unsafe.Offsetof(twtraceEvent{}.Sport)
	offDport    = unsafe.Offsetof(twtraceEvent{}.Dport)
	offSaddr    = unsafe.Offsetof(twtraceEvent{}.Saddr)
	offDaddr    = unsafe.Offsetof(twtraceEvent{}.Daddr)
	offComm     = unsafe.Offsetof(twtraceEvent{}.Comm)
	offKind     = unsafe.Offsetof(twtraceEvent{}.Kind)
	offFamily   = unsafe.Offsetof(twtraceEvent{}.Family)
	offOld      = unsafe.Offsetof(twtraceEvent{}.OldState)
	offNew      = unsafe.Offsetof(twtraceEvent{}.NewState)
	offSubstate = unsafe.Offsetof(twtraceEvent{}.Substate)
	offCause    = unsafe.Offsetof(twtraceEvent{}.Cause)
	offDetail   = unsafe.Offsetof(twtraceEvent{}.Detail)
	offFlags    = unsafe.Offsetof(twtraceEvent{}.Flags)
	offReason   = unsafe.Offsetof(twtraceEvent{}.Reason)
)

// RecordSize is the size of one ring buffer record.
const RecordSize = int(unsafe.Sizeof(twtraceEvent{}))

// ErrCorruptRecord is returned for a record that is truncated or holds impossible values.
var ErrCorruptRecord = errors.New("corrupt ring buffer record")

// Decoder turns raw ring buffer records into Events.
type Decoder struct {
	// BootWall is the wall-clock time at CLOCK_MONOTONIC zero.
	BootWall time.Time
	// HZ converts timer jiffies to durations; 0 leaves timeouts unknown.
	HZ      uint32
	reasons resetReasons
}

// Decode fills e from raw. It allocates nothing.
func (d *Decoder) Decode(raw []byte, e *Event) error {
	if len(raw) < RecordSize {
		return ErrCorruptRecord
	}
	le := binary.LittleEndian
	kind := Kind(raw[offKind])
	family := raw[offFamily]
	if kind < KindState || kind > KindConnectFail || (family != 4 && family != 6) {
		return ErrCorruptRecord
	}
	flags := twtraceEventFlag(raw[offFlags])
	*e = Event{
		Time:     d.BootWall.Add(time.Duration(le.Uint64(raw[offTs:]))),
		Kind:     kind,
		Family:   family,
		SPort:    le.Uint16(raw[offSport:]),
		DPort:    le.Uint16(raw[offDport:]),
		NetNS:    le.Uint32(raw[offNetns:]),
		Cgroup:   le.Uint64(raw[offCgroup:]),
		OldState: State(raw[offOld]),
		NewState: State(raw[offNew]),
		Substate: State(raw[offSubstate]),
		Cause:    Cause(raw[offCause]),
		Detail:   Detail(raw[offDetail]),
	}
	if family == 4 {
		e.SAddr = netip.AddrFrom4([4]byte(raw[offSaddr : offSaddr+4]))
		e.DAddr = netip.AddrFrom4([4]byte(raw[offDaddr : offDaddr+4]))
	} else {
		e.SAddr = netip.AddrFrom16([16]byte(raw[offSaddr : offSaddr+16]))
		e.DAddr = netip.AddrFrom16([16]byte(raw[offDaddr : offDaddr+16]))
	}
	if flags&twtraceEventFlagF_OWNER_KNOWN != 0 {
		e.OwnerOK = true
		e.PID = le.Uint32(raw[offPid:])
		copy(e.Comm[:], raw[offComm:offComm+uintptr(len(e.Comm))])
	}
	if flags&twtraceEventFlagF_DURATION_KNOWN != 0 {
		e.DurationOK = true
		e.Duration = time.Duration(le.Uint64(raw[offDuration:]))
	}
	value := le.Uint32(raw[offValue:])
	valueOK := flags&twtraceEventFlagF_VALUE_KNOWN != 0
	switch kind {
	case KindTWEnter, KindTWRearm:
		if valueOK && d.HZ != 0 {
			e.TimeoutOK = true
			e.Timeout = time.Duration(int32(value)) * time.Second / time.Duration(d.HZ)
		}
	case KindTWOverflow:
		e.MaxBuckets = value
	case KindReset:
		e.Recv = flags&twtraceEventFlagF_RESET_RECV != 0
		e.NoSocket = flags&twtraceEventFlagF_NO_SOCKET != 0
		e.Unread, e.UnreadOK = value, valueOK
		if !e.Recv {
			e.ReasonKernel = flags&twtraceEventFlagF_REASON_KERNEL != 0
			e.Reason = d.reasons.name(le.Uint16(raw[offReason:]), e.ReasonKernel)
		}
	case KindConnectFail:
		if valueOK {
			e.Errno, e.ErrnoOK = syscall.Errno(value), true
		}
	}
	return nil
}

// Dispatch hands fn the user-visible events one record stands for, in the selected
// families: a hand-off record is both FIN_WAIT2->TIME_WAIT and tw_enter, a timewait
// death both tw_exit and TIME_WAIT->CLOSE. e is modified.
func Dispatch(e *Event, fs Families, fn func(*Event)) {
	switch e.Kind {
	case KindState:
		if fs&FamilyState != 0 {
			fn(e)
		}
	case KindTWEnter, KindTWExit:
		kind := e.Kind
		if fs&FamilyState != 0 {
			e.Kind = KindState
			fn(e)
			e.Kind = kind
		}
		if fs&FamilyTW != 0 {
			fn(e)
		}
	case KindTWRearm:
		if fs&FamilyTW != 0 {
			fn(e)
		}
	case KindTWOverflow:
		if fs&FamilyOverflow != 0 {
			fn(e)
		}
	case KindReset:
		if fs&FamilyReset != 0 {
			fn(e)
		}
	case KindConnectFail:
		if fs&FamilyConnect != 0 {
			fn(e)
		}
	}
}
