package tracer

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"testing"
)

// -backend forces a backend, as --backend does for users; the kernel matrix runs
// the suite once per backend.
var testBackend = flag.String("backend", "auto", "backend the integration tests force: auto, fentry, kprobe or tracepoint")

// exitUnavailable tells the kernel matrix that the forced backend cannot run here.
const exitUnavailable = 3

// exitNotImplemented: twtrace has no such backend yet (the matrix must not call that "not available").
const exitNotImplemented = 4

func TestMain(m *testing.M) {
	flag.Parse()
	if role := os.Getenv(childEnv); role != "" {
		os.Exit(runChild(role))
	}
	if integration() && *testBackend != string(BackendAuto) {
		b, err := ParseBackend(*testBackend)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		tr, err := New(Options{Backend: b})
		if errors.Is(err, ErrUnavailable) {
			fmt.Printf("backend %s: not available on this kernel: %v\n", b, err)
			os.Exit(exitUnavailable)
		}
		if errors.Is(err, ErrNotImplemented) {
			fmt.Printf("backend %s: not implemented by twtrace yet: %v\n", b, err)
			os.Exit(exitNotImplemented)
		}
		if err == nil {
			tr.Close()
		}
	}
	os.Exit(m.Run())
}

// integration reports whether the kernel tests run: as root, unless make test-unit
// asked for unit tests only.
func integration() bool {
	return os.Geteuid() == 0 && os.Getenv("TWTRACE_UNIT_ONLY") == ""
}

func requireRoot(t testing.TB) {
	t.Helper()
	if os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("TWTRACE_UNIT_ONLY is set (make test-unit): kernel tests skipped")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root: loads eBPF programs and creates network namespaces (run make test as root)")
	}
}

func requireLong(t *testing.T) {
	t.Helper()
	if os.Getenv("TWTRACE_SKIP_LONG") != "" {
		t.Skip("TWTRACE_SKIP_LONG is set: the kernel matrix runs this long test on one kernel only")
	}
}
