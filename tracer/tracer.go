// Package tracer loads twtrace's eBPF programs, attaches them and decodes what they report.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
)

// settleInterval is how often held timewait cancels are settled on idle CPUs.
const settleInterval = 100 * time.Millisecond

// wakeupShift sets the wakeup batch, 1<<shift bytes: a quarter of the ring buffer, at
// most 256 KiB. Below a batch the reader polls every settleInterval, so an event waits
// at most that long.
func wakeupShift(ringSize uint32) uint32 {
	batch := min(ringSize/4, 256<<10)
	return uint32(bits.Len32(batch) - 1)
}

// Tracer is a set of attached programs and the ring buffer they write to.
type Tracer struct {
	opts    Options
	coll    *ebpf.Collection
	links   []link.Link
	reader  *ringbuf.Reader
	dec     Decoder
	choices []Choice
	missing []MissingFamily
	hidden  map[string]bool // kernel targets treated as missing (testHideEnv)
	cpus    int

	decoded atomic.Uint64
	corrupt atomic.Uint64
	// onRecord, set by tests, sees each raw record before it is decoded
	onRecord func([]byte)
	// hand-offs and deaths per transition slot, when the state family is counted
	handoffs [transitionSlots]atomic.Uint64
}

// New loads and attaches the programs the options need. Close releases everything.
// With BackendAuto, a family needing a hook that no backend can serve here is left
// out (Unavailable says why); New fails when that leaves nothing of what was asked.
func New(opts Options) (*Tracer, error) {
	return newTracer(opts, hiddenFromEnv())
}

func newTracer(opts Options, hidden map[string]bool) (_ *Tracer, err error) {
	if opts.Families == 0 {
		opts.Families = AllFamilies
	}
	if opts.Backend == "" {
		opts.Backend = BackendAuto
	}
	if opts.RingBufferSize == 0 {
		opts.RingBufferSize = DefaultRingBufferSize
	}
	if err := ValidateRingBufferSize(opts.RingBufferSize, os.Getpagesize()); err != nil {
		return nil, err
	}
	if err := CheckBTF(); err != nil {
		return nil, err
	}
	// Kernels >= 5.11 account BPF memory to the cgroup; there this is a no-op, and
	// where it is needed but refused, loading reports the real error.
	_ = rlimit.RemoveMemlock()

	t := &Tracer{opts: opts, hidden: hidden}
	defer func() {
		if err != nil {
			t.Close()
		}
	}()
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return nil, fmt.Errorf("load kernel BTF: %w", err)
	}
	t.dec.reasons = loadResetReasons(kernel)
	t.dec.BootWall = bootWall()
	if t.cpus, err = ebpf.PossibleCPU(); err != nil {
		return nil, err
	}
	if err := t.load(kernel); err != nil {
		return nil, err
	}
	if t.dec.HZ, err = measureHZ(t.coll.Programs["read_jiffies"]); err != nil {
		return nil, err
	}
	if t.reader, err = ringbuf.NewReader(t.coll.Maps["events"]); err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	return t, nil
}

func (t *Tracer) spec() (*ebpf.CollectionSpec, error) {
	spec, err := loadTwtrace()
	if err != nil {
		return nil, err
	}
	hide(spec, t.hidden)
	spec.Maps["events"].MaxEntries = t.opts.RingBufferSize
	f := t.opts.Filter
	settings := map[string]any{
		"cfg_events":       uint32(t.opts.Families),
		"cfg_port":         f.Port,
		"cfg_sport":        f.SPort,
		"cfg_dport":        f.DPort,
		"cfg_pid":          f.PID,
		"cfg_netns":        f.NetNS,
		"cfg_family":       f.Family,
		"cfg_wakeup_shift": wakeupShift(t.opts.RingBufferSize),
		"cfg_count_state":  t.opts.CountTransitions,
		"cfg_empty":        benchEmpty(),
	}
	if f.Addr.IsValid() {
		var addr [16]byte
		a := f.Addr.Addr()
		if a.Is4() {
			settings["cfg_addr_family"] = uint8(4)
			a4 := a.As4()
			copy(addr[:], a4[:])
		} else {
			settings["cfg_addr_family"] = uint8(6)
			addr = a.As16()
		}
		settings["cfg_addr"] = addr
		settings["cfg_addr_prefix"] = uint8(f.Addr.Bits())
	}
	if t.opts.Families&FamilyOverflow != 0 {
		settings["cfg_mib_tw_overflow"] = mibTWOverflow()
	}
	if f.NetNS != 0 { // one namespace's overflow count per CPU
		spec.Maps["overflow_seen"].MaxEntries = 8
	}
	if t.opts.Families&(FamilyState|FamilyTW|FamilyOverflow) != 0 {
		handler, err := kernelSymbol("tw_timer_handler")
		if err != nil {
			return nil, fmt.Errorf("find the timewait timer: %w", err)
		}
		settings["cfg_tw_timer_handler"] = handler
	}
	for name, v := range settings {
		if err := spec.Variables[name].Set(v); err != nil {
			return nil, fmt.Errorf("set %s: %w", name, err)
		}
	}
	return spec, nil
}

