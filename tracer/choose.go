package tracer

import (
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// choose returns the first implementation of hook, among those the forced backend
// allows, whose programs load and attach on this kernel, and why the others did not.
func choose(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, hook Hook, forced Backend) (implementation, map[Backend]string, error) {
	impls, why := candidates(hook, forced)
	if len(impls) == 0 {
		return implementation{}, why, fmt.Errorf("%w: %s cannot serve hook %s: %s", ErrNotImplemented, forced, hook, why[forced])
	}
	for _, impl := range impls {
		impl = withOptional(impl, spec, opts.Programs.KernelTypes)
		err := try(spec, opts, impl)
		if err == nil {
			return impl, why, nil
		}
		why[impl.backend] = err.Error()
	}
	return implementation{}, why, &unservableError{unservable(hook, impls, why)}
}

// unservableError says that no backend could serve a hook on this kernel.
type unservableError struct{ reason string }

func (e *unservableError) Error() string { return ErrUnavailable.Error() + ": " + e.reason }
func (e *unservableError) Unwrap() error { return ErrUnavailable }

// try loads and attaches one implementation's programs with small private maps,
// then releases them: a kernel that has the program type may still refuse the load
// or the attachment, and a function may be missing or inlined.
func try(spec *ebpf.CollectionSpec, opts ebpf.CollectionOptions, impl implementation) error {
	s := spec.Copy()
	for name := range s.Programs {
		if !slices.Contains(impl.programs, name) {
			delete(s.Programs, name)
		}
	}
	for _, m := range s.Maps {
		switch m.Type {
		case ebpf.RingBuf:
			m.MaxEntries = uint32(os.Getpagesize())
		case ebpf.LRUHash, ebpf.Hash:
			m.MaxEntries = 16
		case ebpf.Array:
			if m.Name == twtraceMapSocks || m.Name == twtraceMapTws {
				m.MaxEntries = 1 // a record table: a bucket is enough to load
			}
		}
	}
	coll, err := ebpf.NewCollectionWithOptions(s, opts)
	if errors.Is(err, unix.EPERM) {
		return fmt.Errorf("the kernel refuses to load %s programs (EPERM)", impl.backend)
	}
	if err != nil {
		return fmt.Errorf("load: %w", err)
	}
	defer coll.Close()
	for _, name := range impl.programs {
		l, err := attach(s.Programs[name], coll.Programs[name])
		if err != nil {
			return fmt.Errorf("attach %s: %w", name, err)
		}
		l.Close()
	}
	return nil
}

// withOptional adds the optional programs whose kernel function this kernel's BTF has:
// a function the compiler inlined everywhere has no BTF entry and cannot be probed.
func withOptional(impl implementation, spec *ebpf.CollectionSpec, kernel *btf.Spec) implementation {
	programs := append([]string(nil), impl.programs...)
	for _, name := range impl.optional {
		var fn *btf.Func
		if kernel != nil && kernel.TypeByName(spec.Programs[name].AttachTo, &fn) == nil {
			programs = append(programs, name)
		}
	}
	impl.programs = programs
	return impl
}

// attach links a loaded program to the kernel the way its section says.
func attach(spec *ebpf.ProgramSpec, p *ebpf.Program) (link.Link, error) {
	switch spec.Type {
	case ebpf.Kprobe:
		if _, err := os.Stat("/sys/bus/event_source/devices/kprobe"); err != nil {
			return nil, fmt.Errorf("the kernel has no kprobe PMU (CONFIG_KPROBES is not set)")
		}
		if strings.HasPrefix(spec.SectionName, "kretprobe/") {
			return link.Kretprobe(spec.AttachTo, p, nil)
		}
		return link.Kprobe(spec.AttachTo, p, nil)
	case ebpf.Tracing:
		return link.AttachTracing(link.TracingOptions{Program: p})
	}
	return nil, fmt.Errorf("program %s: unexpected type %s", spec.Name, spec.Type)
}
