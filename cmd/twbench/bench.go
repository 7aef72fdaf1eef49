package main

import (
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

var closeOrders = []string{"client", "server"}

// abortOrder is churn whose client resets its connections: no TIME_WAIT socket is born,
// so every timer operation the programs see is some other timer's, the ones the timer
// hooks must reject at once.
const abortOrder = "abort"

// The tools measured; the first attaches twtrace's programs with empty bodies: the cost
// of attaching at all, which no program body can go under.
const (
	emptyTool     = "twtrace, empty programs"
	aggregateTool = "twtrace timewait"
	streamTool    = "twtrace watch -o json"
)

// results holds every sample of one overhead run, by close order and tool.
type results struct {
	cfg     config
	tools   []tool
	rounds  map[string][]map[string]sample // close order -> round -> tool -> sample
	costs   map[string]map[string]sample   // close order -> tool -> sample with program costs
	decoder benchLine
}

func overhead(cfg config) error {
	empty := twtraceTool(emptyTool, cfg.twtrace, "timewait", "-o", "json")
	empty.env = []string{"TWTRACE_BENCH_EMPTY=1"}
	tools := []tool{
		{name: "baseline"},
		empty,
		twtraceTool(aggregateTool, cfg.twtrace, "timewait", "-o", "json"),
		twtraceTool(streamTool, cfg.twtrace, "watch", "-o", "json"),
		tcpstatesTool(cfg.tcpstates),
	}
	res := results{cfg: cfg, tools: tools, rounds: map[string][]map[string]sample{}, costs: map[string]map[string]sample{}}
	for _, order := range closeOrders {
		for round := range cfg.rounds {
			got := map[string]sample{}
			// interleaved, and rotated each round so no tool always runs first or last
			for i := range tools {
				t := tools[(i+round)%len(tools)]
				s, err := measure(cfg, t, order, false)
				if err != nil {
					return err
				}
				got[t.name] = s
				fmt.Fprintf(os.Stderr, "%s closes first, round %d: %-22s %8.0f connections/s\n", order, round+1, t.name, s.perSecond)
			}
			res.rounds[order] = append(res.rounds[order], got)
		}
	}
	stop, err := enableStats()
	if err != nil {
		return err
	}
	for _, order := range append(closeOrders, abortOrder) {
		res.costs[order] = map[string]sample{}
		for _, t := range tools[1:] {
			if order == abortOrder && !slices.Contains([]string{emptyTool, aggregateTool, streamTool}, t.name) {
				continue
			}
			s, err := measure(cfg, t, order, true)
			if err != nil {
				stop()
				return err
			}
			res.costs[order][t.name] = s
		}
	}
	stop()
	if res.decoder, err = userspaceBench(); err != nil {
		return err
	}
	report := res.markdown()
	fmt.Print(report)
	return replaceSection(cfg.out, "make bench", report)
}

// benchLine is the recorded-stream benchmark's result.
type benchLine struct {
	nsPerOp, eventsPerSec, allocs float64
}

// userspaceBench replays the recorded event stream through decode and aggregation.
func userspaceBench() (benchLine, error) {
	var b benchLine
	out, err := exec.Command("go", "test", "-run", "^$", "-bench", "DecodeAggregateRecorded", "-benchmem", "-count", "1", "-cpu", "1", "./internal/window").CombinedOutput()
	if err != nil {
		return b, fmt.Errorf("go test -bench: %w\n%s", err, out)
	}
	m := regexp.MustCompile(`BenchmarkDecodeAggregateRecorded\S*\s+\d+\s+([\d.]+) ns/op\s+([\d.]+) events/s\s+\d+ B/op\s+(\d+) allocs/op`).FindSubmatch(out)
	if m == nil {
		return b, fmt.Errorf("unexpected benchmark output:\n%s", out)
	}
	b.nsPerOp, _ = strconv.ParseFloat(string(m[1]), 64)
	b.eventsPerSec, _ = strconv.ParseFloat(string(m[2]), 64)
	b.allocs, _ = strconv.ParseFloat(string(m[3]), 64)
	return b, nil
}

// replaceSection writes body between the section's markers in path, appending the
// section if it is not there yet.
func replaceSection(path, name, body string) error {
	begin, end := "<!-- "+name+": begin -->\n", "<!-- "+name+": end -->\n"
	old, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	s := string(old)
	section := begin + body + end
	i, j := strings.Index(s, begin), strings.Index(s, end)
	if i >= 0 && j > i {
		s = s[:i] + section + s[j+len(end):]
	} else {
		s += "\n" + section
	}
	return os.WriteFile(path, []byte(s), 0o644)
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
