package reconcile

import (
	"context"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/netns"
	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/tracer"
	"golang.org/x/sys/unix"
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
		tb.Skip("needs root: loads eBPF programs and creates network namespaces")
	}
}

// stream runs a real tracer on the namespace and hands the reconciler what it delivers,
// less what drop says the kernel did not show the programs (as it did under load, see
// README): the comparison with the kernel's own state must find exactly that.
type stream struct {
	r       *Reconciler
	mu      sync.Mutex
	exits   map[uint16]tracer.Event // tw_exit by local port, dropped ones included
	dropped int
	cancel  context.CancelFunc
	done    chan error
	tr      *tracer.Tracer
}

func startStream(t *testing.T, ns *testnet.Netns, r *Reconciler, drop func(e *tracer.Event, seen int) bool) *stream {
	t.Helper()
	tr, err := tracer.New(tracer.Options{Families: tracer.FamilyTW | tracer.FamilyOverflow, Filter: tracer.Filter{NetNS: ns.Inode}})
	if err != nil {
		t.Fatalf("start tracer: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &stream{r: r, exits: map[uint16]tracer.Event{}, cancel: cancel, done: make(chan error, 1), tr: tr}
	seen := 0
	go func() {
		s.done <- tr.Run(ctx, func(e *tracer.Event) {
			s.mu.Lock()
			defer s.mu.Unlock()
			if e.Kind == tracer.KindTWExit {
				s.exits[e.SPort] = *e
			}
			seen++
			if drop(e, seen) {
				s.dropped++
				return
			}
			r.Observe(e)
		}, nil)
	}()
	t.Cleanup(func() { s.stop(t) })
	return s
}

func (s *stream) stop(t *testing.T) {
	if s.tr == nil {
		return
	}
	s.cancel()
	if err := <-s.done; err != nil {
		t.Errorf("tracer: %v", err)
	}
	s.tr.Close()
	s.tr = nil
}

func take(t *testing.T, ns *testnet.Netns) *snapshot.Namespace {
	t.Helper()
	n, err := snapshot.Take(netns.Netns{Inode: ns.Inode, Path: ns.Path()}, snapshot.Options{TimeWaitSockets: true})
	if err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	return n
}

// Timewait sockets whose death the stream does not carry are found gone from the kernel's
// table: one unseen death each, its lifetime bounded around the real one. FIN_WAIT2
// timewait sockets (orphaned, tcp_fin_timeout 1 s) die on their own, and sock_diag lists
// them with that substate.
func TestUnseenDeathsFoundInTheKernel(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ns := testnet.New(t)
	ns.Sysctl(t, "net/ipv4/tcp_fin_timeout", "1")
	r := New(0, nil)
	var dropPort uint16
	var mu sync.Mutex
	s := startStream(t, ns, r, func(e *tracer.Event, _ int) bool {
		mu.Lock()
		defer mu.Unlock()
		return e.Kind == tracer.KindTWExit && e.SPort == dropPort
	})
	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)
	var ports []uint16
	for i := 0; i < 3; i++ {
		c := ns.Connect(t, unix.AF_INET, port)
		ports = append(ports, testnet.LocalPort(t, c))
		a := testnet.Accept(t, lfd)
		defer unix.Close(a) // the server never closes: the client's side waits in FIN_WAIT2
		unix.Close(c)
	}
	mu.Lock()
	dropPort = ports[1]
	mu.Unlock()

	var found []tracer.Event
	listed := false
	for deadline := time.Now().Add(15 * time.Second); len(found) == 0 && time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		n := take(t, ns)
		for _, sock := range n.TimeWaitSockets {
			listed = listed || (sock.SPort == ports[1] && sock.State == uint8(tracer.StateFinWait2))
		}
		found = append(found, r.Check(n, time.Now()).Unseen...)
	}
	s.stop(t)
	if !listed {
		t.Errorf("sock_diag never listed the FIN_WAIT2 timewait socket :%d", ports[1])
	}
	if len(found) != 1 || found[0].SPort != ports[1] || found[0].Cause != tracer.CauseUnseen || found[0].Substate != tracer.StateFinWait2 {
		t.Fatalf("want the one death the stream dropped (:%d) found unseen, got %+v", ports[1], found)
	}
	real, ok := s.exits[ports[1]]
	if !ok || !real.DurationOK {
		t.Fatalf("the tracer itself saw no death of :%d", ports[1])
	}
	if e := found[0]; real.Duration < e.LifetimeMin || real.Duration > e.LifetimeMax {
		t.Errorf("real lifetime %v outside the bounds found, %v to %v", real.Duration, e.LifetimeMin, e.LifetimeMax)
	}
	if unseen, _ := r.Totals(); unseen != 1 {
		t.Errorf("%d unseen deaths counted, want 1", unseen)
	}
}

// Overflows and births the stream does not carry are the kernel's counts minus the events:
// exactly as many as were dropped.
func TestUnattributedCountsFromTheKernel(t *testing.T) {
	requireRoot(t)
	t.Parallel()
	ns := testnet.New(t)
	ns.Sysctl(t, "net/ipv4/tcp_max_tw_buckets", "3")
	base := take(t, ns).Counters
	r := New(tracer.FamilyOverflow|tracer.FamilyTW, map[uint32]snapshot.Counters{ns.Inode: base})
	overflows, births := 0, 0
	s := startStream(t, ns, r, func(e *tracer.Event, _ int) bool {
		switch e.Kind {
		case tracer.KindTWOverflow:
			overflows++
			return overflows%3 == 0 // 2 of 7
		case tracer.KindTWEnter:
			births++
			return births == 2 // 1 of 3
		}
		return false
	})
	lfd, port := ns.Listen(t, unix.AF_INET)
	defer unix.Close(lfd)
	for i := 0; i < 10; i++ { // 3 timewait sockets, 7 overflows
		ns.ClientCloses(t, unix.AF_INET, lfd, port)
	}
	time.Sleep(300 * time.Millisecond) // the tracer's reader polls every 100 ms
	n := take(t, ns)
	s.stop(t)
	got := map[tracer.Families]uint64{}
	for _, u := range r.Finish(n).Unattributed {
		got[u.Family] += u.Count
	}
	if got[tracer.FamilyOverflow] != 2 || got[tracer.FamilyTW] != 1 {
		t.Errorf("unattributed %v, want 2 overflows and 1 birth (the stream dropped %d events)", got, s.dropped)
	}
}
