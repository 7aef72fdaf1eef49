package tracer

import (
	"os"
	"slices"
	"testing"

	"golang.org/x/sys/unix"
)

func TestStateTransitionsClientClosesFirst(t *testing.T) {
	for _, family := range []int{unix.AF_INET, unix.AF_INET6} {
		t.Run(familyName(family), func(t *testing.T) {
			t.Parallel()
			requireRoot(t)
			ns := newNetns(t)
			c := startTracer(t, Options{Families: FamilyState, Filter: Filter{NetNS: ns.inode}})
			lfd, port := listenIn(t, ns, family)
			cport := clientCloses(t, ns, family, lfd, port)
			unix.Close(lfd)

			client, server := clientSocket(cport, port), acceptedSocket(port, cport)
			evs := c.waitFor(t, 5e9, "both sockets closed", func(evs []Event) bool {
				return len(filter(evs, client)) == 5 && len(filter(evs, server)) == 5
			})
			wantClient := []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"}
			wantServer := []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"}
			checkSequence(t, "client", filter(evs, client), wantClient)
			checkSequence(t, "server", filter(evs, server), wantServer)

			lo := loopbackAddr(family)
			for _, e := range evs {
				if e.NetNS != ns.inode || e.Family != familyNumber(family) {
					t.Errorf("event outside the test's namespace or family: %s", e)
				}
				if e.SAddr != lo || (e.DPort != 0 && e.DAddr != lo) {
					t.Errorf("addresses are not loopback: %s", e)
				}
			}
			checkInOld(t, filter(evs, client))
			checkInOld(t, filter(evs, server)[1:])
		})
	}
}

func TestStateTransitionsServerClosesFirst(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyState, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	cfd, cport := connectIn(t, ns, unix.AF_INET, port, 0)
	afd := acceptOn(t, lfd)
	unix.Close(afd)
	readEOF(t, cfd)
	unix.Close(cfd)

	client, server := clientSocket(cport, port), acceptedSocket(port, cport)
	evs := c.waitFor(t, 5e9, "both sockets closed", func(evs []Event) bool {
		return len(filter(evs, client)) == 5 && len(filter(evs, server)) == 5
	})
	checkSequence(t, "server", filter(evs, server), []string{"LISTEN->SYN_RECV", "SYN_RECV->ESTABLISHED", "ESTABLISHED->FIN_WAIT1", "FIN_WAIT1->FIN_WAIT2", "FIN_WAIT2->TIME_WAIT"})
	checkSequence(t, "client", filter(evs, client), []string{"CLOSE->SYN_SENT", "SYN_SENT->ESTABLISHED", "ESTABLISHED->CLOSE_WAIT", "CLOSE_WAIT->LAST_ACK", "LAST_ACK->CLOSE"})
}

// The owner is the process that owns the socket, never whoever the softirq
// happened to interrupt: here the client lives in a child process.
func TestOwnerIsTheOwningProcess(t *testing.T) {
	t.Parallel()
	requireRoot(t)
	ns := newNetns(t)
	c := startTracer(t, Options{Families: FamilyState, Filter: Filter{NetNS: ns.inode}})
	lfd, port := listenIn(t, ns, unix.AF_INET)
	defer unix.Close(lfd)
	childPID, cport, closeChild := startChildClient(t, ns, unix.AF_INET, port)
	afd := acceptOn(t, lfd)
	closeChild()
	readEOF(t, afd)
	unix.Close(afd)

	client, server := clientSocket(cport, port), acceptedSocket(port, cport)
	evs := c.waitFor(t, 5e9, "both sockets closed", func(evs []Event) bool {
		return len(filter(evs, client)) == 5 && len(filter(evs, server)) == 5
	})
	owners := map[string]uint32{"client": uint32(childPID), "server": uint32(os.Getpid())}
	for side, pick := range map[string]func(*Event) bool{"client": client, "server": server} {
		known := 0
		for _, e := range filter(evs, pick) {
			switch {
			case !e.OwnerOK && (e.PID != 0 || e.CommString() != ""):
				t.Errorf("%s: unknown owner must be pid 0, empty comm: %s", side, e)
			case e.OwnerOK && e.PID != owners[side]:
				t.Errorf("%s: owner pid %d, want %d (a bystander?): %s", side, e.PID, owners[side], e)
			case e.OwnerOK:
				known++
			}
		}
		if known == 0 {
			t.Errorf("%s: no event named the owner", side)
		}
	}
	// the client's owner is learned at connect and carried to every later event
	for _, e := range filter(evs, client) {
		if !e.OwnerOK {
			t.Errorf("client event without owner: %s", e)
		}
	}
}

