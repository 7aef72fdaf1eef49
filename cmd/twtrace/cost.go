package main

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twtrace/twtrace/tracer"
)

// The summary line and metrics of --bpf-stats: what twtrace's programs cost the kernel,
// as the kernel counted it.

// costSummary writes the cost line after the summary, with --bpf-stats.
func (s *session) costSummary(w io.Writer) {
	if s.stats == nil {
		return
	}
	costs, err := s.t.ProgramCosts()
	if err != nil {
		fmt.Fprintf(w, "twtrace: read the programs' statistics: %s\n", err)
		return
	}
	fmt.Fprintf(w, "%s\n", appendCosts(nil, costs, time.Since(s.started)))
}

// appendCosts writes the programs that ran, costliest first, and their total against
// the time they were traced over.
func appendCosts(b []byte, costs []tracer.ProgramCost, over time.Duration) []byte {
	var total time.Duration
	var misses uint64
	ran := slices.DeleteFunc(slices.Clone(costs), func(p tracer.ProgramCost) bool { return p.Runs == 0 })
	for _, p := range costs {
		total += p.RunTime
		misses += p.RecursionMisses
	}
	slices.SortStableFunc(ran, func(a, b tracer.ProgramCost) int { return cmp.Compare(b.RunTime, a.RunTime) })
	b = fmt.Appendf(b, "twtrace: kernel cost (--bpf-stats) over %.1f s: %s on the CPUs", over.Seconds(), total.Round(time.Microsecond))
	if over > 0 {
		b = fmt.Appendf(b, " (%.2f%% of one CPU)", 100*total.Seconds()/over.Seconds())
	}
	for i, p := range ran {
		sep := "; "
		if i > 0 {
			sep = ", "
		}
		b = fmt.Appendf(b, "%s%s %d runs at %d ns", sep, p.Name, p.Runs, p.PerRun().Nanoseconds())
	}
	if len(ran) == 0 {
		b = append(b, "; no program ran"...)
	}
	return fmt.Appendf(b, "; %d runs skipped (recursion misses)", misses)
}

// programCollector exports each program's counters at scrape time, with --bpf-stats.
type programCollector struct {
	t                    *tracer.Tracer
	runs, seconds, skips *prometheus.Desc
}

func newProgramCollector(t *tracer.Tracer) *programCollector {
	return &programCollector{t: t,
		runs: prometheus.NewDesc("twtrace_bpf_program_runs_total",
			"Runs of each of twtrace's BPF programs, counted by the kernel while its statistics are on (--bpf-stats).", []string{"program"}, nil),
		seconds: prometheus.NewDesc("twtrace_bpf_program_run_seconds_total",
			"Time each of twtrace's BPF programs ran, measured by the kernel while its statistics are on (--bpf-stats).", []string{"program"}, nil),
		skips: prometheus.NewDesc("twtrace_bpf_program_recursion_misses_total",
			"Runs of each of twtrace's BPF programs the kernel skipped: it was already running on that CPU.", []string{"program"}, nil),
	}
}

func (c *programCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.runs
	ch <- c.seconds
	ch <- c.skips
}

func (c *programCollector) Collect(ch chan<- prometheus.Metric) {
	costs, err := c.t.ProgramCosts()
	if err != nil {
		return
	}
	for _, p := range costs {
		ch <- prometheus.MustNewConstMetric(c.runs, prometheus.CounterValue, float64(p.Runs), p.Name)
		ch <- prometheus.MustNewConstMetric(c.seconds, prometheus.CounterValue, p.RunTime.Seconds(), p.Name)
		ch <- prometheus.MustNewConstMetric(c.skips, prometheus.CounterValue, float64(p.RecursionMisses), p.Name)
	}
}
