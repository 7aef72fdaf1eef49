package tracer

import (
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func twOf(sport, dport uint16) func(*Event) bool {
	return func(e *Event) bool {
		return (e.Kind == KindTWEnter || e.Kind == KindTWExit || e.Kind == KindTWRearm) && e.SPort == sport && e.DPort == dport
	}
}

// timewaitBackend is the backend serving the timewait hook.
func timewaitBackend(c *collector) Backend {
	for _, ch := range c.tr.Choices() {
		if ch.Hook == HookTimewait {
			return ch.Backend
		}
	}
	return ""
}

func hasKind(evs []Event, k Kind) bool {
	return slices.ContainsFunc(evs, func(e Event) bool { return e.Kind == k })
}

// expectedDetail is what a kill's detail must be: named where the backend attached the
// program that sees the cause, null otherwise.
func expectedDetail(c *collector, program string, d Detail) Detail {
	for _, ch := range c.tr.Choices() {
		if ch.Hook == HookTimewait && slices.ContainsFunc(ch.Programs, func(p string) bool { return strings.HasSuffix(p, program) }) {
			return d
		}
	}
	return DetailNone
}

func exitOf(t *testing.T, evs []Event) Event {
	t.Helper()
	exits := filter(evs, ofKind(KindTWExit))
	if len(exits) != 1 {
		t.Fatalf("want one tw_exit, got %d:\n%s", len(exits), dump(evs))
	}
	return exits[0]
}

// The timer wheel rounds a 60 s timer up by a fraction of a second (60.3-60.7 s measured).
func TestTimewaitNaturalExpiry(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	requireLong(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
	unix.Close(lfd)

	evs := c.waitFor(t, 70*time.Second, "tw_exit", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWExit)
	})
	tw := filter(evs, twOf(cport, port))
	enter, rearm := filter(tw, ofKind(KindTWEnter)), filter(tw, ofKind(KindTWRearm))
	if len(enter) != 1 || !enter[0].TimeoutOK || enter[0].Timeout != 60*time.Second {
		t.Fatalf("want one tw_enter with a 60 s timer:\n%s", dump(tw))
	}
	// When the client is orphaned before the server's FIN arrives (seen under emulation),
	// the kernel makes a FIN_WAIT2 timewait socket and re-arms it as TIME_WAIT on the FIN.
	finFirst := enter[0].Substate == StateTimeWait && len(rearm) == 0
	orphanFirst := enter[0].Substate == StateFinWait2 && len(rearm) == 1 &&
		rearm[0].Substate == StateTimeWait && rearm[0].Timeout == 60*time.Second
	// The timer tracepoints do not fire for a re-arm that keeps the timer in its wheel
	// bucket: 60 s (tcp_fin_timeout) re-armed to 60 s, a few milliseconds later.
	if enter[0].Substate == StateFinWait2 && len(rearm) == 0 && timewaitBackend(c) == BackendTracepoint {
		orphanFirst = true
	}
	if !finFirst && !orphanFirst {
		t.Fatalf("want tw_enter TIME_WAIT, or FIN_WAIT2 re-armed as TIME_WAIT for 60 s:\n%s", dump(tw))
	}
	exit := exitOf(t, tw)
	if exit.Cause != CauseExpired || exit.Detail != DetailNone || exit.Substate != StateTimeWait {
		t.Errorf("want expired in TIME_WAIT: %s", exit)
	}
	upper := 62 * time.Second
	if os.Getenv("TWTRACE_EMULATED") != "" {
		upper += time.Second // an emulated CPU runs the timer softirq late
	}
	if !exit.DurationOK || exit.Duration < 60*time.Second || exit.Duration > upper {
		t.Errorf("lifetime %v, want 60 s to %v: %s", exit.Duration, upper, exit)
	}
	// the truthful state stream: ...->TIME_WAIT, then TIME_WAIT->CLOSE after the lifetime
	seq := transitions(filter(evs, clientSocket(cport, port)))
	if n := len(seq); n < 2 || seq[n-2] != "FIN_WAIT2->TIME_WAIT" || seq[n-1] != "TIME_WAIT->CLOSE" {
		t.Errorf("client's state stream ends %v, want ... FIN_WAIT2->TIME_WAIT, TIME_WAIT->CLOSE", seq)
	}
	if owner := enter[0]; !owner.OwnerOK || owner.PID != exit.PID {
		t.Errorf("tw_exit must carry the owner of tw_enter: %s / %s", owner, exit)
	}
}

