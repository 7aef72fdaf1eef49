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
	Connections uint64 // per round, each round in a new namespace
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
	Workload   []churn.Result // each round's
	Floor      []churn.Result // each round's with empty bodies
	Lost       uint64         // records the kernel could not write during the rounds
	Programs   []Program
}

// Program is one attached program's counts over the workload, and its floor's.
type Program struct {
	Name    string
	Hook    tracer.Hook
	Backend tracer.Backend
	// Round (from 1) is the round the program is reported from, Connections its workload's.
	Round       int
	Connections uint64
	// Runs and RunTime are what the kernel counted while the workload ran: the
	// workload's runs and whatever else the machine did meanwhile.
	Runs    uint64
	RunTime time.Duration
	// Background estimates the machine's share of them: the same program's counts over an
	// idle stretch right before the workload, scaled to the workload's duration.
	Background Counts
	Misses     uint64 // runs the kernel skipped: the program was already running on that CPU
	// Floor is the same program with an empty body over every round of the same workload
	// (an empty body costs the same whatever the event). Floored is false where the
	// backend's programs have no empty variant.
	Floored     bool
	Floor       Counts
	FloorMisses uint64 // the empty program's runs the kernel skipped, over every round
}

// Counts are runs and their time.
type Counts struct {
	Runs    float64
	RunTime time.Duration
}

// PerRun is the average of every run in the window, as measured with the statistics on;
// ok is false when none ran.
func (p Program) PerRun() (time.Duration, bool) {
	return Counts{Runs: float64(p.Runs), RunTime: p.RunTime}.perRun()
}

// FloorPerRun is the empty body's average; ok is false when it is unknown: no empty
// variant, or the empty body never ran.
func (p Program) FloorPerRun() (time.Duration, bool) {
	if !p.Floored {
		return 0, false
	}
	return p.Floor.perRun()
}

func (c Counts) perRun() (time.Duration, bool) {
	if c.Runs < 0.5 {
		return 0, false
	}
	return time.Duration(float64(c.RunTime) / c.Runs), true
}

// RunsPerConnection divides every run in the window by the workload's connections: on a
// quiet machine the workload's runs, on a busy one more (Background says about how many).
// Taking the background out would trade this bound for a guess: it comes in bursts.
func (p Program) RunsPerConnection() float64 {
	if p.Connections == 0 {
		return 0
	}
	return float64(p.Runs) / float64(p.Connections)
}

// Estimate is the program's time per connection above its floor, in nanoseconds; ok is
// false when the floor is unknown and the workload ran the program.
func (p Program) Estimate() (ns float64, ok bool) {
	perRun, ran := p.PerRun()
	if !ran {
		return 0, true
	}
	floor, ok := p.FloorPerRun()
	if !ok {
		return 0, false
	}
	return p.RunsPerConnection() * float64(perRun-floor), true
}

// Rounds is how often each close order's workload runs under each variant. Each program
// is reported from its round with the fewest runs per connection: the machine's other work
// only ever adds runs.
const Rounds = 3

// minIdle is the shortest idle stretch measured for the background.
const minIdle = 100 * time.Millisecond

var orders = []string{"client", "server"}

// Measure holds the kernel's statistics on for the measurement only and runs the
// workload, Rounds times per close order, under empty bodies, then under the real
// programs in each mode. Every tracer and namespace is closed before it returns.
func Measure(o Options) (Report, error) {
	rep := Report{Options: o}
	stats, err := tracer.EnableRunTimeStats()
	if err != nil {
		return rep, err
	}
	defer stats.Close()
	// every namespace lives until the last tracer is gone, so no teardown (each TIME_WAIT
	// socket killed) is counted, in its own variant or the next
	var spaces []*churn.Netns
	defer func() {
		for _, ns := range spaces {
			ns.Close()
		}
	}()
	keep := func(ns *churn.Netns) { spaces = append(spaces, ns) }
	floor, err := measureVariant(o, tracer.Options{Backend: o.Backend, EmptyBodies: true}, keep)
	if err != nil {
		return rep, fmt.Errorf("measure the floor (empty programs): %w", err)
	}
	for _, mode := range []Mode{Streaming, Counting} {
		m, err := measureVariant(o, tracer.Options{Backend: o.Backend, CountTransitions: mode == Counting}, keep)
		if err != nil {
			return rep, fmt.Errorf("measure the programs (%s): %w", mode, err)
		}
		for _, order := range orders {
			rep.Runs = append(rep.Runs, join(order, mode, m, floor))
		}
	}
	return rep, nil
}

// variant is one tracer's samples, by close order.
type variant struct {
	choices []tracer.Choice
	samples map[string][]sample
}

// sample is one workload's counts.
type sample struct {
	workload churn.Result
	window   map[string]tracer.ProgramCost // the counters' growth while the workload ran
	idle     map[string]tracer.ProgramCost // and over the idle stretch before it
	idleFor  time.Duration
	// windowFor is the workload's duration, until its namespace was quiet
	windowFor time.Duration
	lost      uint64
}

