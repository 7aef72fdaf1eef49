package tracer

import (
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// Kind is what an Event reports: enum event_kind in bpf/event.h.
type Kind uint8

const (
	KindState       = Kind(twtraceEventKindEV_STATE)
	KindTWEnter     = Kind(twtraceEventKindEV_TW_ENTER)
	KindTWRearm     = Kind(twtraceEventKindEV_TW_REARM)
	KindTWExit      = Kind(twtraceEventKindEV_TW_EXIT)
	KindTWOverflow  = Kind(twtraceEventKindEV_TW_OVERFLOW)
	KindReset       = Kind(twtraceEventKindEV_RESET)
	KindConnectFail = Kind(twtraceEventKindEV_CONNECT_FAIL)
)

var kindNames = [...]string{
	KindState:       "state",
	KindTWEnter:     "tw_enter",
	KindTWRearm:     "tw_rearm",
	KindTWExit:      "tw_exit",
	KindTWOverflow:  "tw_overflow",
	KindReset:       "reset",
	KindConnectFail: "connect_fail",
}

func (k Kind) String() string {
	if int(k) < len(kindNames) && kindNames[k] != "" {
		return kindNames[k]
	}
	return "unknown"
}

// Cause is how a timewait socket ended: enum tw_cause in bpf/event.h.
type Cause uint8

const (
	CauseExpired = Cause(twtraceTwCauseCAUSE_EXPIRED)
	CauseKilled  = Cause(twtraceTwCauseCAUSE_KILLED)
	// CauseUnseen: the socket is gone from the kernel's table (sock_diag) and no program
	// reported its death; Event.Lifetime bounds it.
	CauseUnseen = Cause(twtraceTwCauseCAUSE_UNSEEN)
)

var causeNames = [...]string{CauseExpired: "expired", CauseKilled: "killed", CauseUnseen: "unseen"}

func (c Cause) String() string {
	if int(c) < len(causeNames) && causeNames[c] != "" {
		return causeNames[c]
	}
	return "unknown"
}

// Detail says what killed a timewait socket early, where the backend can tell: enum
// tw_detail in bpf/event.h.
type Detail uint8

const (
	DetailNone      = Detail(twtraceTwDetailDETAIL_NONE)
	DetailSYN       = Detail(twtraceTwDetailDETAIL_SYN)
	DetailRST       = Detail(twtraceTwDetailDETAIL_RST)
	DetailReuse     = Detail(twtraceTwDetailDETAIL_REUSE)
	DetailNetnsExit = Detail(twtraceTwDetailDETAIL_NETNS_EXIT)
)

var detailNames = [...]string{DetailSYN: "syn", DetailRST: "rst", DetailReuse: "reuse", DetailNetnsExit: "netns_exit"}

// String returns the detail's name, or "" when there is none.
func (d Detail) String() string {
	if int(d) < len(detailNames) {
		return detailNames[d]
	}
	return ""
}

// Event is one decoded event. The tracer reuses one Event for every callback:
// copy what you keep.
type Event struct {
	Time   time.Time
	Kind   Kind
	Family uint8 // 4 or 6
	SAddr  netip.Addr
	DAddr  netip.Addr
	SPort  uint16 // local
	DPort  uint16 // remote
	NetNS  uint32
	// Cgroup is the socket's cgroup v2 id (the inode of its directory under the cgroup2 mount),
	// carried to its timewait socket; 0 when unknown (no socket, a timewait socket born before
	// tracing, or cgroup v1 data in its place).
	Cgroup   uint64
	PID      uint32
	Comm     [16]byte
	OwnerOK  bool
	OldState State // for resets: the socket's state; 0 when there was no socket
	NewState State

	// Duration is the time spent in OldState (state) or the timewait lifetime (tw_exit);
	// DurationOK is false when it is unknown.
	Duration   time.Duration
	DurationOK bool

	// LifetimeMin, LifetimeMax bound the lifetime of a death found by reconciliation
	// (cause unseen): alive when last listed, gone when first not; Duration is then unknown.
	LifetimeMin, LifetimeMax time.Duration

	Substate  State
	Timeout   time.Duration // tw_enter, tw_rearm: the timer the kernel armed
	TimeoutOK bool
	Cause     Cause
	Detail    Detail

	MaxBuckets uint32 // tw_overflow

	Recv         bool // reset received rather than sent
	NoSocket     bool // reset sent for a packet that matched no socket
	Reason       string
	ReasonKernel bool
	Unread       uint32 // unread bytes at a sent reset
	UnreadOK     bool

	// Errno is why a connect() failed (connect_fail); ErrnoOK is false when the kernel
	// left no trace of it (a failure inside connect() after a local port was found).
	Errno   syscall.Errno
	ErrnoOK bool
}

// ErrnoName names a connect_fail's errno as the kernel's headers do (EADDRNOTAVAIL), or
// "unknown" when the kernel left no trace of it.
func (e *Event) ErrnoName() string {
	if !e.ErrnoOK {
		return "unknown"
	}
	if name := unix.ErrnoName(e.Errno); name != "" {
		return name
	}
	return "errno " + strconv.Itoa(int(e.Errno))
}

// ParseErrno reads back a name ErrnoName gave; ok is false for one it never gives.
func ParseErrno(name string) (errno syscall.Errno, known, ok bool) {
	if name == "unknown" {
		return 0, false, true
	}
	if n, found := strings.CutPrefix(name, "errno "); found {
		v, err := strconv.Atoi(n)
		return syscall.Errno(v), true, err == nil && v > 0 && v < 1<<16
	}
	v, ok := errnoByName()[name]
	return v, ok, ok
}

var errnoByName = sync.OnceValue(func() map[string]syscall.Errno {
	m := map[string]syscall.Errno{}
	for v := syscall.Errno(1); v < 1<<12; v++ {
		if name := unix.ErrnoName(v); name != "" {
			m[name] = v
		}
	}
	return m
})

// CommString returns the owner's command name.
func (e *Event) CommString() string {
	n := 0
	for n < len(e.Comm) && e.Comm[n] != 0 {
		n++
	}
	return string(e.Comm[:n])
}
