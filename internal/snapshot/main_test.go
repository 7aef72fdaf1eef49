package snapshot

import (
	"os"
	"testing"

	"github.com/twtrace/twtrace/internal/testnet"
)

func TestMain(m *testing.M) {
	testnet.RunChild()
	os.Exit(m.Run())
}

func requireRoot(tb testing.TB) {
	tb.Helper()
	if os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		tb.Skip("TWTRACE_UNIT_ONLY is set (make test-unit): kernel tests skipped")
	}
	if os.Geteuid() != 0 {
		tb.Skip("needs root: creates network namespaces")
	}
}

func must(tb testing.TB, what string, err error) {
	tb.Helper()
	if err != nil {
		tb.Fatalf("%s: %v", what, err)
	}
}
