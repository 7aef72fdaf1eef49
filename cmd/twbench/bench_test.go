package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestReplaceSection(t *testing.T) {
	path := filepath.Join(t.TempDir(), "B.md")
	os.WriteFile(path, []byte("# Benchmarks\n\nhand-written\n"), 0o644)
	if err := replaceSection(path, "make bench", "first\n"); err != nil {
		t.Fatal(err)
	}
	if err := replaceSection(path, "make bench", "second\n"); err != nil {
		t.Fatal(err)
	}
	want := "# Benchmarks\n\nhand-written\n\n<!-- make bench: begin -->\nsecond\n<!-- make bench: end -->\n"
	if got, _ := os.ReadFile(path); string(got) != want {
		t.Errorf("got %q\nwant %q", got, want)
	}
}

func TestFlat(t *testing.T) {
	for _, tt := range []struct {
		name   string
		values []float64
		slack  float64
		want   bool
	}{
		{"steady", []float64{100, 102, 99, 101, 100, 103, 100, 101}, 0, true},
		{"growing", []float64{100, 110, 120, 130, 140, 150, 160, 170}, 0, false},
		{"small counts wobble within slack", []float64{3, 9, 4, 12, 5, 20, 8, 30}, 64, true},
		{"shrinking", []float64{200, 150, 100, 90, 80, 70, 60, 50}, 0, true},
	} {
		if _, _, got := flat(tt.values, tt.slack); got != tt.want {
			t.Errorf("%s: flat = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestLostParsers(t *testing.T) {
	twtrace := twtraceTool("t", "twtrace").lost
	if n, ok := twtrace("twtrace: 10 events (of 12 the kernel wrote), 7 lost [3 4], 0 missed"); !ok || n != 7 {
		t.Errorf("twtrace summary: %d %v, want 7 true", n, ok)
	}
	tcpstates := tcpstatesTool("tcpstates").lost
	if n, ok := tcpstates("lost 5 events on CPU #0\nlost 6 events on CPU #1\n"); !ok || n != 11 {
		t.Errorf("tcpstates: %d %v, want 11 true", n, ok)
	}
	if _, ok := tcpstates("nothing lost\n"); ok {
		t.Error("tcpstates without loss lines should report none")
	}
}

func TestMedian(t *testing.T) {
	if m := median([]float64{3, 1, 2}); m != 2 {
		t.Errorf("median odd = %v", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median even = %v", m)
	}
}

// The report's ratios are per round against that round's baseline, and the targets
// read the right tools.
func TestReport(t *testing.T) {
	tools := []tool{{name: "baseline"}, {name: emptyTool, argv: []string{"x"}}, {name: aggregateTool, argv: []string{"x"}},
		{name: streamTool, argv: []string{"x"}}, {name: "tcpstates", argv: []string{"x"}}}
	round := func(base float64) map[string]sample {
		return map[string]sample{
			"baseline":    {perSecond: base},
			emptyTool:     {perSecond: base},
			aggregateTool: {perSecond: base * 0.98, lostKnown: true, rssKiB: 30 << 10},
			streamTool:    {perSecond: base * 0.5, lost: 7, lostKnown: true},
			"tcpstates":   {perSecond: base * 0.25, lost: 100, lostKnown: true},
		}
	}
	costs := map[string]sample{aggregateTool: {progs: []progCost{{name: "tp_set_state", runs: 2000, totalNs: 500_000}}},
		emptyTool: {progs: []progCost{{name: "tp_set_state", runs: 2000, totalNs: 100_000}}}}
	r := results{cfg: config{clients: 8, rounds: 2}, tools: tools,
		rounds: map[string][]map[string]sample{"client": {round(100), round(200)}, "server": {round(1000), round(3000)}},
		costs:  map[string]map[string]sample{"client": costs, "server": costs}}
	md := r.markdown()
	for _, want := range []string{
		"| twtrace watch -o json | 75 | 0.500 (0.500–0.500) | 1000 | 0.500 (0.500–0.500) | 28 |",
		"| tcpstates | 38 | 0.250 (0.250–0.250) | 500 | 0.250 (0.250–0.250) | 400 |",
		"| aggregating (`timewait`), client closes first ≥ 0.99 of baseline | 0.980 (0.980–0.980) | **no** |",
		"| aggregating (`timewait`), server closes first ≥ 0.92 of baseline | 0.980 (0.980–0.980) | yes |",
		"| streaming (`watch -o json`), server closes first ≥ 0.85 of baseline | 0.500 (0.500–0.500) | **no** |",
		"| `tp_set_state` aggregating ≤ 150 ns per run | 250 ns (client closes first) | **no** |",
		"| a non-timewait timer operation ≤ 15 ns above an empty program | no timer program ran 1,000 times in the run without TIME_WAIT | not measurable here |",
		"| zero lost events, default 4 MiB ring buffer | 28 lost | **no** |",
		"slowest: `tp_set_state` 250 ns, of which 50 ns an empty program's | yes |",
		"| peak RSS < 64 MiB | 30.0 MiB | yes |",
	} {
		if !strings.Contains(md, want) {
			t.Errorf("report lacks %q:\n%s", want, md)
		}
	}

	// the timer target is read from the run without TIME_WAIT sockets, each tool against the empty programs
	timers := func(startNs, cancelNs uint64) sample {
		return sample{progs: []progCost{{name: "tp_timer_start", runs: 1000, totalNs: 1000 * startNs},
			{name: "tp_timer_cancel", runs: 1000, totalNs: 1000 * cancelNs}}}
	}
	r.costs[abortOrder] = map[string]sample{emptyTool: timers(60, 62), aggregateTool: timers(70, 72), streamTool: timers(71, 80)}
	want := "| a non-timewait timer operation ≤ 15 ns above an empty program | `tp_timer_start` +10 ns (timewait), `tp_timer_start` +11 ns (watch -o json), " +
		"`tp_timer_cancel` +10 ns (timewait), `tp_timer_cancel` +18 ns (watch -o json); connections reset, no TIME_WAIT socket | **no** |"
	if md := r.markdown(); !strings.Contains(md, want) {
		t.Errorf("report lacks %q:\n%s", want, md)
	}
}
