// Package tracer loads twtrace's eBPF programs, attaches them and decodes what they report.
package tracer

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/ringbuf"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// settleInterval is how often held timewait cancels are settled on idle CPUs.
const settleInterval = 100 * time.Millisecond

// pollInterval is how often Run reads records written without a wakeup.
const pollInterval = 100 * time.Millisecond

// wakeupShift sets the wakeup batch, 1<<shift bytes: a quarter of the ring buffer, at
// most 256 KiB. Below a batch the reader polls every pollInterval, so an event waits
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
	hz      TickRate
	missing []MissingFamily
	hidden  map[string]bool // kernel targets treated as missing (testHideEnv)
	records Records
	cpus    int

	decoded atomic.Uint64
	corrupt atomic.Uint64
	// onRecord, set by tests, sees each raw record before it is decoded
	onRecord func([]byte)
	// settler settles held timewait cancels on idle CPUs while the tracer is open
	stopSettler func()
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
	if t.hz, err = kernelHZ(t.coll.Programs[twtraceProgReadJiffies], t.coll.Variables[twtraceVarJiffiesNow]); err != nil {
		return nil, err
	}
	t.dec.HZ = t.hz.HZ
	if t.reader, err = ringbuf.NewReader(t.coll.Maps[twtraceMapEvents]); err != nil {
		return nil, fmt.Errorf("open ring buffer: %w", err)
	}
	t.startSettler()
	return t, nil
}

func (t *Tracer) spec() (*ebpf.CollectionSpec, error) {
	var load func() (*ebpf.CollectionSpec, error)
	t.records, load = recordsHere(t.hidden)
	spec, err := load()
	if err != nil {
		return nil, err
	}
	hide(spec, t.hidden)
	spec.Maps[twtraceMapEvents].MaxEntries = t.opts.RingBufferSize
	if t.opts.Filter.NetNS != 0 { // one namespace's overflow count per CPU
		spec.Maps[twtraceMapOverflowSeen].MaxEntries = 8
	}
	var handler uint64
	if needsTimerHandler(t.opts.Families) {
		if handler, err = kernelSymbol("tw_timer_handler"); err != nil {
			return nil, fmt.Errorf("find the timewait timer: %w", err)
		}
	}
	if err := set(spec, settings(t.opts, handler)); err != nil {
		return nil, err
	}
	return spec, nil
}

// needsTimerHandler says whether fs use the timewait hook, whose tracepoint backend
// recognises timewait timers by their function, tw_timer_handler.
func needsTimerHandler(fs Families) bool {
	return fs&(FamilyState|FamilyTW|FamilyOverflow) != 0
}

// settings are the load-time constants (volatile const cfg_* in bpf/common.h) for opts,
// cfg_tw_probes aside: it depends on the backend chosen. twTimerHandler is the address
// of tw_timer_handler.
func settings(opts Options, twTimerHandler uint64) map[string]any {
	s := filterSettings(opts.Filter)
	s[twtraceVarCfgEvents] = uint32(opts.Families)
	s[twtraceVarCfgWakeupShift] = wakeupShift(opts.RingBufferSize)
	s[twtraceVarCfgCountState] = opts.CountTransitions
	s[twtraceVarCfgEmpty] = opts.EmptyBodies || benchEmpty()
	if needsTimerHandler(opts.Families) {
		s[twtraceVarCfgTwTimerHandler] = twTimerHandler
	}
	if opts.Families&FamilyOverflow != 0 {
		s[twtraceVarCfgMibTwOverflow] = mibTWOverflow()
	}
	return s
}

// filterSettings are the load-time constants wanted() in bpf/common.h filters with.
func filterSettings(f Filter) map[string]any {
	settings := map[string]any{
		twtraceVarCfgPort:        f.Port,
		twtraceVarCfgSport:       f.SPort,
		twtraceVarCfgDport:       f.DPort,
		twtraceVarCfgPid:         f.PID,
		twtraceVarCfgNetns:       f.NetNS,
		twtraceVarCfgFamily:      f.Family,
		twtraceVarCfgCgroupId:    f.Cgroup.ID,
		twtraceVarCfgCgroupLevel: f.Cgroup.Level,
	}
	if f.Addr.IsValid() {
		var addr [16]byte
		a := f.Addr.Addr()
		if a.Is4() {
			settings[twtraceVarCfgAddrFamily] = uint8(4)
			a4 := a.As4()
			copy(addr[:], a4[:])
		} else {
			settings[twtraceVarCfgAddrFamily] = uint8(6)
			addr = a.As16()
		}
		settings[twtraceVarCfgAddr] = addr
		settings[twtraceVarCfgAddrPrefix] = uint8(f.Addr.Bits())
	}
	return settings
}

