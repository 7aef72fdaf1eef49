package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/churn"
	"github.com/twtrace/twtrace/internal/selfcost"
	"github.com/twtrace/twtrace/tracer"
)

// A program that never ran shows '-', one without an empty variant shows its floor and
// estimate as unknown (JSON null, and the run's total null), and a run the machine's own
// work disturbed says its numbers are upper bounds.
func TestCostOutput(t *testing.T) {
	rounds := []churn.Result{{Connections: 100, Seconds: 0.1}, {Connections: 100, Seconds: 0.1, Unserved: 3, Errors: map[string]int{"connect: x": 2}}}
	rep := selfcost.Report{Options: selfcost.Options{Connections: 100, Clients: 2}, Runs: []selfcost.Run{{
		CloseFirst: "client", Mode: selfcost.Streaming, Workload: rounds, Floor: rounds,
		Programs: []selfcost.Program{
			{Name: "tp_set_state", Hook: tracer.HookState, Backend: tracer.BackendTracepoint, Round: 2, Connections: 100,
				Runs: 1000, RunTime: 400 * time.Microsecond, Background: selfcost.Counts{Runs: 500}, Floored: true,
				Floor: selfcost.Counts{Runs: 2000, RunTime: 120 * time.Microsecond}},
			{Name: "fe_twsk_kill", Hook: tracer.HookTimewait, Backend: tracer.BackendFentry, Round: 1, Connections: 100,
				Runs: 100, RunTime: 50 * time.Microsecond},
			{Name: "tp_send_reset", Hook: tracer.HookReset, Backend: tracer.BackendTracepoint, Round: 1, Connections: 100, Floored: true},
		},
	}}}
	var text bytes.Buffer
	writeCostText(&text, rep)
	for _, want := range []string{
		"client closes first, streaming (watch): 100 in 0.10 s, 100 in 0.10 s (2 failed) (3 never finished by the server)",
		"    tp_set_state                 2     10.00     50%      400       60       3400\n",
		"    fe_twsk_kill                 1      1.00      0%      500  unknown    unknown\n",
		"    tp_send_reset                1      0.00       -        -        -          0\n",
		"    all programs                                                             3400 + unknown for fe_twsk_kill",
		"about 50% of a program's runs here: these numbers are upper bounds",
		"What these numbers cannot say:",
		"about 80 ns to every run",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, text.String())
		}
	}

	var out bytes.Buffer
	if err := writeProbeJSON(&out, tracer.Report{}, &rep); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Cost struct {
			Rounds int `json:"rounds"`
			Runs   []struct {
				Rounds   []map[string]any `json:"rounds"`
				Estimate *float64         `json:"estimate_ns_per_connection"`
				Programs []map[string]any `json:"programs"`
			} `json:"runs"`
			Limits []string `json:"limits"`
		} `json:"cost"`
	}
	if err := json.Unmarshal(out.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	run := got.Cost.Runs[0]
	if got.Cost.Rounds != selfcost.Rounds || len(got.Cost.Limits) == 0 || run.Estimate != nil || len(run.Programs) != 3 {
		t.Fatalf("cost JSON %s", out.String())
	}
	if r := run.Rounds[1]; r["unserved"] != 3.0 || r["errors"].(map[string]any)["connect: x"] != 2.0 {
		t.Errorf("round %v", r)
	}
	state, fentry, reset := run.Programs[0], run.Programs[1], run.Programs[2]
	if state["runs_per_connection"] != 10.0 || state["ns_per_run"] != 400.0 || state["floor_ns_per_run"] != 60.0 ||
		state["estimate_ns_per_connection"] != 3400.0 || state["estimate_ns_per_run"] != 340.0 || state["background_runs"] != 500.0 || state["floor_runs"] != 2000.0 || state["round"] != 2.0 {
		t.Errorf("tp_set_state %v", state)
	}
	if fentry["floor_ns_per_run"] != nil || fentry["floor_runs"] != nil || fentry["estimate_ns_per_connection"] != nil || fentry["estimate_ns_per_run"] != nil {
		t.Errorf("a program without an empty variant: %v, want its floor and estimate null", fentry)
	}
	if reset["ns_per_run"] != nil || reset["floor_ns_per_run"] != nil || reset["estimate_ns_per_connection"] != 0.0 {
		t.Errorf("a program that never ran: %v, want no time per run and an estimate of 0", reset)
	}

	out.Reset()
	if err := writeProbeJSON(&out, tracer.Report{}, nil); err != nil || !strings.Contains(out.String(), `"cost": null`) {
		t.Errorf("without --cost: %v\n%s", err, out.String())
	}
}
