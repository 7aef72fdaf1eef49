package selfcost

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/twtrace/twtrace/internal/bpfobj"
	"github.com/twtrace/twtrace/internal/churn"
	"github.com/twtrace/twtrace/internal/testnet"
	"github.com/twtrace/twtrace/tracer"
)

// join reports each program from its round with the fewest runs per connection, takes the
// background of that round's idle stretch out, scaled to the workload's duration, and
// sums the floor over every round.
func TestJoinPicksTheLeastDisturbedRound(t *testing.T) {
	costs := func(runs uint64, ns time.Duration) map[string]tracer.ProgramCost {
		return map[string]tracer.ProgramCost{"tp_set_state": {Name: "tp_set_state", Runs: runs, RunTime: ns}}
	}
	work := func(conns uint64, secs float64) churn.Result { return churn.Result{Connections: conns, Seconds: secs} }
	m := variant{
		choices: []tracer.Choice{{Hook: tracer.HookState, Backend: tracer.BackendTracepoint, Programs: []string{"tp_set_state"}}},
		samples: map[string][]sample{"client": {
			{workload: work(100, 0.1), window: costs(3000, 3000*300), idle: costs(500, 500*100), idleFor: 100 * time.Millisecond, windowFor: 100 * time.Millisecond},
			// the least disturbed: 1100 runs for 100 connections, of which 200 (100 in 50 ms, scaled to 100 ms) are the machine's
			{workload: work(100, 0.1), window: costs(1100, 900*400+200*100), idle: costs(100, 100*100), idleFor: 50 * time.Millisecond, windowFor: 100 * time.Millisecond, lost: 2},
			{workload: work(0, 0.1), window: costs(0, 0)},
		}},
	}
	floor := variant{samples: map[string][]sample{"client": {
		{workload: work(100, 0.1), window: costs(1000, 1000*60)},
		{workload: work(100, 0.1), window: costs(3000, 3000*80)},
	}}}
	r := join("client", Streaming, m, floor)
	if len(r.Programs) != 1 || len(r.Workload) != 3 || len(r.Floor) != 2 || r.Lost != 2 {
		t.Fatalf("%+v", r)
	}
	p := r.Programs[0]
	if p.Round != 2 || p.Connections != 100 || p.Runs != 1100 || p.Background.Runs != 200 {
		t.Errorf("reported round %d (%d connections, %d runs, background %v), want round 2 (100, 1100, 200)", p.Round, p.Connections, p.Runs, p.Background.Runs)
	}
	if got := p.RunsPerConnection(); got != 11 {
		t.Errorf("runs per connection %v, want 11: 1100 / 100, the background in it", got)
	}
	if got, ok := p.PerRun(); !ok || got != 345 {
		t.Errorf("per run %v %v, want 345ns: 380000 ns over all 1100 runs", got, ok)
	}
	if got, ok := p.FloorPerRun(); !ok || got != 75 {
		t.Errorf("floor %v %v, want 75ns: (60000 + 240000) / 4000", got, ok)
	}
	if got, ok := p.Estimate(); !ok || math.Abs(got-11*270) > 1e-9 {
		t.Errorf("estimate %v %v, want 11 × (345 - 75) = 2970", got, ok)
	}
	p.Floored = false
	if _, ok := p.Estimate(); ok {
		t.Error("an estimate without a floor")
	}
	p.Runs, p.RunTime = 0, 0
	if _, ok := p.PerRun(); ok {
		t.Error("a time per run for no run of the workload's")
	}
	if e, ok := p.Estimate(); !ok || e != 0 {
		t.Errorf("a program the workload never ran costs %v %v, want 0", e, ok)
	}
}