// set writes each setting into its variable; a name the objects lack, or a value of
// another size, is an error.
func set(spec *ebpf.CollectionSpec, settings map[string]any) error {
	for name, v := range settings {
		variable := spec.Variables[name]
		if variable == nil {
			return fmt.Errorf("set %s: no such variable in the BPF objects", name)
		}
		if err := variable.Set(v); err != nil {
			return fmt.Errorf("set %s: %w", name, err)
		}
	}
	return nil
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
	if err := set(spec, map[string]any{twtraceVarCfgEvents: uint32(t.opts.Families)}); err != nil {
		return err
	}
	keep := map[string]bool{twtraceProgReadJiffies: true, twtraceProgSettlePending: true}
	var attach []implementation
	for _, hook := range hooksFor(t.opts.Families) {
		impl := chosen[hook]
		attach = append(attach, impl)
		for _, p := range impl.programs {
			keep[p] = true
		}
		if hook == HookTimewait {
			if err := set(spec, map[string]any{twtraceVarCfgTwProbes: impl.backend != BackendTracepoint}); err != nil {
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

// measureHZ measures the tick rate, whatever the configuration says.
func (t *Tracer) measureHZ() (uint32, error) {
	return measureHZ(t.coll.Programs[twtraceProgReadJiffies], t.coll.Variables[twtraceVarJiffiesNow])
}

// Records reports where the programs keep their per-socket records.
func (t *Tracer) Records() Records { return t.records }

// HZ reports the kernel's tick rate and how it was found.
func (t *Tracer) HZ() TickRate { return t.hz }

// Run delivers events to fn until ctx is done, then drains what the kernel already
// wrote. fn must not keep the *Event it is given. idle, if not nil, is called whenever
// the ring buffer has been found empty (emptied, or empty at a poll): the moment to flush
// buffered output, and the proof that every event submitted before it has been read.
func (t *Tracer) Run(ctx context.Context, fn func(*Event), idle func()) error {
	var rec ringbuf.Record
	var ev Event
	deliver := t.opts.Families
	if t.opts.CountTransitions {
		deliver &^= FamilyState
	}
	nextPoll := time.Now().Add(pollInterval)
	var deadline time.Time // the reader's: set again only when it changes (it takes the reader's lock)
	draining := false
	for {
		if !draining && ctx.Err() != nil {
			t.settle()
			draining = true
			t.reader.SetDeadline(time.Now())
		} else if !draining && !nextPoll.Equal(deadline) {
			t.reader.SetDeadline(nextPoll)
			deadline = nextPoll
		}
		err := t.reader.ReadInto(&rec)
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded):
			if draining {
				return nil
			}
			if idle != nil {
				idle()
			}
			nextPoll = time.Now().Add(pollInterval)
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
		Dispatch(&ev, deliver, fn)
		if idle != nil && t.reader.AvailableBytes() == 0 {
			idle()
		}
	}
}

// startSettler settles held timewait cancels every settleInterval until Close, so that a
// death is delivered (and counted) whether or not Run is reading.
func (t *Tracer) startSettler() {
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(settleInterval)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				t.settle()
			}
		}
	}()
	t.stopSettler = func() {
		close(stop)
		<-done
	}
}

// settle resolves, on every CPU, a timewait timer cancel that nothing followed. Run by a
// thread pinned to that CPU, the program runs in a task there, where no timer callback can
// be half-way, so whatever it finds held was a kill (see settle_pending); where pinning is
// refused (a CPU outside this process's cpuset), it runs from an interrupt instead.
func (t *Tracer) settle() {
	p := t.coll.Programs[twtraceProgSettlePending]
	runtime.LockOSThread()
	var orig unix.CPUSet
	canPin := unix.SchedGetaffinity(0, &orig) == nil
	for cpu := 0; cpu < t.cpus; cpu++ {
		var one unix.CPUSet
		one.Set(cpu)
		local := uint64(0)
		if canPin && unix.SchedSetaffinity(0, &one) == nil {
			local = 1
		}
		// a CPU that is offline refuses; its scratch is settled when it returns
		_, _ = p.Run(&ebpf.RunOptions{CPU: uint32(cpu), Flags: unix.BPF_F_TEST_RUN_ON_CPU, Context: []uint64{local}})
	}
	// a thread whose affinity could not be restored is left locked: it ends with its goroutine
	if !canPin || unix.SchedSetaffinity(0, &orig) == nil {
		runtime.UnlockOSThread()
	}
}

// Close detaches everything. It is safe to call more than once.
func (t *Tracer) Close() error {
	if t.stopSettler != nil {
		t.stopSettler()
		t.stopSettler = nil
	}
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
