package main

import (
	"cmp"
	"encoding/json"
	"fmt"
	"os/exec"
	"slices"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// churnResult is what cmd/churn -json prints.
type churnResult struct {
	PerSecond   float64        `json:"connections_per_second"`
	Connections uint64         `json:"connections"`
	Errors      map[string]int `json:"errors"`
	// cpu is the time churn spent on the CPUs, in user and kernel mode: most softirq work
	// of loopback runs in its context, and so does the tracer's program time
	cpu time.Duration
}

func runChurn(bin, closeFirst string, clients int, d time.Duration, cpus string) (churnResult, error) {
	var r churnResult
	argv := []string{bin, "-json", "-close", closeFirst, "-clients", fmt.Sprint(clients), "-duration", d.String()}
	if cpus != "" {
		argv = append([]string{"taskset", "-c", cpus}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	out, err := cmd.Output()
	if err != nil {
		return r, fmt.Errorf("churn: %w", err)
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, json.Unmarshal(out, &r)
}

// sample is one tool's run under one churn.
type sample struct {
	perSecond float64
	// CPU time per connection, of churn and of the tool
	churnCPU, toolCPU time.Duration
	lost              uint64
	lostKnown         bool
	rssKiB            uint64
	mapBytes          uint64
	progs             []progCost
}

// progCost is one program's runs and total run time, from the kernel's statistics.
type progCost struct {
	name    string
	runs    uint64
	totalNs uint64
}

func (p progCost) avgNs() float64 {
	if p.runs == 0 {
		return 0
	}
	return float64(p.totalNs) / float64(p.runs)
}

// measure runs churn once with t attached (or nothing, for the baseline).
func measure(cfg config, t tool, closeFirst string, withStats bool) (sample, error) {
	var s sample
	r, err := t.start()
	if err != nil {
		return s, err
	}
	var before map[uint32]progCost
	var toolCPU0 time.Duration
	if r != nil {
		toolCPU0 = cpuTime(r.cmd.Process.Pid)
	}
	if r != nil && withStats {
		before = progCosts(objectsOf(r.cmd.Process.Pid).Progs)
	}
	res, err := runChurn(cfg.churn, closeFirst, cfg.clients, cfg.duration, cfg.cpus)
	if err != nil {
		if r != nil {
			r.stop()
		}
		return s, err
	}
	s.perSecond = res.PerSecond
	if res.Connections > 0 {
		s.churnCPU = res.cpu / time.Duration(res.Connections)
	}
	if r == nil {
		return s, nil
	}
	if res.Connections > 0 { // while churn ran: not loading, not the final view
		s.toolCPU = (cpuTime(r.cmd.Process.Pid) - toolCPU0) / time.Duration(res.Connections)
	}
	objs := objectsOf(r.cmd.Process.Pid)
	s.mapBytes = objs.MapMemlock
	if withStats {
		for id, after := range progCosts(objs.Progs) {
			b := before[id]
			c := progCost{name: after.name, runs: after.runs - b.runs, totalNs: after.totalNs - b.totalNs}
			s.progs = append(s.progs, c)
		}
		slices.SortFunc(s.progs, func(a, b progCost) int { return cmp.Compare(b.runs, a.runs) })
	}
	stderr, rss, err := r.stop()
	if err != nil {
		return s, fmt.Errorf("%s: %w\n%s", t.name, err, stderr)
	}
	s.rssKiB = rss
	s.lost, s.lostKnown = t.lost(stderr)
	return s, nil
}

// progCosts reads the kernel's run counters of each program (kernel.bpf_stats_enabled).
func progCosts(ids []uint32) map[uint32]progCost {
	out := map[uint32]progCost{}
	for _, id := range ids {
		p, err := ebpf.NewProgramFromID(ebpf.ProgramID(id))
		if err != nil {
			continue
		}
		info, err := p.Info()
		st, serr := p.Stats()
		p.Close()
		if err != nil || serr != nil {
			continue
		}
		out[id] = progCost{name: info.Name, runs: st.RunCount, totalNs: uint64(st.Runtime.Nanoseconds())}
	}
	return out
}

// enableStats turns on the kernel's per-program run time accounting until closed.
func enableStats() (func(), error) {
	c, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err != nil {
		return nil, fmt.Errorf("enable BPF run time statistics: %w", err)
	}
	return func() { c.Close() }, nil
}
