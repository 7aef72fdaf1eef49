package tracer

import (
	"errors"
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

func (r resetReasons) name(v uint16, kernel bool) string {
	if !kernel {
		switch twtraceInferredReason(v) {
		case twtraceInferredReasonINFERRED_ABORT_ON_CLOSE:
			return "tcp_abort_on_close"
		case twtraceInferredReasonINFERRED_TCP_STATE:
			return "tcp_state"
		}
		return "not_specified"
	}
	if int(v) < len(r) && r[v] != "" {
		return r[v]
	}
	return "unknown(" + itoa(int(v)) + ")"
}

var errNoBTF = errors.New("this kernel has no BTF (/sys/kernel/btf/vmlinux is missing): twtrace needs Linux 5.10 or newer built with CONFIG_DEBUG_INFO_BTF=y")
