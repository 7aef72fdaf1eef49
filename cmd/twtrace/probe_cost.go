package main

import (
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/twtrace/twtrace/internal/churn"
	"github.com/twtrace/twtrace/internal/selfcost"
)

// probe --cost: what each of twtrace's programs costs per connection of a short loopback
// workload, as the kernel's own statistics measure it, above the same programs with
// empty bodies.

// costClients is the workload's concurrency: two clients and two server workers, modest
// beside whatever else the machine runs.
const costClients = 2

// statsOverheadNs is what the kernel's run-time statistics add to every BPF program's run
// while they are on, measured on the machine of BENCHMARKS.md (BenchmarkRunTimeStats).
const statsOverheadNs = 80

type costOptions struct {
	on          bool
	connections uint64
}

func costFlags(fs *flag.FlagSet) *costOptions {
	c := &costOptions{}
	fs.BoolVar(&c.on, "cost", false, "also measure what each program costs per connection (root; a few seconds: loopback churn in a private network namespace, the kernel's BPF statistics on meanwhile)")
	fs.Uint64Var(&c.connections, "cost-connections", 5000, "connections per round with --cost (3 rounds of each close order under empty programs, streaming and counting: 18 in all)")
	return c
}

func (c *costOptions) validate(fs *flag.FlagSet) error {
	given := false
	fs.Visit(func(f *flag.Flag) { given = given || f.Name == "cost-connections" })
	switch {
	case given && !c.on:
		return usagef("--cost-connections: only with --cost")
	case c.connections < 100 || c.connections > 20000:
		return usagef("--cost-connections %d: want 100-20000", c.connections)
	case c.on && os.Geteuid() != 0:
		return fmt.Errorf("probe --cost needs root: it creates a network namespace and turns on the kernel's BPF run-time statistics (run without --cost for the rest)")
	}
	return nil
}

// costLimits are what the numbers cannot say, printed with them.
var costLimits = []string{
	"only twtrace's own programs' counters are read: other BPF programs on the same hooks are neither counted nor excluded",
	"runs are counted machine-wide (the timer programs run for every kernel timer, the state program for every TCP socket in every namespace): on a busy machine runs/conn and ns/conn are upper bounds, by about the share in others; rerun when it is quiet",
	"the workload is loopback churn (IPv4, 64 bytes a connection, 2 clients): other traffic makes other transitions and timers per connection, and the estimate is per connection of this workload",
	fmt.Sprintf("ns/run is measured with the statistics on, whose clock reads fall partly inside it; the floor (the same programs with empty bodies, same workload) holds that share and the estimate is above it. The statistics themselves add about %d ns to every run of every BPF program while on (BENCHMARKS.md), paid only during this measurement and not subtracted", statsOverheadNs),
	"not seen by the counters: the dispatch to each program (the attach floor, a connection rate in make bench), the reader's work in userspace, and the end of each TIME_WAIT socket 60 s later (this measurement removes its namespace first)",
	"programs twtrace runs itself (settle_pending, 10 times a second per CPU) are not per event and not shown",
}