// An orphaned FIN_WAIT2 socket becomes a timewait socket with substate FIN_WAIT2
// and the tcp_fin_timeout timer.
func TestTimewaitFinWait2Substate(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_fin_timeout", "3")
	c := startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	afd := acceptOn(t, lfd)
	defer unix.Close(afd) // the peer never closes
	unix.Close(cfd)

	evs := c.waitFor(t, 10*time.Second, "tw_exit", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWExit)
	})
	tw := filter(evs, twOf(cport, port))
	enter := filter(tw, ofKind(KindTWEnter))
	if len(enter) != 1 || enter[0].Substate != StateFinWait2 || enter[0].Timeout != 3*time.Second {
		t.Fatalf("want one tw_enter FIN_WAIT2 with a 3 s timer:\n%s", dump(tw))
	}
	exit := exitOf(t, tw)
	if exit.Cause != CauseExpired || exit.Substate != StateFinWait2 || exit.Duration < 3*time.Second || exit.Duration > 5*time.Second {
		t.Errorf("want expired in FIN_WAIT2 after 3-5 s: %s", exit)
	}
}

// The peer's FIN turns a FIN_WAIT2 timewait socket into TIME_WAIT: the kernel re-arms
// its timer from tcp_fin_timeout to 60 s, which the tracer reports as tw_rearm.
func TestTimewaitRearmedByPeerFIN(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_fin_timeout", "30")
	c := startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(cfd)
	c.waitFor(t, 5*time.Second, "tw_enter FIN_WAIT2", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWEnter)
	})
	readEOF(t, afd)
	unix.Close(afd) // the FIN reaches the timewait socket

	evs := c.waitFor(t, 5*time.Second, "tw_rearm", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWRearm)
	})
	tw := filter(evs, twOf(cport, port))
	enter, rearm := filter(tw, ofKind(KindTWEnter)), filter(tw, ofKind(KindTWRearm))
	if len(enter) != 1 || enter[0].Substate != StateFinWait2 || enter[0].Timeout != 30*time.Second {
		t.Errorf("want tw_enter FIN_WAIT2 with a 30 s timer:\n%s", dump(tw))
	}
	if len(rearm) != 1 || rearm[0].Substate != StateTimeWait || !rearm[0].TimeoutOK || rearm[0].Timeout != 60*time.Second {
		t.Errorf("want one tw_rearm TIME_WAIT with a 60 s timer:\n%s", dump(tw))
	}
	if len(rearm) == 1 && (!rearm[0].OwnerOK || rearm[0].PID != enter[0].PID) {
		t.Errorf("tw_rearm must carry the owner of tw_enter: %s", rearm[0])
	}
	if hasKind(tw, KindTWExit) {
		t.Errorf("a re-arm is not a death:\n%s", dump(tw))
	}
}

// A SYN for the same tuple kills the server's timewait socket early.
func TestTimewaitKilledBySYN(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(afd) // server closes first: the server's socket goes to TIME_WAIT
	readEOF(t, cfd)
	unix.Close(cfd)
	c.waitFor(t, 5*time.Second, "server tw_enter", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(port, cport)), KindTWEnter)
	})

	again, _ := connectIn(t, ns, unix.AF_INET, port, cport)
	defer unix.Close(again)
	evs := c.waitFor(t, 5*time.Second, "server tw_exit", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(port, cport)), KindTWExit)
	})
	exit := exitOf(t, filter(evs, twOf(port, cport)))
	if exit.Cause != CauseKilled || !exit.DurationOK || exit.Duration > 5*time.Second {
		t.Errorf("want killed within seconds: %s", exit)
	}
	if want := expectedDetail(c, "_tw_segment", DetailSYN); exit.Detail != want {
		t.Errorf("detail %q, want %q: %s", exit.Detail, want, exit)
	}
}

// A reset for a timewait socket kills it (tcp_rfc1337=0, the default).
func TestTimewaitKilledByRST(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(afd) // the server's orphaned socket becomes a FIN_WAIT2 timewait socket
	readEOF(t, cfd)
	c.waitFor(t, 5*time.Second, "server tw_enter", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(port, cport)), KindTWEnter)
	})
	must(t, "SO_LINGER", unix.SetsockoptLinger(cfd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0}))
	unix.Close(cfd) // CLOSE_WAIT with zero linger: a reset

	evs := c.waitFor(t, 5*time.Second, "server tw_exit", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(port, cport)), KindTWExit)
	})
	exit := exitOf(t, filter(evs, twOf(port, cport)))
	if exit.Cause != CauseKilled || exit.Substate != StateFinWait2 {
		t.Errorf("want killed in FIN_WAIT2: %s", exit)
	}
	if want := expectedDetail(c, "_tw_segment", DetailRST); exit.Detail != want {
		t.Errorf("detail %q, want %q: %s", exit.Detail, want, exit)
	}
}

