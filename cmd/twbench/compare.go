package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
	"time"
)

// compare is the development loop: a few configurations measured interleaved against
// the same baseline, on a busy machine too, with each program's run time from the
// kernel's statistics. It writes nothing; make bench is the record.
//
//	twbench compare -close server -rounds 5 \
//	    -tool 'old=/tmp/twtrace-old timewait -o json' -tool 'new=bin/twtrace timewait -o json'
func compare(args []string) error {
	fs := flag.NewFlagSet("twbench compare", flag.ContinueOnError)
	var cfg config
	var specs toolSpecs
	fs.StringVar(&cfg.churn, "churn", "bin/churn", "the churn binary")
	fs.IntVar(&cfg.rounds, "rounds", 5, "interleaved rounds")
	fs.IntVar(&cfg.clients, "clients", 8, "churn clients")
	fs.DurationVar(&cfg.duration, "duration", 5*time.Second, "churn per measurement")
	closeFirst := fs.String("close", "server", "client, server or abort (connections reset, no TIME_WAIT)")
	statRounds := fs.Int("stat-rounds", 1, "then interleaved rounds with the kernel's run time statistics")
	fs.StringVar(&cfg.cpus, "cpus", "", "pin churn to these CPUs (taskset list, e.g. 0 or 0,1)")
	fs.Var(&specs, "tool", "NAME=BINARY ARGS... (repeatable); env: NAME=ENV=V,... BINARY ARGS")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(specs) == 0 {
		return fmt.Errorf("no -tool given")
	}
	tools := append([]tool{{name: "baseline"}}, specs...)
	ratios := map[string][]float64{}
	cpu := map[string][]float64{}     // µs of CPU per connection, churn's and the tool's
	toolCPU := map[string][]float64{} // the tool's alone
	for round := range cfg.rounds {
		var base float64
		got := map[string]float64{}
		for i := range tools {
			t := tools[(i+round)%len(tools)]
			s, err := measure(cfg, t, *closeFirst, false)
			if err != nil {
				return err
			}
			got[t.name] = s.perSecond
			cpu[t.name] = append(cpu[t.name], float64(s.churnCPU+s.toolCPU)/1e3)
			toolCPU[t.name] = append(toolCPU[t.name], float64(s.toolCPU)/1e3)
			if t.argv == nil {
				base = s.perSecond
			}
		}
		fmt.Printf("round %d:", round+1)
		for _, t := range tools {
			ratios[t.name] = append(ratios[t.name], got[t.name]/base)
			fmt.Printf("  %s %.0f/s (%.3f)", t.name, got[t.name], got[t.name]/base)
		}
		fmt.Println()
	}
	fmt.Printf("\n| tool | median ratio | min–max | CPU µs per connection (churn + tool) | of which the tool's |\n| --- | ---: | ---: | ---: | ---: |\n")
	for _, t := range tools {
		lo, hi := minMax(ratios[t.name])
		fmt.Printf("| %s | %.3f | %.3f–%.3f | %.2f | %.2f |\n", t.name, median(ratios[t.name]), lo, hi, median(cpu[t.name]), median(toolCPU[t.name]))
	}
	stop, err := enableStats()
	if err != nil {
		return err
	}
	defer stop()
	// program name -> tool -> average ns of each interleaved run
	avg := map[string]map[string][]float64{}
	var progs []string
	for round := range *statRounds {
		for i := range specs {
			t := specs[(i+round)%len(specs)]
			s, err := measure(cfg, t, *closeFirst, true)
			if err != nil {
				return err
			}
			for _, p := range s.progs {
				if p.runs < 100 {
					continue
				}
				if avg[p.name] == nil {
					avg[p.name] = map[string][]float64{}
					progs = append(progs, p.name)
				}
				avg[p.name][t.name] = append(avg[p.name][t.name], p.avgNs())
			}
		}
	}
	fmt.Printf("\n| program |")
	for _, t := range specs {
		fmt.Printf(" %s ns (min–max) |", t.name)
	}
	fmt.Printf("\n| --- |%s\n", strings.Repeat(" ---: |", len(specs)))
	for _, p := range progs {
		fmt.Printf("| %s |", p)
		for _, t := range specs {
			lo, hi := minMax(avg[p][t.name])
			fmt.Printf(" %.0f (%.0f–%.0f) |", median(avg[p][t.name]), lo, hi)
		}
		fmt.Println()
	}
	return nil
}

// toolSpecs parses -tool NAME=[ENV=V,...:]BINARY ARGS.
type toolSpecs []tool

func (s *toolSpecs) String() string { return "" }

func (s *toolSpecs) Set(v string) error {
	name, rest, ok := strings.Cut(v, "=")
	if !ok || name == "" {
		return fmt.Errorf("want NAME=BINARY ARGS, got %q", v)
	}
	fields := strings.Fields(rest)
	var env []string
	for len(fields) > 0 && strings.Contains(fields[0], "=") {
		env = append(env, fields[0])
		fields = fields[1:]
	}
	if len(fields) == 0 {
		return fmt.Errorf("tool %s: no binary", name)
	}
	if _, err := os.Stat(fields[0]); err != nil {
		return fmt.Errorf("tool %s: %w", name, err)
	}
	t := twtraceTool(name, fields[0], fields[1:]...)
	t.env = slices.Clone(env)
	*s = append(*s, t)
	return nil
}
