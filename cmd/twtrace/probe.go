package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/twtrace/twtrace/internal/selfcost"
	"github.com/twtrace/twtrace/tracer"
)

func probe(args []string, stdout, stderr io.Writer) error {
	fs := commandFlags("probe", "Usage: twtrace probe [flags]\n\nShow the kernel, its BTF, what each attach method can do here, and the backend each hook gets;\nwith --cost, also what each program costs per connection of a short loopback workload.\nExits 0 when twtrace can run with --backend, 3 when this kernel cannot run that backend,\n4 when twtrace does not implement it for every hook yet.", stdout)
	output := fs.String("o", "text", "output format: text or json")
	backend := fs.String("backend", "auto", "backend to try: auto, fentry, kprobe or tracepoint")
	cost := costFlags(fs)
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *output != "text" && *output != "json" {
		return usagef("-o %q: want text or json", *output)
	}
	b, err := tracer.ParseBackend(*backend)
	if err != nil {
		return usagef("--backend: %s", err)
	}
	if err := cost.validate(fs); err != nil {
		return err
	}
	if err := tracer.CheckPrivileges(); err != nil {
		return err
	}
	r := tracer.Probe(b)
	var measured *selfcost.Report
	if cost.on && r.Err == nil {
		rep, err := selfcost.Measure(selfcost.Options{Backend: b, Connections: cost.connections, Clients: costClients})
		if err != nil {
			return fmt.Errorf("measure the cost (--cost): %w", err)
		}
		measured = &rep
	}
	if *output == "json" {
		err = writeProbeJSON(stdout, r, measured)
	} else {
		writeProbeText(stdout, r)
		if measured != nil {
			writeCostText(stdout, *measured)
		} else if cost.on {
			fmt.Fprintf(stdout, "\ncost per connection (--cost): not measured: twtrace cannot run with --backend %s here\n", b)
		}
	}
	if err != nil {
		return err
	}
	if r.Err != nil {
		return errUnavailable{r.Err}
	}
	return nil
}

// exitStatus: 3 when the kernel cannot run the backend, 4 when twtrace does not implement it.
func (e errUnavailable) exitStatus() int {
	if errors.Is(e.err, tracer.ErrNotImplemented) {
		return 4
	}
	return 3
}

// errUnavailable exits with status 3: this kernel cannot run the requested backend.
type errUnavailable struct{ err error }

func (e errUnavailable) Error() string {
	if e.exitStatus() == 4 {
		return "not implemented by twtrace yet: " + e.err.Error()
	}
	return "not available on this kernel: " + e.err.Error()
}

func writeProbeText(w io.Writer, r tracer.Report) {
	fmt.Fprintf(w, "kernel:  %s\n", r.Kernel)
	if r.BTF {
		fmt.Fprintf(w, "BTF:     yes (/sys/kernel/btf/vmlinux)\n")
	} else {
		fmt.Fprintf(w, "BTF:     no: twtrace needs Linux 5.10+ with CONFIG_DEBUG_INFO_BTF=y\n")
	}
	switch {
	case r.HZ.HZ == 0:
	case r.HZ.Source == "measured":
		fmt.Fprintf(w, "HZ:      %d (measured: no kernel configuration readable)\n", r.HZ.HZ)
	case r.HZMeasured != 0 && r.HZMeasured != r.HZ.HZ:
		fmt.Fprintf(w, "HZ:      %d (from %s; measured %d, disturbed: a stalled CPU delays the tick)\n", r.HZ.HZ, r.HZ.Source, r.HZMeasured)
	case r.HZMeasured != 0:
		fmt.Fprintf(w, "HZ:      %d (from %s; measured the same)\n", r.HZ.HZ, r.HZ.Source)
	default:
		fmt.Fprintf(w, "HZ:      %d (from %s)\n", r.HZ.HZ, r.HZ.Source)
	}
	fmt.Fprintf(w, "\nattach methods:\n")
	for _, f := range r.Features {
		if f.OK {
			fmt.Fprintf(w, "  %-32s yes\n", f.Name)
		} else {
			fmt.Fprintf(w, "  %-32s no: %s\n", f.Name, f.Detail)
		}
	}
	fmt.Fprintf(w, "\nhooks:\n")
	for _, c := range r.Choices {
		fmt.Fprintf(w, "  %-9s -> %s\n", c.Hook, backendName(c.Backend))
		for _, b := range sortedBackends(c.Unavailable) {
			fmt.Fprintf(w, "  %-9s    %s: %s\n", "", b, c.Unavailable[b])
		}
	}
	if r.Err == nil {
		fmt.Fprintf(w, "\nevent families traced here: %s\n", r.Families)
		fmt.Fprintf(w, "per-socket records: %s\n", recordsName(r.Records))
	}
	if len(r.Missing) > 0 {
		fmt.Fprintf(w, "\nevent families unavailable here (the others are traced):\n")
		for _, m := range r.Missing {
			fmt.Fprintf(w, "  %-9s needs hook %s: %s\n", m.Family, m.Hook, m.Reason)
		}
	}
	if r.Err != nil {
		fmt.Fprintf(w, "\ncannot trace: %s\n", r.Err)
	}
}

// recordsName says where the programs keep per-socket records, and why.
func recordsName(r tracer.Records) string {
	if r == tracer.RecordTables {
		return "tables (claimed with BPF atomics)"
	}
	return "LRU hashes (this kernel has no BPF atomics, Linux 5.12+)"
}

func sortedBackends(m map[tracer.Backend]string) []tracer.Backend {
	var bs []tracer.Backend
	for b := range m {
		bs = append(bs, b)
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i] < bs[j] })
	return bs
}

func writeProbeJSON(w io.Writer, r tracer.Report, cost *selfcost.Report) error {
	type hook struct {
		Hook        string            `json:"hook"`
		Backend     *string           `json:"backend"` // null: no backend can serve it here
		Unavailable map[string]string `json:"unavailable"`
	}
	out := struct {
		Kernel   string `json:"kernel"`
		BTF      bool   `json:"btf"`
		HZ       uint32 `json:"hz,omitempty"`
		HZSource string `json:"hz_source,omitempty"`
		// HZMeasured cross-checks a configured HZ
		HZMeasured uint32            `json:"hz_measured,omitempty"`
		Features   []tracer.Feature  `json:"features"`
		Hooks      []hook            `json:"hooks"`
		Families   []string          `json:"families"`
		Missing    map[string]string `json:"unavailable_families"`
		Records    string            `json:"records,omitempty"` // tables or lru-hash; empty when the tracer could not start
		Error      *string           `json:"error"`
		Cost       *costJSON         `json:"cost"` // null without --cost, or when the backend cannot run
	}{Cost: newCostJSON(cost), Kernel: r.Kernel, BTF: r.BTF, HZ: r.HZ.HZ, HZSource: r.HZ.Source, HZMeasured: r.HZMeasured, Features: r.Features, Families: []string{},
		Records: string(r.Records),
		Missing: map[string]string{}}
	for _, f := range families {
		if r.Families&f != 0 {
			out.Families = append(out.Families, f.String())
		}
	}
	for _, c := range r.Choices {
		h := hook{Hook: string(c.Hook), Unavailable: map[string]string{}}
		if c.Backend != "" {
			b := string(c.Backend)
			h.Backend = &b
		}
		for b, why := range c.Unavailable {
			h.Unavailable[string(b)] = why
		}
		out.Hooks = append(out.Hooks, h)
	}
	for _, m := range r.Missing {
		out.Missing[m.Family.String()] = m.Reason
	}
	if r.Err != nil {
		s := r.Err.Error()
		out.Error = &s
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}
