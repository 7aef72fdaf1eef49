package tracer

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/features"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Feature is one kernel capability, found by trying it.
type Feature struct {
	Name   string
	OK     bool
	Detail string // why not, when !OK
}

// Report is what `twtrace probe` shows.
type Report struct {
	Kernel   string
	BTF      bool
	Features []Feature
	Choices  []Choice
	Families Families        // event families this kernel delivers
	Missing  []MissingFamily // event families this kernel cannot deliver
	HZ       TickRate
	// HZMeasured is the tick rate measured here, a cross-check of a configured HZ (0 if
	// the measurement failed, or if HZ was measured itself)
	HZMeasured uint32
	Records    Records // where the programs keep per-socket records
	Err        error   // why the tracer could not start, if it could not
}

// Probe tries each attach method on this kernel and then starts the tracer with
// backend to see which backend each hook gets.
func Probe(backend Backend) Report {
	var r Report
	var uts unix.Utsname
	if unix.Uname(&uts) == nil {
		r.Kernel = unix.ByteSliceToString(uts.Release[:])
	}
	r.BTF = CheckBTF() == nil
	r.Features = []Feature{
		feature("ring buffer", features.HaveMapType(ebpf.RingBuf)),
		feature("tp_btf (inet_sock_set_state)", tryTracing(ebpf.AttachTraceRawTp, "inet_sock_set_state")),
		feature("fentry (tcp_time_wait)", tryTracing(ebpf.AttachTraceFEntry, "tcp_time_wait")),
		feature("kprobe (tcp_time_wait)", tryKprobe("tcp_time_wait")),
		feature("BPF atomics (record tables)", haveAtomics()),
	}
	t, err := New(Options{Backend: backend})
	if err != nil {
		r.Err = err
		return r
	}
	defer t.Close()
	r.Choices, r.Families, r.Missing, r.HZ, r.Records = t.Choices(), t.Families(), t.Unavailable(), t.HZ(), t.Records()
	if r.HZ.Source != "measured" {
		r.HZMeasured, _ = t.measureHZ()
	}
	return r
}

func feature(name string, err error) Feature {
	if err == nil {
		return Feature{Name: name, OK: true}
	}
	return Feature{Name: name, Detail: err.Error()}
}

var returnZero = asm.Instructions{asm.Mov.Imm(asm.R0, 0), asm.Return()}

// tryTracing loads and attaches an empty tracing program: loading alone is not proof,
// some kernels accept the type and refuse the load or the attachment.
func tryTracing(at ebpf.AttachType, fn string) error {
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type: ebpf.Tracing, AttachType: at, AttachTo: fn, License: "GPL", Instructions: returnZero,
	})
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("the kernel refuses to load it (EPERM)")
	}
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer p.Close()
	l, err := link.AttachTracing(link.TracingOptions{Program: p})
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}

func tryKprobe(fn string) error {
	if _, err := os.Stat("/sys/bus/event_source/devices/kprobe"); err != nil {
		return fmt.Errorf("the kernel has no kprobe PMU (CONFIG_KPROBES is not set)")
	}
	p, err := ebpf.NewProgram(&ebpf.ProgramSpec{Type: ebpf.Kprobe, License: "GPL", Instructions: returnZero})
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer p.Close()
	l, err := link.Kprobe(fn, p, nil)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, errors.ErrUnsupported) {
		return fmt.Errorf("the kernel has no kprobes (CONFIG_KPROBES) or no %s: %w", fn, err)
	}
	if err != nil {
		return fmt.Errorf("attach: %w", err)
	}
	return l.Close()
}
