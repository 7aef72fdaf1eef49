package tracer

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/btf"
	"golang.org/x/sys/unix"
)

var hiddenResets = map[string]bool{"tcp_send_reset": true, "tcp_receive_reset": true}

// checkMissing asserts that exactly the families want are reported missing, for want
// of hook, with a reason naming one of the hidden targets.
func checkMissing(t *testing.T, tr *Tracer, want Families, hook Hook, hidden map[string]bool) {
	t.Helper()
	var got Families
	for _, m := range tr.Unavailable() {
		got |= m.Family
		if m.Hook != hook || !namesHidden(m.Reason, hidden) {
			t.Errorf("family %s missing for hook %s, want hook %s and a reason naming %v: %s", m.Family, m.Hook, hook, hidden, m.Reason)
		}
	}
	if got != want {
		t.Errorf("unavailable families %q, want %q", got, want)
	}
	i := slices.IndexFunc(tr.Choices(), func(c Choice) bool { return c.Hook == hook })
	if i < 0 || tr.Choices()[i].Backend != "" {
		t.Errorf("hook %s must be listed with no backend: %+v", hook, tr.Choices())
	}
}

func namesHidden(s string, hidden map[string]bool) bool {
	for name := range hidden {
		if strings.Contains(s, hiddenPrefix+name) {
			return true
		}
	}
	return false
}

