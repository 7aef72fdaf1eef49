package tracer

import (
	"errors"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/cilium/ebpf/btf"
)

// resetReasons maps a kernel reset reason to the lower-case name users see,
// read from this kernel's own enum sk_rst_reason so values never drift.
type resetReasons []string

func loadResetReasons(kernel *btf.Spec) resetReasons {
	var e *btf.Enum
	if kernel == nil || kernel.TypeByName("sk_rst_reason", &e) != nil {
		return nil
	}
	var names resetReasons
	for _, v := range e.Values {
		if v.Value >= 1<<16 {
			continue
		}
		for uint64(len(names)) <= v.Value {
			names = append(names, "")
		}
		names[v.Value] = strings.ToLower(strings.TrimPrefix(v.Name, "SK_RST_REASON_"))
	}
	return names
}

// inferredReasons name the reasons inferred where the kernel gives none as the kernel
// names the same reasons (enum sk_rst_reason, 6.10+).
var inferredReasons = map[twtraceInferredReason]string{
	twtraceInferredReasonINFERRED_NOT_SPECIFIED:  "not_specified",
	twtraceInferredReasonINFERRED_ABORT_ON_CLOSE: "tcp_abort_on_close",
	twtraceInferredReasonINFERRED_TCP_STATE:      "tcp_state",
}

func (r resetReasons) name(v uint16, kernel bool) string {
	if !kernel {
		if name, ok := inferredReasons[twtraceInferredReason(v)]; ok {
			return name
		}
		return "not_specified"
	}
	if int(v) < len(r) && r[v] != "" {
		return r[v]
	}
	return "unknown(" + strconv.Itoa(int(v)) + ")"
}

// known lists, sorted, every reason a sent reset can carry here: the kernel's (but its
// count, "max") where the tracepoint reports them, the inferred ones otherwise. A value
// this kernel's enum lacks would still show, as unknown(n).
func (r resetReasons) known() []string {
	var names []string
	if len(r) == 0 {
		names = slices.Collect(maps.Values(inferredReasons))
	}
	for _, n := range r {
		if n != "" && n != "max" {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// ResetReasons lists, sorted, the reasons a sent reset can carry on this kernel (the
// Reason of a KindReset Event): enum sk_rst_reason's names where the kernel reports them
// (6.10+), the reasons twtrace infers before that.
func (t *Tracer) ResetReasons() []string { return t.dec.reasons.known() }

var errNoBTF = errors.New("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): twtrace needs Linux 5.10 or newer built with CONFIG_DEBUG_INFO_BTF=y")
