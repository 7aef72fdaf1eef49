package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/bpfobj"
	"github.com/twtrace/twtrace/internal/testnet"
)

// probe --cost measures twtrace's real programs and their empty twins under its own
// workload: its counts cover what that workload must make (per connection 10 transitions,
// the client's CLOSE->SYN_SENT->ESTABLISHED->FIN_WAIT1->FIN_WAIT2->CLOSE or
// ->CLOSE_WAIT->LAST_ACK->CLOSE and the server's child from LISTEN->SYN_RECV, 2 for the
// listener, and a timewait hook run for its timewait socket; counted machine-wide, so at least that), it
// turns the kernel's statistics on for the measurement only, and leaves nothing attached.
func TestProbeCost(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace, which creates network namespaces")
	}
	testnet.HoldBPFStats(t)
	s := newSentinel(t)
	if statsSysctl(t) || s.counted(t) != 0 {
		t.Skip("the kernel's BPF statistics are already on (kernel.bpf_stats_enabled=1, or another process holds BPF_ENABLE_STATS): cannot prove probe --cost turns them off")
	}
	const conns = 200 // few: the kernel matrix runs this under emulation, once per backend
	cmd := exec.Command(twtraceBin, "probe", "--cost", "--cost-connections", fmt.Sprint(conns), "-o", "json", "--backend", *testBackend)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	must(t, cmd.Start())
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var held []bpfobj.Held
	statsOn := false
	for running := true; running; {
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("probe --cost: %v\n%s", err, stderr.String())
			}
			running = false
		case <-time.After(20 * time.Millisecond):
			if h, err := bpfobj.Of(cmd.Process.Pid); err == nil && len(h.Links) > 0 {
				held = append(held, h)
				statsOn = statsOn || s.counted(t) == 100
			}
		}
	}
	if len(held) == 0 || !statsOn {
		t.Fatalf("probe --cost was never seen holding attached programs (%d times) with the kernel's statistics on (%v)", len(held), statsOn)
	}

	var out struct {
		Error *string `json:"error"`
		Cost  *struct {
			Rounds            int `json:"rounds"`
			ConnectionsPerRun int `json:"connections_per_round"`
			Runs              []struct {
				CloseFirst  string `json:"close_first"`
				Mode        string `json:"mode"`
				Lost        uint64 `json:"lost"`
				Rounds      []costRoundJSON
				FloorRounds []costRoundJSON `json:"floor_rounds"`
				Programs    []costProgramJSON
			} `json:"runs"`
			Limits []string `json:"limits"`
		} `json:"cost"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &out); err != nil || out.Cost == nil || out.Error != nil {
		t.Fatalf("probe --cost -o json: %v\n%s", err, stdout.String())
	}
	if out.Cost.Rounds != 3 || out.Cost.ConnectionsPerRun != conns || len(out.Cost.Runs) != 4 || len(out.Cost.Limits) == 0 {
		t.Fatalf("cost %+v", out.Cost)
	}
	seen := map[string]bool{}
	for _, r := range out.Cost.Runs {
		name := r.CloseFirst + "/" + r.Mode
		seen[name] = true
		for _, w := range append(append([]costRoundJSON{}, r.Rounds...), r.FloorRounds...) {
			if w.Connections != conns || w.Unserved != 0 || len(w.Errors) != 0 {
				t.Errorf("%s: a round made %+v, want %d connections, all finished", name, w, conns)
			}
		}
		if len(r.Rounds) != 3 || len(r.FloorRounds) != 3 || r.Lost != 0 {
			t.Errorf("%s: %d rounds, %d floor rounds, %d lost", name, len(r.Rounds), len(r.FloorRounds), r.Lost)
		}
		progs := map[string]costProgramJSON{}
		for _, p := range r.Programs {
			progs[p.Program] = p
		}
		state := progs["tp_set_state"]
		var timewait costProgramJSON // the timewait hook's busiest program: whatever the backend, one runs once a socket at least
		for _, p := range r.Programs {
			if p.Hook == "timewait" && p.Runs >= timewait.Runs {
				timewait = p
			}
		}
		// a run the kernel skipped (recursion) still was a transition
		if state.Runs+state.RecursionMisses < 10*conns+2 || state.FloorRuns == nil || state.FloorMisses == nil ||
			*state.FloorRuns+*state.FloorMisses < 3*(10*conns+2) {
			t.Errorf("%s: tp_set_state %+v for %d connections: want at least %d runs (%d in the floor's 3 rounds)", name, state, conns, 10*conns+2, 3*(10*conns+2))
		}
		if timewait.Runs+timewait.RecursionMisses < conns {
			t.Errorf("%s: the timewait hook's %s ran %d times for %d timewait sockets", name, timewait.Program, timewait.Runs, conns)
		}
		if state.NsPerRun == nil || state.FloorNsPerRun == nil || state.Estimate == nil || *state.NsPerRun <= *state.FloorNsPerRun || *state.Estimate <= 0 {
			t.Errorf("%s: tp_set_state %+v: want a real program costlier than an empty one", name, state)
		}
	}
	if len(seen) != 4 || !seen["client/streaming"] || !seen["server/counting"] {
		t.Errorf("runs %v, want both close orders in both modes", seen)
	}

	if n := s.counted(t); n != 0 || statsSysctl(t) {
		t.Errorf("after probe --cost the kernel still counts %d of 100 runs of a program (sysctl on: %v)", n, statsSysctl(t))
	}
	for _, h := range held {
		if left := h.WaitReleased(10 * time.Second); len(left) > 0 {
			t.Fatalf("still in the kernel after probe --cost exited: %s", strings.Join(left, ", "))
		}
	}
	bpffsEntries(t) // fails on anything pinned under twtrace's name
}

// The text says the same, and explains it; without root, --cost is refused in one line
// while probe alone still runs.
func TestProbeCostTextAndPrivilege(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace, which creates network namespaces")
	}
	if os.Getenv("TWTRACE_SKIP_LONG") != "" {
		t.Skip("TWTRACE_SKIP_LONG is set: the kernel matrix measures the text once per kernel family only (TestProbeCost measures in every cell)")
	}
	testnet.HoldBPFStats(t)
	out, err := exec.Command(twtraceBin, "probe", "--cost", "--cost-connections", "100", "--backend", *testBackend).CombinedOutput()
	if err != nil {
		t.Fatalf("probe --cost: %v\n%s", err, out)
	}
	for _, want := range []string{"hooks:\n", "\ncost per connection (--cost): 3 rounds of 100 loopback connections",
		"  client closes first, streaming (watch): 100 in ", "  server closes first, counting (timewait, doctor, serve): 100 in ",
		"    tp_set_state  ", "    all programs  ", "What these numbers cannot say:"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("probe --cost lacks %q:\n%s", want, out)
		}
	}

	// a backend this kernel cannot run keeps its exit status, and nothing is measured
	for _, b := range []string{"fentry", "kprobe"} {
		out, err := exec.Command(twtraceBin, "probe", "--cost", "--cost-connections", "100", "--backend", b).CombinedOutput()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 3 {
			continue // it runs here (the kernel matrix): measured above with -backend
		}
		if want := "\ncost per connection (--cost): not measured: twtrace cannot run with --backend " + b + " here\n"; !strings.Contains(string(out), want) ||
			strings.Contains(string(out), "all programs") {
			t.Errorf("probe --cost --backend %s, exit 3: want %q and no measurement:\n%s", b, want, out)
		}
	}

	bin := nobodyBinary(t)
	var stderr bytes.Buffer
	cmd := asNobody(context.Background(), bin, tracingCaps, "probe", "--cost")
	cmd.Stderr = &stderr
	err = cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || stderr.String() != "twtrace: probe --cost needs root: it creates a network namespace and turns on the kernel's BPF run-time statistics (run without --cost for the rest)\n" {
		t.Errorf("probe --cost as nobody: %v, stderr %q", err, stderr.String())
	}
	if out, err := asNobody(context.Background(), bin, tracingCaps, "probe").CombinedOutput(); err != nil {
		t.Errorf("probe as nobody with %v: %v\n%s", tracingCaps, err, out)
	}
}