// Without the reset tracepoints, auto traces what does not need them, exactly, and
// names the families it cannot deliver: reset, and overflow (which needs to know that
// no reset was sent).
func TestUnavailableResetHookTracesTheRest(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	// auto whatever -backend says: falling back is what auto does; a forced backend stays strict (TestUnavailableEverything)
	c := startTracerHiding(t, Options{Backend: BackendAuto, Filter: Filter{NetNS: ns.inode}}, hiddenResets)
	if got := c.tr.Families(); got != FamilyState|FamilyTW|FamilyConnect {
		t.Errorf("families delivered %q, want state,tw,connect", got)
	}
	checkMissing(t, c.tr, FamilyReset|FamilyOverflow, HookReset, hiddenResets)

	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
	// a connection closed with unread data: resets on the wire, none may be reported
	lfd2, port2 := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd2)
	afd, aport := connectIn(t, ns, unix.AF_INET, port2, 0)
	defer unix.Close(afd)
	sfd := acceptOn(t, lfd2)
	_, err := unix.Write(afd, []byte("unread"))
	must(t, "write", err)
	waitReadable(t, sfd)
	unix.Close(sfd)

	client, server := clientSocket(cport, port), acceptedSocket(port, cport)
	aborted, abortedServer := clientSocket(aport, port2), acceptedSocket(port2, aport)
	c.waitFor(t, 5*time.Second, "both connections closed", func(evs []Event) bool {
		return len(transitions(filter(evs, client))) == 5 && len(transitions(filter(evs, server))) == 5 &&
			len(transitions(filter(evs, aborted))) == 3 && len(transitions(filter(evs, abortedServer))) == 3
	})
	c.Stop(t) // drains: whatever was coming has come
	evs := c.snapshot()
	checkSequence(t, "client", filter(evs, client), []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"})
	checkSequence(t, "server", filter(evs, server), []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"})
	checkSequence(t, "aborted client", filter(evs, aborted), []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->CLOSE"})
	checkSequence(t, "aborted server", filter(evs, abortedServer), []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE"})
	if enter := filter(filter(evs, twOf(cport, port)), ofKind(KindTWEnter)); len(enter) != 1 {
		t.Errorf("want exactly one tw_enter for the client:\n%s", dump(evs))
	}
	if n := len(filter(evs, func(e *Event) bool { return e.Kind == KindReset || e.Kind == KindTWOverflow })); n != 0 {
		t.Errorf("%d reset or overflow events from families reported unavailable:\n%s", n, dump(evs))
	}
}

// chooseTimewait runs the real choice for the timewait hook with some targets hidden.
func chooseTimewait(t *testing.T, hidden map[string]bool) (*ebpf.CollectionSpec, implementation, map[Backend]string, error) {
	t.Helper()
	kernel, err := btf.LoadKernelSpec()
	must(t, "kernel BTF", err)
	tr := &Tracer{opts: Options{Families: AllFamilies, Backend: BackendAuto, RingBufferSize: DefaultRingBufferSize}, hidden: hidden}
	spec, err := tr.spec()
	must(t, "spec", err)
	impl, why, err := choose(spec, ebpf.CollectionOptions{Programs: ebpf.ProgramOptions{KernelTypes: kernel}}, HookTimewait, BackendAuto)
	return spec, impl, why, err
}

// A function of the timewait hook's first working backend goes missing (as an inlined
// or renamed function would): auto falls back to the next backend that works and says
// why, naming the function; when there is none (the tracepoint backend, last in line),
// the timewait-based families are reported unavailable and resets are still traced.
func TestUnavailableTimewaitFunctionFallsBack(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	spec, first, _, err := chooseTimewait(t, nil)
	must(t, "choose without hiding", err)
	target := spec.Programs[first.programs[0]].AttachTo
	hidden := map[string]bool{target: true}
	_, next, why, err := chooseTimewait(t, hidden)
	if !strings.Contains(why[first.backend], hiddenPrefix+target) {
		t.Errorf("%s was passed over for %q, want the reason to name %s", first.backend, why[first.backend], hiddenPrefix+target)
	}
	ns := newNetns(t)
	if err == nil {
		t.Logf("hiding %s: %s -> %s", target, first.backend, next.backend)
		order := slices.IndexFunc(implementations[HookTimewait], func(i implementation) bool { return i.backend == next.backend })
		if order <= slices.IndexFunc(implementations[HookTimewait], func(i implementation) bool { return i.backend == first.backend }) {
			t.Fatalf("fell back from %s to %s, which comes before it", first.backend, next.backend)
		}
		c := startTracerHiding(t, Options{Backend: BackendAuto, Filter: Filter{NetNS: ns.inode}}, hidden)
		i := slices.IndexFunc(c.tr.Choices(), func(c Choice) bool { return c.Hook == HookTimewait })
		if ch := c.tr.Choices()[i]; ch.Backend != next.backend || !strings.Contains(ch.Unavailable[first.backend], hiddenPrefix+target) {
			t.Errorf("timewait hook: %+v, want %s with %s passed over naming %s", ch, next.backend, first.backend, target)
		}
		if c.tr.Families() != AllFamilies || len(c.tr.Unavailable()) != 0 {
			t.Errorf("a fallback costs no family: delivered %q, unavailable %+v", c.tr.Families(), c.tr.Unavailable())
		}
		lfd, port := listenIn(t, ns, unix.AF_INET)
		defer unix.Close(lfd)
		cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
		c.waitFor(t, 5*time.Second, "tw_enter on the fallback backend", func(evs []Event) bool {
			return len(filter(filter(evs, twOf(cport, port)), ofKind(KindTWEnter))) == 1
		})
		return
	}
	if !errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), hiddenPrefix+target) {
		t.Fatalf("no backend left after %s: error %v, want ErrUnavailable naming %s", first.backend, err, target)
	}
	t.Logf("hiding %s: no backend after %s; the timewait families go", target, first.backend)
	c := startTracerHiding(t, Options{Backend: BackendAuto, Filter: Filter{NetNS: ns.inode}}, hidden)
	if got := c.tr.Families(); got != FamilyReset|FamilyConnect { // connect needs the state hook alone
		t.Errorf("families delivered %q, want reset,connect", got)
	}
	checkMissing(t, c.tr, FamilyState|FamilyTW|FamilyOverflow, HookTimewait, hidden)
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	defer unix.Close(cfd)
	afd := acceptOn(t, lfd)
	_, err = unix.Write(cfd, []byte("0123456789"))
	must(t, "write", err)
	waitReadable(t, afd)
	unix.Close(afd)
	evs := checkReset(t, c, port, cport, "tcp_abort_on_close", 10)
	if n := len(filter(evs, func(e *Event) bool { return e.Kind != KindReset })); n != 0 {
		t.Errorf("%d events from families reported unavailable:\n%s", n, dump(evs))
	}
}

// Nothing requested can be traced: New fails with ErrUnavailable and says why. So does
// a hook every family needs, and a forced backend that cannot serve.
func TestUnavailableEverything(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	tests := []struct {
		name   string
		opts   Options
		hidden map[string]bool
		want   []string
	}{
		{"reset and overflow without the reset hook", Options{Families: FamilyReset | FamilyOverflow, Backend: BackendAuto}, hiddenResets,
			[]string{"no requested event family can be traced here", "overflow: no backend can serve hook reset", "reset: no backend can serve hook reset"}},
		{"the state hook", Options{Backend: BackendAuto}, map[string]bool{"inet_sock_set_state": true},
			[]string{"no backend can serve hook state here", hiddenPrefix + "inet_sock_set_state"}},
		{"forced tracepoint backend without the reset hook", Options{Backend: BackendTracepoint}, hiddenResets,
			[]string{"no backend can serve hook reset here: tracepoint: "}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tr, err := newTracer(tt.opts, tt.hidden)
			if err == nil {
				tr.Close()
				t.Fatalf("New succeeded, delivering %q; want ErrUnavailable", tr.Families())
			}
			if !errors.Is(err, ErrUnavailable) {
				t.Errorf("error %v does not wrap ErrUnavailable", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
			if !namesHidden(err.Error(), tt.hidden) {
				t.Errorf("error %q names no hidden target", err)
			}
		})
	}
}
