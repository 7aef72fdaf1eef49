package tracer

import (
	"os"
	"strings"

	"github.com/cilium/ebpf"
)

// testHideEnv names kernel functions and tracepoints (comma-separated) that twtrace
// treats as missing: a test seam for kernels without them. It can only take features
// away: a hidden target's programs fail to load or attach for real, as they would there.
const testHideEnv = "TWTRACE_TEST_HIDE"

// hiddenPrefix turns an attach target into a name no kernel has.
const hiddenPrefix = "twtrace_test_hidden_"

func hiddenFromEnv() map[string]bool {
	hidden := map[string]bool{}
	for _, name := range strings.Split(os.Getenv(testHideEnv), ",") {
		if name = strings.TrimSpace(name); name != "" {
			hidden[name] = true
		}
	}
	return hidden
}

// hide points the programs attached to a hidden target at a missing one.
func hide(spec *ebpf.CollectionSpec, hidden map[string]bool) {
	for _, p := range spec.Programs {
		if hidden[p.AttachTo] {
			p.AttachTo = hiddenPrefix + p.AttachTo
		}
	}
}
