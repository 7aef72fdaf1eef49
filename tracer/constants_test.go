package tracer

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
)

// These tests pin every pair of names and numbers Go shares with bpf/ to the generated
// collection spec, without privileges: a C change Go does not follow fails here, not as a
// nil map entry in a root-only test. Generated constants (twtraceProg*, twtraceVar*,
// twtraceMap*, the enum types) already turn a rename into a compile error.

func loadSpec(t *testing.T) *ebpf.CollectionSpec {
	t.Helper()
	spec, err := loadTwtrace()
	if err != nil {
		t.Fatal(err)
	}
	return spec
}

func specEnum(t *testing.T, spec *ebpf.CollectionSpec, name string) *btf.Enum {
	t.Helper()
	var e *btf.Enum
	if err := spec.Types.TypeByName(name, &e); err != nil {
		t.Fatalf("enum %s is not in the BPF objects' BTF: %v", name, err)
	}
	return e
}

// Every value of each C enum has its Go name, and Go names no value C lacks.
func TestBPFEnumsMatchGo(t *testing.T) {
	spec := loadSpec(t)
	lower := func(prefix string) func(string) string {
		return func(c string) string { return strings.ToLower(strings.TrimPrefix(c, prefix)) }
	}
	tests := []struct {
		enum    string
		goName  func(v uint64) string
		want    func(cName string) string // the Go name the C name implies
		goCount int                       // values Go names
	}{
		{"event_kind", func(v uint64) string { return Kind(v).String() }, lower("EV_"), countNamed(kindNames[:])},
		{"tw_cause", func(v uint64) string { return Cause(v).String() }, lower("CAUSE_"), countNamed(causeNames[:])},
		{"tw_detail", func(v uint64) string { return Detail(v).String() },
			func(c string) string { return strings.TrimSuffix(lower("DETAIL_")(c), "none") }, countNamed(detailNames[:]) + 1}, // + none
		{"tcp_state_id", func(v uint64) string { return State(v).String() },
			func(c string) string { return strings.TrimPrefix(c, "S_") }, countNamed(stateNames[:])},
		{"event_family", func(v uint64) string { return Families(v).String() }, lower("FAM_"), len(familyNames)},
	}
	for _, tt := range tests {
		t.Run(tt.enum, func(t *testing.T) {
			e := specEnum(t, spec, tt.enum)
			for _, v := range e.Values {
				if got, want := tt.goName(v.Value), tt.want(v.Name); got != want {
					t.Errorf("C %s = %d is %q in Go, want %q", v.Name, v.Value, got, want)
				}
			}
			if len(e.Values) != tt.goCount {
				t.Errorf("C has %d values, Go names %d", len(e.Values), tt.goCount)
			}
		})
	}
}

func countNamed(names []string) int {
	n := 0
	for _, s := range names {
		if s != "" {
			n++
		}
	}
	return n
}

func TestBPFFamiliesMatchGo(t *testing.T) {
	spec := loadSpec(t)
	var all Families
	for _, v := range specEnum(t, spec, "event_family").Values {
		all |= Families(v.Value)
	}
	if all != AllFamilies {
		t.Errorf("C families %#x, Go AllFamilies %#x", uint32(all), uint32(AllFamilies))
	}
	var def uint32
	if err := spec.Variables[twtraceVarCfgEvents].Get(&def); err != nil {
		t.Fatal(err)
	}
	if Families(def) != AllFamilies {
		t.Errorf("cfg_events defaults to %#x in C, want every family %#x", def, uint32(AllFamilies))
	}
}

// An inferred reset reason is named as the kernel names the same reason (enum sk_rst_reason).
func TestBPFInferredReasonsNamed(t *testing.T) {
	for _, v := range specEnum(t, loadSpec(t), "inferred_reason").Values {
		got := resetReasons(nil).name(uint16(v.Value), false)
		if want := strings.ToLower(strings.TrimPrefix(v.Name, "INFERRED_")); !strings.HasSuffix(got, want) {
			t.Errorf("C %s = %#x is %q in Go, want a kernel reason name ending in %q", v.Name, v.Value, got, want)
		}
	}
}

// Stats reads every counter the kernel keeps, and the map holds exactly those.
func TestBPFStatsMatchGo(t *testing.T) {
	spec := loadSpec(t)
	e := specEnum(t, spec, "stat_index")
	for _, v := range e.Values {
		if v.Name == "STAT_MAX" {
			continue
		}
		if v.Value >= uint64(len(statFields)) || statFields[v.Value] == nil {
			t.Errorf("C counter %s = %d is not read by Stats", v.Name, v.Value)
		}
	}
	if got, want := spec.Maps[twtraceMapStats].MaxEntries, uint32(twtraceStatIndexSTAT_MAX); got != want || len(statFields) != int(want) {
		t.Errorf("stats map holds %d counters, STAT_MAX %d, Stats reads %d", got, want, len(statFields))
	}
}