// load chooses a backend per hook by trying each candidate for real, then loads only
// the chosen programs, with the settings that depend on the choice, and attaches them.
func (t *Tracer) load(kernel *btf.Spec) error {
	spec, err := t.spec()
	if err != nil {
		return err
	}
	opts := ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}
	chosen := map[Hook]implementation{}
	for _, hook := range hooksFor(t.opts.Families) {
		impl, why, err := choose(spec, opts, hook, t.opts.Backend)
		var unservable *unservableError
		if err != nil && (hook == HookState || t.opts.Backend != BackendAuto || !errors.As(err, &unservable)) {
			return err
		}
		t.choices = append(t.choices, Choice{Hook: hook, Backend: impl.backend, Programs: impl.programs, Unavailable: why})
		if err != nil { // the families needing this hook go untraced, the others run
			t.drop(familiesNeeding(t.opts.Families, hook), hook, unservable.reason)
			continue
		}
		chosen[hook] = impl
	}
	if t.opts.Families == 0 {
		var reasons []string
		for _, m := range t.missing {
			reasons = append(reasons, fmt.Sprintf("%s: %s", m.Family, m.Reason))
		}
		return fmt.Errorf("%w: no requested event family can be traced here (%s)", ErrUnavailable, strings.Join(reasons, "; "))
	}
	if err := spec.Variables["cfg_events"].Set(uint32(t.opts.Families)); err != nil {
		return err
	}
	keep := map[string]bool{"read_jiffies": true, "settle_pending": true}
	var attach []implementation
	for _, hook := range hooksFor(t.opts.Families) {
		impl := chosen[hook]
		attach = append(attach, impl)
		for _, p := range impl.programs {
			keep[p] = true
		}
		if hook == HookTimewait {
			if err := spec.Variables["cfg_tw_probes"].Set(impl.backend != BackendTracepoint); err != nil {
				return err
			}
		}
	}
	for name := range spec.Programs {
		if !keep[name] {
			delete(spec.Programs, name)
		}
	}
	if t.coll, err = ebpf.NewCollectionWithOptions(spec, opts); err != nil {
		return fmt.Errorf("load programs: %w", err)
	}
	return t.attachAll(spec, attach)
}

func (t *Tracer) attachAll(spec *ebpf.CollectionSpec, impls []implementation) error {
	for _, impl := range impls {
		for _, name := range impl.programs {
			l, err := attach(spec.Programs[name], t.coll.Programs[name])
			if err != nil {
				return fmt.Errorf("attach %s (%s): %w", name, impl.needs, err)
			}
			t.links = append(t.links, l)
		}
	}
	return nil
}

// drop records the families fs as missing for want of hook, and stops tracing them.
func (t *Tracer) drop(fs Families, hook Hook, reason string) {
	for _, n := range familyNames {
		if fs&n.f != 0 {
			t.missing = append(t.missing, MissingFamily{Family: n.f, Hook: hook, Reason: reason})
		}
	}
	slices.SortFunc(t.missing, func(a, b MissingFamily) int { return int(a.Family) - int(b.Family) })
	t.opts.Families &^= fs
}

// Choices reports the backend serving each hook; Backend is "" for a hook none could serve.
func (t *Tracer) Choices() []Choice { return t.choices }

// Families reports the event families this tracer really delivers.
func (t *Tracer) Families() Families { return t.opts.Families }

// Unavailable reports the families that were asked for and cannot be traced here, and why.
func (t *Tracer) Unavailable() []MissingFamily { return t.missing }

// HZ reports the kernel tick rate measured at start.
func (t *Tracer) HZ() uint32 { return t.dec.HZ }

// Run delivers events to fn until ctx is done, then drains what the kernel already
// wrote. fn must not keep the *Event it is given. idle, if not nil, is called whenever
// the ring buffer has been emptied: the moment to flush buffered output.
func (t *Tracer) Run(ctx context.Context, fn func(*Event), idle func()) error {
	var rec ringbuf.Record
	var ev Event
	deliver := t.opts.Families
	if t.opts.CountTransitions {
		deliver &^= FamilyState
	}
	nextSettle := time.Now().Add(settleInterval)
	draining := false
	for {
		if !draining && ctx.Err() != nil {
			t.settle()
			draining = true
			t.reader.SetDeadline(time.Now())
		} else if !draining {
			t.reader.SetDeadline(nextSettle)
		}
		err := t.reader.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if draining {
				return nil
			}
			t.settle()
			nextSettle = time.Now().Add(settleInterval)
			continue
		case errors.Is(err, ringbuf.ErrClosed):
			return nil
		case err != nil:
			return fmt.Errorf("read ring buffer: %w", err)
		}
		if t.onRecord != nil {
			t.onRecord(rec.RawSample)
		}
		if err := t.dec.Decode(rec.RawSample, &ev); err != nil {
			t.corrupt.Add(1)
			continue
		}
		t.decoded.Add(1)
		if deliver != t.opts.Families {
			t.countHandoff(&ev)
		}
		Dispatch(&ev, deliver, fn)
		if idle != nil && t.reader.AvailableBytes() == 0 {
			idle()
		}
	}
}

// settle resolves, on every CPU, a timewait timer cancel that nothing followed.
func (t *Tracer) settle() {
	p := t.coll.Programs["settle_pending"]
	for cpu := 0; cpu < t.cpus; cpu++ {
		// a CPU that is offline refuses; its scratch is settled when it returns
		_, _ = p.Run(&ebpf.RunOptions{CPU: uint32(cpu), Flags: bpfFTestRunOnCPU})
	}
}

// Close detaches everything. It is safe to call more than once.
func (t *Tracer) Close() error {
	if t.reader != nil {
		t.reader.Close()
		t.reader = nil
	}
	for _, l := range t.links {
		l.Close()
	}
	t.links = nil
	if t.coll != nil {
		t.coll.Close()
		t.coll = nil
	}
	return nil
}