func TestFiltersDropInTheKernel(t *testing.T) {
	requireRoot(t)
	cases := []struct {
		name   string
		filter func(ns *netns, portA uint16) Filter
		keep   func(e *Event, portA uint16) bool
	}{
		{"port", func(ns *netns, a uint16) Filter { return Filter{NetNS: ns.inode, Port: a} },
			func(e *Event, a uint16) bool { return e.SPort == a || e.DPort == a }},
		{"ipv6", func(ns *netns, a uint16) Filter { return Filter{NetNS: ns.inode, Family: 6} },
			func(e *Event, a uint16) bool { return e.Family == 6 }},
		{"addr", func(ns *netns, a uint16) Filter {
			return Filter{NetNS: ns.inode, Addr: mustPrefix("::1/128")}
		}, func(e *Event, a uint16) bool { return e.Family == 6 }},
		{"pid", func(ns *netns, a uint16) Filter { return Filter{NetNS: ns.inode, PID: uint32(os.Getpid())} },
			func(e *Event, a uint16) bool { return e.OwnerOK && e.PID == uint32(os.Getpid()) }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			ns := newNetns(t)
			lfdA, portA := listenIn(t, ns, unix.AF_INET6)
			lfdB, portB := listenIn(t, ns, unix.AF_INET)
			defer unix.Close(lfdA)
			defer unix.Close(lfdB)
			c := startTracer(t, Options{Families: FamilyState, Filter: tc.filter(ns, portA)})
			cportA := clientCloses(t, ns, unix.AF_INET6, lfdA, portA)
			clientCloses(t, ns, unix.AF_INET, lfdB, portB)
			evs := c.waitFor(t, 5e9, "the kept connection's client in TIME_WAIT", func(evs []Event) bool {
				return slices.Contains(transitions(filter(evs, clientSocket(cportA, portA))), "FIN_WAIT2->TIME_WAIT")
			})
			// the dropped connection closed before the kept one, so all its events are in by now
			for _, e := range evs {
				if !tc.keep(&e, portA) {
					t.Errorf("filter %s let through: %s", tc.name, e)
				}
			}
			s := c.Stop(t)
			if s.Filtered < 5 {
				t.Errorf("kernel counted %d filtered events, want at least the 5 of the dropped client", s.Filtered)
			}
			if s.Decoded != s.Emitted {
				t.Errorf("decoded %d of %d emitted events", s.Decoded, s.Emitted)
			}
		})
	}
}

func checkSequence(t *testing.T, who string, evs []Event, want []string) {
	t.Helper()
	if got := transitions(evs); !slices.Equal(got, want) {
		t.Errorf("%s transitions:\n got  %v\n want %v\n%s", who, got, want, dump(evs))
	}
}

// checkInOld: each in_old is exactly the time since the socket's previous event.
func checkInOld(t *testing.T, evs []Event) {
	t.Helper()
	for i := 1; i < len(evs); i++ {
		e, prev := evs[i], evs[i-1]
		if !e.DurationOK {
			t.Errorf("in_old unknown for a socket seen since its creation: %s", e)
			continue
		}
		if want := e.Time.Sub(prev.Time); e.Duration != want {
			t.Errorf("in_old %v, want %v (time since previous transition): %s", e.Duration, want, e)
		}
	}
}