// Transitions are counted at old*16+new: every state fits in 4 bits and the map has
// the slots Go reads.
func TestBPFTransitionSlots(t *testing.T) {
	spec := loadSpec(t)
	if got := spec.Maps[twtraceMapTransitions].MaxEntries; got != transitionSlots || transitionSlots != 16*16 {
		t.Errorf("transitions map has %d slots (TRANSITION_SLOTS), Go reads %d, want 16*16", got, transitionSlots)
	}
	for _, v := range specEnum(t, spec, "tcp_state_id").Values {
		if v.Value >= 16 {
			t.Errorf("state %s = %d does not fit the 4 bits of a transition slot", v.Name, v.Value)
		}
	}
}

// Every program Go attaches exists with the type its backend implies, every program in
// the objects is attached by some backend or run from Go, and each backend's message
// names what its programs attach to.
func TestBPFProgramsMatchBackends(t *testing.T) {
	spec := loadSpec(t)
	used := map[string]bool{}
	runFromGo := []string{twtraceProgReadJiffies, twtraceProgSettlePending, twtraceProgTestFilter /* filter_test.go */}
	for _, name := range runFromGo {
		used[name] = true
		if p := spec.Programs[name]; p == nil || p.Type != ebpf.RawTracepoint {
			t.Errorf("program %s, run with BPF_PROG_TEST_RUN, is %v, want a raw tracepoint", name, p)
		}
	}
	for hook, impls := range implementations {
		for _, impl := range impls {
			for _, name := range append(slices.Clone(impl.programs), impl.optional...) {
				used[name] = true
				p := spec.Programs[name]
				if p == nil {
					t.Errorf("hook %s, backend %s: program %s is not in the BPF objects", hook, impl.backend, name)
					continue
				}
				if !backendOwns(impl.backend, p) {
					t.Errorf("hook %s, backend %s: program %s is %s/%s (section %s)", hook, impl.backend, name, p.Type, p.AttachType, p.SectionName)
				}
				if slices.Contains(impl.programs, name) && !strings.Contains(impl.needs, p.AttachTo) {
					t.Errorf("hook %s, backend %s: its message %q does not name %s", hook, impl.backend, impl.needs, p.AttachTo)
				}
			}
		}
	}
	for name := range spec.Programs {
		if !used[name] {
			t.Errorf("program %s is in the BPF objects but no backend attaches it and Go never runs it", name)
		}
	}
}

func backendOwns(b Backend, p *ebpf.ProgramSpec) bool {
	switch b {
	case BackendFentry:
		return p.Type == ebpf.Tracing && (p.AttachType == ebpf.AttachTraceFEntry || p.AttachType == ebpf.AttachTraceFExit)
	case BackendKprobe:
		return p.Type == ebpf.Kprobe
	case BackendTracepoint:
		return p.Type == ebpf.Tracing && p.AttachType == ebpf.AttachTraceRawTp
	}
	return false
}

// Every cfg_* variable is set from Go with a value of its C size, for any options.
func TestBPFVariablesSetFromGo(t *testing.T) {
	wasSet := map[string]bool{twtraceVarCfgTwProbes: true} // set once the backend is chosen
	for _, opts := range []Options{
		{Families: AllFamilies, RingBufferSize: DefaultRingBufferSize},
		{Families: FamilyReset, RingBufferSize: 4096, CountTransitions: true},
		{Families: FamilyTW, RingBufferSize: DefaultRingBufferSize, Filter: Filter{
			Port: 1, SPort: 2, DPort: 3, PID: 4, NetNS: 5, Family: 4, Addr: netip.MustParsePrefix("10.0.0.0/8")}},
		{Families: FamilyOverflow, RingBufferSize: DefaultRingBufferSize, Filter: Filter{Addr: netip.MustParsePrefix("2001:db8::/32")}},
	} {
		spec := loadSpec(t)
		s := settings(opts, 0xffffffff81000000)
		if err := set(spec, s); err != nil {
			t.Errorf("options %+v: %v", opts, err)
		}
		for name := range s {
			wasSet[name] = true
		}
	}
	if err := set(loadSpec(t), map[string]any{twtraceVarCfgTwProbes: true}); err != nil {
		t.Error(err)
	}
	for name := range loadSpec(t).Variables {
		if strings.HasPrefix(name, "cfg_") && !wasSet[name] {
			t.Errorf("variable %s is never set from Go", name)
		}
	}
	if err := set(loadSpec(t), map[string]any{"cfg_renamed": uint32(1)}); err == nil {
		t.Error("setting a variable the objects lack succeeded")
	}
}

// The record's arrays and Event's have the same lengths (COMM_LEN, addresses).
func TestBPFRecordArraysMatchEvent(t *testing.T) {
	var rec twtraceEvent
	var ev Event
	if len(rec.Comm) != len(ev.Comm) {
		t.Errorf("C comm holds %d bytes (COMM_LEN), Event.Comm %d", len(rec.Comm), len(ev.Comm))
	}
	if len(rec.Saddr) != 16 || len(rec.Daddr) != 16 {
		t.Errorf("C addresses hold %d and %d bytes, Decode reads 16", len(rec.Saddr), len(rec.Daddr))
	}
}
