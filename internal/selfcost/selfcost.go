// Package selfcost measures what each of twtrace's programs costs per connection: it
// attaches them, with the kernel's run-time statistics on, while a known loopback
// workload runs in a private network namespace, and again with empty bodies for the
// floor. probe --cost prints it.
package selfcost

import (
	"context"
	"fmt"
	"time"

	"github.com/twtrace/twtrace/internal/churn"
	"github.com/twtrace/twtrace/tracer"
)

// Options say what to measure.
type Options struct {
	Backend     tracer.Backend
	Connections uint64 // per run, each run in a new namespace
	Clients     int
}

// Mode is how a command has the kernel report transitions, which changes tp_set_state's work.
type Mode string

const (
	Streaming Mode = "streaming" // watch: every transition is a record
	Counting  Mode = "counting"  // timewait, doctor, serve: the kernel counts transitions
)

// Report is the whole measurement.
type Report struct {
	Options Options
	Runs    []Run
}

// Run is one close order in one mode, beside the floor measured for that close order.
type Run struct {
	CloseFirst string
	Mode       Mode
	Workload   churn.Result // the run's own workload
	Floor      churn.Result // the workload of the run with empty bodies
	Lost       uint64       // records the kernel could not write during the run
	Programs   []Program
}

// Program is one attached program's counts over the workload, and its floor's.
type Program struct {
	Name    string
	Hook    tracer.Hook
	Backend tracer.Backend
	Runs    uint64
	RunTime time.Duration
	Misses  uint64 // runs the kernel skipped: the program was already running on that CPU
	// FloorRuns and FloorRunTime are the same program's with an empty body, over the same
	// workload. Floored is false where the backend's programs have no empty variant.
	Floored      bool
	FloorRuns    uint64
	FloorRunTime time.Duration
}

// PerRun is the average run time as measured, statistics on; 0 before any run.
func (p Program) PerRun() time.Duration { return perRun(p.RunTime, p.Runs) }

// FloorPerRun is the empty body's average; ok is false when it is unknown: no empty
// variant, or the empty body never ran.
func (p Program) FloorPerRun() (d time.Duration, ok bool) {
	return perRun(p.FloorRunTime, p.FloorRuns), p.Floored && p.FloorRuns > 0
}

func perRun(d time.Duration, runs uint64) time.Duration {
	if runs == 0 {
		return 0
	}
	return d / time.Duration(runs)
}

// RunsPerConnection divides the program's runs by the connections the workload made.
func (r Run) RunsPerConnection(p Program) float64 {
	if r.Workload.Connections == 0 {
		return 0
	}
	return float64(p.Runs) / float64(r.Workload.Connections)
}

// Estimate is the program's time per connection above its floor, in nanoseconds; ok is
// false when the floor is unknown and the program ran.
func (r Run) Estimate(p Program) (ns float64, ok bool) {
	if p.Runs == 0 {
		return 0, true
	}
	floor, ok := p.FloorPerRun()
	if !ok {
		return 0, false
	}
	return r.RunsPerConnection(p) * float64(p.PerRun()-floor), true
}

// Measure holds the kernel's statistics on for the measurement only and, for each close
// order, runs the workload under empty bodies, then under the real programs in each mode.
// Every tracer and namespace is closed before it returns.
func Measure(o Options) (Report, error) {
	rep := Report{Options: o}
	stats, err := tracer.EnableRunTimeStats()
	if err != nil {
		return rep, err
	}
	defer stats.Close()
	for _, order := range []string{"client", "server"} {
		cfg := churn.Config{Clients: o.Clients, CloseFirst: order, Family: 4, Payload: 64, Connections: o.Connections}
		floor, err := measureOnce(cfg, tracer.Options{Backend: o.Backend, EmptyBodies: true})
		if err != nil {
			return rep, fmt.Errorf("measure the floor (empty programs, %s closes first): %w", order, err)
		}
		for _, mode := range []Mode{Streaming, Counting} {
			m, err := measureOnce(cfg, tracer.Options{Backend: o.Backend, CountTransitions: mode == Counting})
			if err != nil {
				return rep, fmt.Errorf("measure the programs (%s, %s closes first): %w", mode, order, err)
			}
			rep.Runs = append(rep.Runs, join(order, mode, m, floor))
		}
	}
	return rep, nil
}

// measurement is one tracer's counts over one workload.
type measurement struct {
	workload churn.Result
	costs    map[string]tracer.ProgramCost // the window's growth, per program
	choices  []tracer.Choice
	lost     uint64
}

// measureOnce attaches a tracer, reads its programs' counters around the workload only
// (loading runs none of them, but the machine's other traffic does), and closes the tracer
// before the namespace, so the namespace's teardown is not counted.
func measureOnce(cfg churn.Config, to tracer.Options) (measurement, error) {
	var m measurement
	ns, err := churn.NewNetns()
	if err != nil {
		return m, err
	}
	defer ns.Close()
	t, err := tracer.New(to)
	if err != nil {
		return m, err
	}
	defer t.Close()
	m.choices = t.Choices()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- t.Run(ctx, func(*tracer.Event) {}, nil) }() // reads what a streaming run writes
	before, err := t.ProgramCosts()
	if err == nil {
		m.workload, err = ns.Run(cfg)
	}
	var after []tracer.ProgramCost
	if err == nil {
		after, err = t.ProgramCosts()
	}
	stop()
	if rerr := <-done; err == nil {
		err = rerr
	}
	if err != nil {
		return m, err
	}
	s, err := t.Stats()
	if err != nil {
		return m, err
	}
	m.lost = s.Lost
	m.costs = map[string]tracer.ProgramCost{}
	for _, b := range before {
		m.costs[b.Name] = b
	}
	for _, a := range after {
		b := m.costs[a.Name]
		m.costs[a.Name] = tracer.ProgramCost{Name: a.Name, Runs: a.Runs - b.Runs, RunTime: a.RunTime - b.RunTime,
			RecursionMisses: a.RecursionMisses - b.RecursionMisses}
	}
	return m, nil
}

// join pairs each program attached to a hook with its floor; programs twtrace runs
// itself (settling held cancels, reading jiffies) are no hook's and not per event.
func join(order string, mode Mode, m, floor measurement) Run {
	r := Run{CloseFirst: order, Mode: mode, Workload: m.workload, Floor: floor.workload, Lost: m.lost}
	for _, c := range m.choices {
		for _, name := range c.Programs {
			p, f := m.costs[name], floor.costs[name]
			r.Programs = append(r.Programs, Program{Name: name, Hook: c.Hook, Backend: c.Backend,
				Runs: p.Runs, RunTime: p.RunTime, Misses: p.RecursionMisses,
				Floored: tracer.Emptied(c.Backend), FloorRuns: f.Runs, FloorRunTime: f.RunTime})
		}
	}
	return r
}