func writeCostText(w io.Writer, rep selfcost.Report) {
	fmt.Fprintf(w, "\ncost per connection (--cost): %d rounds of %d loopback connections per close order, %d clients, IPv4, each round in a new\n"+
		"network namespace, under empty programs (the floor) and twtrace's in each mode; kernel BPF statistics on meanwhile\n",
		selfcost.Rounds, rep.Options.Connections, rep.Options.Clients)
	for _, r := range rep.Runs {
		fmt.Fprintf(w, "  %s closes first, %s (%s): %s; floor %s; %d lost\n",
			r.CloseFirst, r.Mode, modeCommands(r.Mode), rounds(r.Workload), rounds(r.Floor), r.Lost)
		fmt.Fprintf(w, "    %-24s %5s %9s %7s %8s %8s %10s\n", "program", "round", "runs/conn", "others", "ns/run", "floor", "ns/conn")
		var total float64
		var unknown []string
		for _, p := range r.Programs {
			perRun, floor, est := "-", "-", "unknown"
			if d, ok := p.PerRun(); ok {
				perRun = fmt.Sprint(d.Nanoseconds())
			}
			if f, ok := p.FloorPerRun(); ok {
				floor = fmt.Sprint(f.Nanoseconds())
			} else if !p.Floored {
				floor = "unknown"
			}
			if e, ok := p.Estimate(); ok {
				est = fmt.Sprint(int64(math.Round(e)))
				total += e
			} else {
				unknown = append(unknown, p.Name)
			}
			fmt.Fprintf(w, "    %-24s %5d %9.2f %7s %8s %8s %10s%s\n", p.Name, p.Round, p.RunsPerConnection(), others(p), perRun, floor, est, misses(p))
		}
		fmt.Fprintf(w, "    %-24s %5s %9s %7s %8s %8s %10d%s\n", "all programs", "", "", "", "", "", int64(math.Round(total)), unknownNote(unknown))
		if share := busiest(r); share > busyShare {
			fmt.Fprintf(w, "    the machine's own work was about %.0f%% of a program's runs here: these numbers are upper bounds; rerun when it is quiet\n", 100*share)
		}
	}
	fmt.Fprintf(w, "  round: each program's round with the fewest runs per connection (the machine's other work only adds runs);\n"+
		"  runs/conn and ns/run: every run in the window, the workload's and (on a busy machine) others';\n"+
		"  others: about how many were the machine's, from an idle stretch as long right before; floor: the same\n"+
		"  program with an empty body;\n"+
		"  ns/run − floor is twtrace's work per event, ns/conn = runs/conn × (ns/run − floor) per connection ('-': never ran).\n"+
		"  What these numbers cannot say:\n")
	for _, l := range costLimits {
		fmt.Fprintf(w, "  - %s\n", l)
	}
}

func modeCommands(m selfcost.Mode) string {
	if m == selfcost.Streaming {
		return "watch"
	}
	return "timewait, doctor, serve"
}

// rounds lists each round's connections and time, and any that failed.
func rounds(rs []churn.Result) string {
	var parts []string
	for _, r := range rs {
		failed := 0
		for _, n := range r.Errors {
			failed += n
		}
		part := fmt.Sprintf("%d in %.2f s", r.Connections, r.Seconds)
		if failed > 0 {
			part += fmt.Sprintf(" (%d failed)", failed)
		}
		if r.Unserved > 0 {
			part += fmt.Sprintf(" (%d never finished by the server)", r.Unserved)
		}
		parts = append(parts, part)
	}
	return strings.Join(parts, ", ")
}

// busyShare is the background share of runs above which a run's numbers are called rough.
const busyShare = 0.10

// busiest is the largest background share among the programs that ran at least once a
// connection, those the estimate rests on.
func busiest(r selfcost.Run) float64 {
	share := 0.0
	for _, p := range r.Programs {
		if p.Runs >= p.Connections && p.Runs > 0 {
			share = max(share, min(1, p.Background.Runs/float64(p.Runs)))
		}
	}
	return share
}

// others is the background's share of the program's runs.
func others(p selfcost.Program) string {
	if p.Runs == 0 {
		return "-"
	}
	return fmt.Sprintf("%.0f%%", 100*min(1, p.Background.Runs/float64(p.Runs)))
}

func misses(p selfcost.Program) string {
	if p.Misses == 0 {
		return ""
	}
	return fmt.Sprintf("  (%d runs skipped: recursion)", p.Misses)
}

func unknownNote(names []string) string {
	if len(names) == 0 {
		return ""
	}
	return " + unknown for " + strings.Join(names, ", ") + " (no empty variant on its backend)"
}

// costJSON is the cost object of probe -o json.
type costJSON struct {
	Rounds            int           `json:"rounds"`
	ConnectionsPerRun uint64        `json:"connections_per_round"`
	Clients           int           `json:"clients"`
	StatsOverheadNs   int           `json:"stats_overhead_ns_per_run"`
	Runs              []costRunJSON `json:"runs"`
	Limits            []string      `json:"limits"`
}