// connect() from the same port under tcp_tw_reuse takes over the timewait socket.
func TestTimewaitKilledByReuse(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	ns.Sysctl(t, "net/ipv4/tcp_tw_reuse", "1")
	delay := 1100 * time.Millisecond // older kernels: reuse after a full second of timestamps
	if ns.HasSysctl("net/ipv4/tcp_tw_reuse_delay") {
		ns.Sysctl(t, "net/ipv4/tcp_tw_reuse_delay", "1")
		delay = 10 * time.Millisecond
	}
	c := startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cport := clientCloses(t, ns, unix.AF_INET, lfd, port)
	c.waitFor(t, 5*time.Second, "client tw_enter", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWEnter)
	})
	time.Sleep(delay) // the kernel's reuse rule, not a wait for events
	again, _ := connectIn(t, ns, unix.AF_INET, port, cport)
	defer unix.Close(again)
	evs := c.waitFor(t, 5*time.Second, "client tw_exit", func(evs []Event) bool {
		return hasKind(filter(evs, twOf(cport, port)), KindTWExit)
	})
	exit := exitOf(t, filter(evs, twOf(cport, port)))
	if exit.Cause != CauseKilled || !exit.DurationOK {
		t.Errorf("want killed with a known lifetime: %s", exit)
	}
	if exit.Detail != DetailReuse {
		t.Errorf("detail %q, want %q: %s", exit.Detail, DetailReuse, exit)
	}
	if n := ns.Netstat(t, "TWRecycled"); n != 1 {
		t.Errorf("the kernel counted %d timewait sockets taken over (TcpExtTWRecycled), want 1", n)
	}
}

// Deleting the namespace purges its timewait sockets; those born before the
// tracer started have an unknown lifetime, never a made-up one.
func TestTimewaitKilledByNetnsExit(t *testing.T) {
	for _, before := range []bool{false, true} {
		name := map[bool]string{false: "born-while-tracing", true: "born-before-tracing"}[before]
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ns := newNetns(t)
			inode := ns.inode
			var c *collector
			if !before {
				c = startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: inode}})
			}
			lfd, port := listenIn(t, ns, unix.AF_INET)
			var cports []uint16
			for i := 0; i < 3; i++ {
				cports = append(cports, clientCloses(t, ns, unix.AF_INET, lfd, port))
			}
			unix.Close(lfd)
			if before {
				if n := ns.TimeWaitCount(t); n != 3 {
					t.Fatalf("%d sockets in TIME_WAIT before tracing, want 3", n)
				}
				c = startTracer(t, Options{Families: FamilyTW, Filter: Filter{NetNS: inode}})
			} else {
				c.waitFor(t, 5*time.Second, "3 tw_enter", func(evs []Event) bool {
					return len(filter(evs, ofKind(KindTWEnter))) == 3
				})
			}
			ns.Destroy()
			evs := c.waitFor(t, 20*time.Second, "3 tw_exit", func(evs []Event) bool {
				return len(filter(evs, ofKind(KindTWExit))) == 3
			})
			for _, cp := range cports {
				exit := exitOf(t, filter(evs, twOf(cp, port)))
				if exit.Cause != CauseKilled || exit.Detail != DetailNetnsExit {
					t.Errorf("want killed (netns_exit): %s", exit)
				}
				if exit.DurationOK == before {
					t.Errorf("lifetime known=%v, want %v: %s", exit.DurationOK, !before, exit)
				}
			}
		})
	}
}

// N client-first connections make exactly N timewait sockets, as many as the kernel lists.
func TestTimewaitCountsMatchKernel(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET6)
	defer unix.Close(lfd)
	const n = 20
	for i := 0; i < n; i++ {
		clientCloses(t, ns, unix.AF_INET6, lfd, port)
	}
	evs := c.waitFor(t, 5*time.Second, "20 tw_enter", func(evs []Event) bool {
		return len(filter(evs, ofKind(KindTWEnter))) >= n
	})
	if got := len(filter(evs, ofKind(KindTWEnter))); got != n {
		t.Errorf("%d tw_enter, want %d", got, n)
	}
	hand := filter(evs, func(e *Event) bool { return e.Kind == KindState && e.NewState == StateTimeWait })
	if len(hand) != n {
		t.Errorf("%d ->TIME_WAIT transitions, want %d", len(hand), n)
	}
	live := n - len(filter(evs, ofKind(KindTWExit)))
	if k := ns.TimeWaitCount(t); k != live {
		t.Errorf("kernel lists %d sockets in TIME_WAIT, tracer says %d alive", k, live)
	}
	if ss, err := exec.LookPath("ss"); err == nil {
		var out []byte
		ns.Do(func() { out, err = exec.Command(ss, "-Htan", "state", "time-wait").Output() })
		must(t, "ss", err)
		if k := len(strings.Fields(strings.TrimSpace(string(out)))) / 4; k != live {
			t.Errorf("ss lists %d sockets in TIME_WAIT, tracer says %d alive:\n%s", k, live, out)
		}
	}
}
