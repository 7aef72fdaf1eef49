package window

import (
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// Keep applies the user's socket filter to sock_diag's sockets exactly as the kernel applies
// it to events: ports, addresses, family (TestFilterTable proves the two agree). The
// namespace filter chooses which namespaces are read; sock_diag does not know owners, so
// the process filter cannot apply. nil keeps every socket.
func Keep(f tracer.Filter) func(*snapshot.Socket) bool {
	f.PID, f.NetNS = 0, 0
	if f == (tracer.Filter{}) {
		return nil
	}
	return func(s *snapshot.Socket) bool { return f.Matches(s.Family, s.SAddr, s.DAddr, s.SPort, s.DPort) }
}