// Measure attaches the real programs and the empty ones, counts at least the transitions
// the workload must make (each connection 10: the client's CLOSE->SYN_SENT->ESTABLISHED->
// FIN_WAIT1->FIN_WAIT2->CLOSE or ->CLOSE_WAIT->LAST_ACK->CLOSE, the server's child from
// LISTEN->SYN_RECV on, and the listener's 2 per round; machine-wide, so at least) and a
// timewait hook run per connection's timewait socket, finds the real programs costlier than empty ones, and
// leaves nothing behind: no BPF object, no namespace, no thread in one.
func TestMeasure(t *testing.T) {
	if os.Geteuid() != 0 || os.Getenv("TWTRACE_UNIT_ONLY") != "" {
		t.Skip("needs root (and not make test-unit): loads BPF programs and creates network namespaces")
	}
	testnet.HoldBPFStats(t)
	self, err := os.Readlink("/proc/self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	counted, own := statsCounter(t)
	statsWereOn := counted() != 0
	const conns = 500
	rep, err := Measure(Options{Backend: tracer.BackendAuto, Connections: conns, Clients: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Runs) != 4 {
		t.Fatalf("%d runs, want 4 (both close orders, both modes)", len(rep.Runs))
	}
	for _, r := range rep.Runs {
		name := r.CloseFirst + "/" + string(r.Mode)
		for _, w := range append(append([]churn.Result{}, r.Workload...), r.Floor...) {
			if w.Connections != conns || len(w.Errors) != 0 || w.Unserved != 0 || w.CloseFirst != r.CloseFirst {
				t.Errorf("%s: a round made %+v, want %d connections, %s closing first", name, w, conns, r.CloseFirst)
			}
		}
		if len(r.Workload) != Rounds || len(r.Floor) != Rounds || r.Lost != 0 {
			t.Errorf("%s: %d rounds, %d floor rounds, %d lost: want %d, %d, 0", name, len(r.Workload), len(r.Floor), r.Lost, Rounds, Rounds)
		}
		progs := map[string]Program{}
		for _, p := range r.Programs {
			progs[p.Name] = p
		}
		state := progs["tp_set_state"]
		var timewait Program // the timewait hook's busiest program: whatever the backend, one runs once a socket at least
		for _, p := range r.Programs {
			if p.Hook == tracer.HookTimewait && p.Runs >= timewait.Runs {
				timewait = p
			}
		}
		// a run the kernel skipped (recursion) still was a transition
		if state.Runs+state.Misses < 10*conns+2 || uint64(state.Floor.Runs)+state.FloorMisses < Rounds*(10*conns+2) {
			t.Errorf("%s: tp_set_state ran %d times, %d skipped (floor %v over %d rounds) for %d connections, want at least %d (%d)",
				name, state.Runs, state.Misses, state.Floor.Runs, Rounds, conns, 10*conns+2, Rounds*(10*conns+2))
		}
		if timewait.Runs+timewait.Misses < conns || timewait.Floored && uint64(timewait.Floor.Runs)+timewait.FloorMisses < Rounds*conns {
			t.Errorf("%s: the timewait hook's %s ran %d times (floor %v) for %d timewait sockets", name, timewait.Name, timewait.Runs, timewait.Floor.Runs, conns)
		}
		perRun, ok1 := state.PerRun()
		floor, ok2 := state.FloorPerRun()
		if est, ok := state.Estimate(); !ok1 || !ok2 || !ok || perRun <= floor || est <= 0 {
			t.Errorf("%s: tp_set_state %v a run (%v), floor %v (%v), estimate %v (%v): want a real program costlier than an empty one", name, perRun, ok1, floor, ok2, est, ok)
		}
		if state.Backend != tracer.BackendTracepoint || !state.Floored {
			t.Errorf("%s: tp_set_state on backend %q, floored %v", name, state.Backend, state.Floored)
		}
	}

	if n := counted(); n != 0 && !statsWereOn {
		t.Errorf("after Measure the kernel's statistics are still on: %d of 10 runs of a program counted", n)
	}
	held, err := bpfobj.Of(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	held.Progs = slices.DeleteFunc(held.Progs, func(id uint32) bool { return id == own })
	if len(held.Progs)+len(held.Links)+len(held.Maps) != 0 {
		t.Errorf("after Measure the process still holds %+v", held)
	}
	fds, _ := filepath.Glob("/proc/self/fd/*")
	for _, fd := range fds {
		if target, _ := os.Readlink(fd); strings.HasPrefix(target, "net:[") {
			t.Errorf("after Measure descriptor %s still holds network namespace %s", fd, target)
		}
	}
	// a thread left in a private namespace would keep it alive: the workers' threads die
	tasks, _ := filepath.Glob("/proc/self/task/*/ns/net")
	for _, task := range tasks {
		if ns, err := os.Readlink(task); err == nil && ns != self {
			t.Errorf("after Measure thread %s is in network namespace %s, not ours (%s)", task, ns, self)
		}
	}
}

// statsCounter runs a program of the test's own 10 times and says how many of the runs the
// kernel counted: all while its run-time statistics are on, none while they are off. id is
// the program's.
func statsCounter(t *testing.T) (counted func() uint64, id uint32) {
	t.Helper()
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	info, err := p.Info()
	if err != nil {
		t.Fatal(err)
	}
	pid, _ := info.ID()
	return func() uint64 {
		before, err := p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		for range 10 {
			if _, err := p.Run(&ebpf.RunOptions{Data: make([]byte, 64)}); err != nil {
				t.Fatal(err)
			}
		}
		after, err := p.Stats()
		if err != nil {
			t.Fatal(err)
		}
		return after.RunCount - before.RunCount
	}, uint32(pid)
}