// quietTimeout bounds the wait for a workload's last transitions, which a softirq
// deferred to ksoftirqd may still be making after its last connection returned.
const quietTimeout = 5 * time.Second

// measureVariant attaches one tracer and samples every round of both close orders, each
// in a new namespace, which it hands to keep.
func measureVariant(o Options, to tracer.Options, keep func(*churn.Netns)) (v variant, err error) {
	v.samples = map[string][]sample{}
	t, err := tracer.New(to)
	if err != nil {
		return v, err
	}
	defer t.Close()
	v.choices = t.Choices()
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- t.Run(ctx, func(*tracer.Event) {}, nil) }() // reads what a streaming run writes
	defer func() {
		stop()
		if rerr := <-done; err == nil {
			err = rerr
		}
	}()
	idleFor := minIdle
	for range Rounds {
		for _, order := range orders {
			ns, err := churn.NewNetns()
			if err != nil {
				return v, err
			}
			keep(ns)
			cfg := churn.Config{Clients: o.Clients, CloseFirst: order, Family: 4, Payload: 64, Connections: o.Connections, Finish: true}
			s, err := sampleOnce(t, ns, cfg, idleFor)
			if err != nil {
				return v, fmt.Errorf("%s closes first: %w", order, err)
			}
			v.samples[order] = append(v.samples[order], s)
			idleFor = max(minIdle, s.windowFor)
		}
	}
	return v, nil
}

// sampleOnce reads the tracer's counters over an idle stretch (the machine's background),
// then around the workload.
func sampleOnce(t *tracer.Tracer, ns *churn.Netns, cfg churn.Config, idleFor time.Duration) (sample, error) {
	s := sample{idleFor: idleFor}
	c0, err := t.ProgramCosts()
	if err != nil {
		return s, err
	}
	time.Sleep(idleFor)
	c1, err := t.ProgramCosts()
	if err != nil {
		return s, err
	}
	st0, err := t.Stats()
	if err != nil {
		return s, err
	}
	start := time.Now()
	if s.workload, err = ns.Run(cfg); err != nil {
		return s, err
	}
	if err := ns.AwaitQuiet(quietTimeout); err != nil {
		return s, err
	}
	s.windowFor = time.Since(start)
	c2, err := t.ProgramCosts()
	if err != nil {
		return s, err
	}
	st1, err := t.Stats()
	if err != nil {
		return s, err
	}
	s.idle, s.window, s.lost = growth(c0, c1), growth(c1, c2), st1.Lost-st0.Lost
	return s, nil
}

// growth is each program's counters' growth from before to after.
func growth(before, after []tracer.ProgramCost) map[string]tracer.ProgramCost {
	was := map[string]tracer.ProgramCost{}
	for _, b := range before {
		was[b.Name] = b
	}
	out := map[string]tracer.ProgramCost{}
	for _, a := range after {
		b := was[a.Name]
		out[a.Name] = tracer.ProgramCost{Name: a.Name, Runs: a.Runs - b.Runs, RunTime: a.RunTime - b.RunTime,
			RecursionMisses: a.RecursionMisses - b.RecursionMisses}
	}
	return out
}

// join reports each program attached to a hook from its least disturbed round, beside
// its floor over every round; programs twtrace runs itself (settling held cancels,
// reading jiffies) are no hook's and not per event.
func join(order string, mode Mode, m, floor variant) Run {
	r := Run{CloseFirst: order, Mode: mode}
	for _, s := range m.samples[order] {
		r.Workload = append(r.Workload, s.workload)
		r.Lost += s.lost
	}
	for _, s := range floor.samples[order] {
		r.Floor = append(r.Floor, s.workload)
	}
	for _, c := range m.choices {
		for _, name := range c.Programs {
			p := Program{Name: name, Hook: c.Hook, Backend: c.Backend, Floored: tracer.Emptied(c.Backend)}
			best := -1.0
			for i, s := range m.samples[order] {
				if s.workload.Connections == 0 {
					continue
				}
				w := s.window[name]
				if perConn := float64(w.Runs) / float64(s.workload.Connections); best < 0 || perConn < best {
					best = perConn
					idle := s.idle[name]
					scale := float64(s.windowFor) / float64(s.idleFor)
					p.Round, p.Connections, p.Runs, p.RunTime, p.Misses = i+1, s.workload.Connections, w.Runs, w.RunTime, w.RecursionMisses
					p.Background = Counts{Runs: float64(idle.Runs) * scale, RunTime: time.Duration(float64(idle.RunTime) * scale)}
				}
			}
			for _, s := range floor.samples[order] {
				p.Floor.Runs += float64(s.window[name].Runs)
				p.Floor.RunTime += s.window[name].RunTime
				p.FloorMisses += s.window[name].RecursionMisses
			}
			r.Programs = append(r.Programs, p)
		}
	}
	return r
}
