package tracer

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// ErrUnavailable wraps every error saying a backend cannot run on this kernel.
var ErrUnavailable = errors.New("backend not available")

// ErrNotImplemented wraps errors saying twtrace has no such backend for a hook yet.
var ErrNotImplemented = errors.New("backend not implemented")

// implemented reports whether twtrace has backend b for hook.
func implemented(hook Hook, b Backend) bool {
	for _, impl := range implementations[hook] {
		if impl.backend == b {
			return true
		}
	}
	return false
}

// Backend is a way of attaching to the kernel.
type Backend string

const (
	BackendAuto       Backend = "auto"
	BackendFentry     Backend = "fentry"
	BackendKprobe     Backend = "kprobe"
	BackendTracepoint Backend = "tracepoint"
)

// ParseBackend validates a --backend value.
func ParseBackend(s string) (Backend, error) {
	switch b := Backend(s); b {
	case BackendAuto, BackendFentry, BackendKprobe, BackendTracepoint:
		return b, nil
	}
	return "", fmt.Errorf("unknown backend %q (want auto, fentry, kprobe or tracepoint)", s)
}

// Hook is a group of kernel attach points serving one concern.
type Hook string

const (
	HookState    Hook = "state"    // sock:inet_sock_set_state
	HookTimewait Hook = "timewait" // timewait sockets: birth, re-arm, death
	HookReset    Hook = "reset"    // tcp:tcp_send_reset, tcp:tcp_receive_reset
)

// implementation is one backend's programs for a hook.
type implementation struct {
	backend  Backend
	programs []string
	needs    string // what the kernel must offer, for messages
	// optional programs add detail; each is used where the kernel has its function
	optional []string
}

// implementations lists, per hook, the backends in order of preference.
var implementations = map[Hook][]implementation{
	HookState: {
		{BackendTracepoint, []string{twtraceProgTpSetState}, "tp_btf/inet_sock_set_state", nil},
	},
	HookTimewait: {
		{BackendFentry, []string{twtraceProgFxTwskAlloc, twtraceProgFeTwskSchedule, twtraceProgFeTwTimerHandler, twtraceProgFeTwskKill},
			"fexit/inet_twsk_alloc, fentry/__inet_twsk_schedule, tw_timer_handler, inet_twsk_kill",
			[]string{twtraceProgFeTwSegment}},
		{BackendKprobe, []string{twtraceProgKpTwskAlloc, twtraceProgKrpTwskAlloc, twtraceProgKpTwskSchedule, twtraceProgKpTwTimerHandler, twtraceProgKpTwskKill},
			"kprobes on inet_twsk_alloc (and its return), __inet_twsk_schedule, tw_timer_handler, inet_twsk_kill",
			[]string{twtraceProgKpTwSegment}},
		{BackendTracepoint, []string{twtraceProgTpTimerStart, twtraceProgTpTimerCancel, twtraceProgTpTimerExpireEntry}, "tp_btf/timer_start, timer_cancel, timer_expire_entry", nil},
	},
	HookReset: {
		{BackendTracepoint, []string{twtraceProgTpSendReset, twtraceProgTpReceiveReset}, "tp_btf/tcp_send_reset, tcp_receive_reset", nil},
	},
}

// hooksFor returns the hooks the selected families need. Every family needs the
// state hook: it learns socket owners and joins the others. The connect family needs
// nothing else: a failed connect() is a SYN_SENT->CLOSE transition.
func hooksFor(fs Families) []Hook {
	hooks := []Hook{HookState}
	if fs&(FamilyState|FamilyTW|FamilyOverflow) != 0 {
		hooks = append(hooks, HookTimewait)
	}
	if fs&(FamilyReset|FamilyOverflow) != 0 {
		hooks = append(hooks, HookReset)
	}
	return hooks
}

// familiesNeeding returns the families of fs that cannot be traced without hook.
func familiesNeeding(fs Families, hook Hook) Families {
	var out Families
	for _, n := range familyNames {
		if fs&n.f != 0 && slices.Contains(hooksFor(n.f), hook) {
			out |= n.f
		}
	}
	return out
}

// Choice records which backend serves a hook, and why the others do not. Backend is
// "" when none can (with --backend auto, the families needing the hook go untraced).
type Choice struct {
	Hook        Hook
	Backend     Backend
	Programs    []string // the programs attached, optional ones included where the kernel allows
	Unavailable map[Backend]string
}

// MissingFamily is an event family that was asked for and that this kernel cannot
// deliver, because no backend could serve a hook it needs.
type MissingFamily struct {
	Family Families
	Hook   Hook
	Reason string
}

// unservable says why no candidate of hook could serve it, naming each one's failure.
func unservable(hook Hook, tried []implementation, why map[Backend]string) string {
	var parts []string
	for _, impl := range tried {
		parts = append(parts, string(impl.backend)+": "+why[impl.backend])
	}
	return fmt.Sprintf("no backend can serve hook %s here: %s", hook, strings.Join(parts, "; "))
}

// candidates returns the implementations of hook allowed by the forced backend, in order
// of preference. A hook with a single implementation (a tracepoint that every supported
// kernel has) uses it whatever is forced: --backend chooses among alternatives.
func candidates(hook Hook, forced Backend) ([]implementation, map[Backend]string) {
	why := map[Backend]string{}
	var out []implementation
	for _, impl := range implementations[hook] {
		if forced == BackendAuto || forced == impl.backend || len(implementations[hook]) == 1 {
			out = append(out, impl)
		} else {
			why[impl.backend] = "not selected (--backend " + string(forced) + ")"
		}
	}
	for _, b := range []Backend{BackendFentry, BackendKprobe, BackendTracepoint} {
		switch {
		case implemented(hook, b):
		case len(implementations[hook]) == 1:
			why[b] = "not needed: its tracepoint exists on every supported kernel"
		default:
			why[b] = "not implemented for this hook yet"
		}
	}
	return out, why
}