type costRunJSON struct {
	CloseFirst  string            `json:"close_first"`
	Mode        selfcost.Mode     `json:"mode"`
	Rounds      []costRoundJSON   `json:"rounds"`
	FloorRounds []costRoundJSON   `json:"floor_rounds"`
	Lost        uint64            `json:"lost"`
	Programs    []costProgramJSON `json:"programs"`
	// Estimate sums the programs' estimates; null when one is unknown
	Estimate *float64 `json:"estimate_ns_per_connection"`
}

type costRoundJSON struct {
	Connections uint64         `json:"connections"`
	Unserved    uint64         `json:"unserved"` // connections the server never finished: reset at the end
	Seconds     float64        `json:"seconds"`
	Errors      map[string]int `json:"errors"`
}

func newRoundsJSON(rs []churn.Result) []costRoundJSON {
	out := []costRoundJSON{}
	for _, r := range rs {
		errs := r.Errors
		if errs == nil {
			errs = map[string]int{}
		}
		out = append(out, costRoundJSON{Connections: r.Connections, Unserved: r.Unserved, Seconds: r.Seconds, Errors: errs})
	}
	return out
}

type costProgramJSON struct {
	Program           string   `json:"program"`
	Hook              string   `json:"hook"`
	Backend           string   `json:"backend"`
	Round             int      `json:"round"` // the round reported, from 1: the one with the fewest runs per connection
	Connections       uint64   `json:"connections"`
	Runs              uint64   `json:"runs"`            // as the kernel counted them while the workload ran
	BackgroundRuns    float64  `json:"background_runs"` // about how many of them were the machine's
	RunsPerConnection float64  `json:"runs_per_connection"`
	NsPerRun          *int64   `json:"ns_per_run"` // null: it never ran
	FloorRuns         *uint64  `json:"floor_runs"`
	FloorMisses       *uint64  `json:"floor_recursion_misses"` // the empty program's runs the kernel skipped
	FloorNsPerRun     *int64   `json:"floor_ns_per_run"`       // null: no empty variant, or it never ran
	EstimatePerRun    *int64   `json:"estimate_ns_per_run"`    // ns_per_run - floor_ns_per_run: twtrace's work per event
	Estimate          *float64 `json:"estimate_ns_per_connection"`
	RecursionMisses   uint64   `json:"recursion_misses"`
}

func newCostJSON(rep *selfcost.Report) *costJSON {
	if rep == nil {
		return nil
	}
	out := &costJSON{Rounds: selfcost.Rounds, ConnectionsPerRun: rep.Options.Connections, Clients: rep.Options.Clients, StatsOverheadNs: statsOverheadNs,
		Runs: []costRunJSON{}, Limits: costLimits}
	for _, r := range rep.Runs {
		run := costRunJSON{CloseFirst: r.CloseFirst, Mode: r.Mode, Rounds: newRoundsJSON(r.Workload), FloorRounds: newRoundsJSON(r.Floor),
			Lost: r.Lost, Programs: []costProgramJSON{}}
		total, known := 0.0, true
		for _, p := range r.Programs {
			pj := costProgramJSON{Program: p.Name, Hook: string(p.Hook), Backend: string(p.Backend), Round: p.Round, Connections: p.Connections, Runs: p.Runs,
				BackgroundRuns: math.Round(p.Background.Runs), RunsPerConnection: p.RunsPerConnection(), RecursionMisses: p.Misses}
			if d, ok := p.PerRun(); ok {
				pj.NsPerRun = ptr(d.Nanoseconds())
			}
			if p.Floored {
				pj.FloorRuns, pj.FloorMisses = ptr(uint64(p.Floor.Runs)), ptr(p.FloorMisses)
			}
			if f, ok := p.FloorPerRun(); ok {
				pj.FloorNsPerRun = ptr(f.Nanoseconds())
				if pj.NsPerRun != nil {
					pj.EstimatePerRun = ptr(*pj.NsPerRun - f.Nanoseconds())
				}
			}
			if e, ok := p.Estimate(); ok {
				pj.Estimate = ptr(e)
				total += e
			} else {
				known = false
			}
			run.Programs = append(run.Programs, pj)
		}
		if known {
			run.Estimate = ptr(total)
		}
		out.Runs = append(out.Runs, run)
	}
	return out
}

func ptr[T any](v T) *T { return &v }
