package main

import (
	"fmt"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/rlimit"
	"github.com/twtrace/twtrace/internal/testnet"
)

// statsSysctl reads kernel.bpf_stats_enabled. It shows only what was written to it: a
// process holding the statistics on with BPF_ENABLE_STATS leaves it at 0, so the test's
// own program (sentinel) is what proves them on or off.
func statsSysctl(t *testing.T) bool {
	t.Helper()
	b, err := os.ReadFile("/proc/sys/kernel/bpf_stats_enabled")
	must(t, err)
	return strings.TrimSpace(string(b)) == "1"
}

// sentinel is a program of the test's own, run with BPF_PROG_TEST_RUN: its run count grows
// exactly while the kernel's statistics are on.
type sentinel struct{ p *ebpf.Program }

func newSentinel(t *testing.T) *sentinel {
	t.Helper()
	// before 5.11 a program is charged to RLIMIT_MEMLOCK, as twtrace's own are (tracer.New)
	must(t, rlimit.RemoveMemlock())
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.SocketFilter, License: "GPL",
		Instructions: asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}})
	must(t, err)
	t.Cleanup(func() { p.Close() })
	return &sentinel{p}
}

// counted runs the sentinel 100 times and says how many of the runs the kernel counted.
func (s *sentinel) counted(t *testing.T) uint64 {
	t.Helper()
	before, err := s.p.Stats()
	must(t, err)
	for range 100 {
		_, err := s.p.Run(&ebpf.RunOptions{Data: make([]byte, 64)})
		must(t, err)
	}
	after, err := s.p.Stats()
	must(t, err)
	return after.RunCount - before.RunCount
}

// serve --bpf-stats turns the kernel's statistics on for its lifetime only, exports each
// program's counters, which grow with traffic, and sums them up at exit; without the flag
// nothing of it is exported.
func TestBPFStatsForTwtracesLifetime(t *testing.T) {
	if twtraceBin == "" {
		t.Skip("needs root (and not make test-unit): runs twtrace and creates a network namespace")
	}
	testnet.HoldBPFStats(t)
	s := newSentinel(t)
	if statsSysctl(t) || s.counted(t) != 0 {
		t.Skip("the kernel's BPF statistics are already on (kernel.bpf_stats_enabled=1, or another process holds BPF_ENABLE_STATS): cannot prove twtrace turns them off")
	}
	ns := newHeldNetns(t)

	plain := startServe(t, ns.inode)
	if m, body := scrape(t, plain); m[`twtrace_bpf_program_runs_total{program="tp_set_state"}`] != 0 || strings.Contains(string(body), "twtrace_bpf_program") {
		t.Errorf("serve without --bpf-stats exports program statistics:\n%s", body)
	}
	if s.counted(t) != 0 {
		t.Fatal("serve without --bpf-stats turned the kernel's statistics on")
	}

	r := startTracing(t, nil, "serve", "--bpf-stats", "--listen", "127.0.0.1:0", "--backend", *testBackend, "--netns", fmt.Sprint(ns.inode))
	if !r.stderr.waitFor("serving", 30*time.Second) {
		t.Fatalf("serve did not start:\n%s", r.stderr.String())
	}
	addr := listenAddr(t, r.stderr.String())
	if n := s.counted(t); n != 100 {
		t.Errorf("with serve --bpf-stats running, the kernel counted %d of 100 runs of a program", n)
	}
	runs := func() (float64, float64) {
		m, body := scrape(t, addr)
		for _, series := range []string{"twtrace_bpf_program_runs_total", "twtrace_bpf_program_run_seconds_total", "twtrace_bpf_program_recursion_misses_total"} {
			if _, ok := m[series+`{program="tp_set_state"}`]; !ok {
				t.Fatalf("no %s for tp_set_state:\n%s", series, body)
			}
		}
		return m[`twtrace_bpf_program_runs_total{program="tp_set_state"}`], m[`twtrace_bpf_program_run_seconds_total{program="tp_set_state"}`]
	}
	runs0, secs0 := runs()
	must(t, ns.churn(20)) // 20 connections of 10 transitions each, and the listener's 2
	runs1, secs1 := runs()
	if runs1-runs0 < 202 || secs1 <= secs0 {
		t.Errorf("after 20 connections tp_set_state ran %v more times (want at least 202) for %v s more (want more than 0)", runs1-runs0, secs1-secs0)
	}
	r.stop(t)
	if !strings.Contains(r.stderr.String(), "twtrace: kernel cost (--bpf-stats) over ") || !strings.Contains(r.stderr.String(), "tp_set_state ") {
		t.Errorf("no cost summary at exit:\n%s", r.stderr.String())
	}
	if n := s.counted(t); n != 0 {
		t.Errorf("after serve --bpf-stats exited, the kernel still counted %d of 100 runs of a program", n)
	}
}

// listenAddr finds the address serve said it listens on.
func listenAddr(t *testing.T, stderr string) string {
	t.Helper()
	addr := regexp.MustCompile(`listen=(\S+)`).FindStringSubmatch(stderr)
	if addr == nil {
		t.Fatalf("no listen address in:\n%s", stderr)
	}
	return addr[1]
}
