package reconcile

import (
	"net/netip"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

var t0 = time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)

func at(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }

var lo = netip.MustParseAddr("127.0.0.1")

func tw(kind tracer.Kind, ms int, sport uint16) *tracer.Event {
	return &tracer.Event{Kind: kind, Time: at(ms), NetNS: 7, Family: 4, SAddr: lo, DAddr: lo, SPort: sport, DPort: 8080,
		Substate: tracer.StateTimeWait, PID: 42, OwnerOK: true, Cgroup: 9}
}

func snap(ms int, counters snapshot.Counters, sports ...uint16) *snapshot.Namespace {
	n := &snapshot.Namespace{NetNS: 7, Time: at(ms), Counters: counters}
	for _, p := range sports {
		n.TimeWaitSockets = append(n.TimeWaitSockets, snapshot.Socket{Family: 4, State: 6, SAddr: lo, DAddr: lo, SPort: p, DPort: 8080})
	}
	return n
}

func TestUnseenDeath(t *testing.T) {
	r := New(0, nil)
	r.Observe(tw(tracer.KindTWEnter, 0, 40000))
	r.Observe(tw(tracer.KindTWEnter, 10, 40001))
	r.Observe(tw(tracer.KindTWExit, 500, 40001)) // reported: not unseen
	if f := r.Check(snap(1000, nil, 40000), at(1000)); len(f.Unseen) != 0 {
		t.Fatalf("listed: %+v", f.Unseen)
	}
	// gone at 2 s, compared once a second has passed (its death might still be in flight)
	if f := r.Check(snap(2000, nil), at(2000)); len(f.Unseen) != 0 {
		t.Fatalf("not settled yet: %+v", f.Unseen)
	}
	f := r.Check(snap(3100, nil), at(3100))
	if len(f.Unseen) != 1 {
		t.Fatalf("want the socket gone at 2 s found unseen, got %+v", f.Unseen)
	}
	e := f.Unseen[0]
	if e.Kind != tracer.KindTWExit || e.Cause != tracer.CauseUnseen || e.DurationOK || e.SPort != 40000 ||
		e.LifetimeMin != time.Second || e.LifetimeMax != 2*time.Second || e.PID != 42 || e.Cgroup != 9 || !e.Time.Equal(at(2000)) {
		t.Errorf("unseen death: %+v", e)
	}
	if unseen, _ := r.Totals(); unseen != 1 {
		t.Errorf("%d unseen in total, want 1", unseen)
	}
}

// A death reported late, within Settle of the snapshot that found the socket gone, is not
// reported twice.
func TestLateDeathIsNotUnseen(t *testing.T) {
	r := New(0, nil)
	r.Observe(tw(tracer.KindTWEnter, 0, 40000))
	r.Check(snap(1000, nil), at(1000))
	r.Observe(tw(tracer.KindTWExit, 990, 40000))
	if f := r.Check(snap(2100, nil), at(2100)); len(f.Unseen) != 0 {
		t.Errorf("a reported death found unseen: %+v", f.Unseen)
	}
}

// Born again on the same tuple with no death reported: the first life died unseen, before.
func TestBornAgainWithoutDeath(t *testing.T) {
	r := New(0, nil)
	r.Observe(tw(tracer.KindTWEnter, 0, 40000))
	e, found := r.Observe(tw(tracer.KindTWEnter, 300, 40000))
	if !found || e.Cause != tracer.CauseUnseen || e.LifetimeMin != 0 || e.LifetimeMax != 300*time.Millisecond {
		t.Errorf("want an unseen death within the first 300 ms: %v %+v", found, e)
	}
}

func TestUnattributedCounts(t *testing.T) {
	base := map[uint32]snapshot.Counters{7: {"TcpExtTCPTimeWaitOverflow": 100, "TcpExtTW": 50, "TcpExtTWKilled": 0}}
	r := New(tracer.FamilyOverflow|tracer.FamilyTW, base)
	for ms := 0; ms < 10; ms++ {
		r.Observe(tw(tracer.KindTWOverflow, ms, 41000))
	}
	r.Observe(tw(tracer.KindTWEnter, 5, 40000))
	r.Observe(tw(tracer.KindTWOverflow, 1500, 41000)) // after the snapshot: not compared with it
	r.Check(snap(1000, snapshot.Counters{"TcpExtTCPTimeWaitOverflow": 113, "TcpExtTW": 52, "TcpExtTWKilled": 0}, 40000), at(1000))
	f := r.Check(snap(2100, snapshot.Counters{"TcpExtTCPTimeWaitOverflow": 114, "TcpExtTW": 52, "TcpExtTWKilled": 0}, 40000), at(2100))
	got := map[tracer.Families]uint64{}
	for _, u := range f.Unattributed {
		got[u.Family] = u.Count
	}
	if got[tracer.FamilyOverflow] != 3 || got[tracer.FamilyTW] != 1 || len(got) != 2 {
		t.Fatalf("want 3 overflows and 1 birth unattributed, got %+v", f.Unattributed)
	}
	// at the end, drained: the last overflow is reported, nothing more is missing
	f = r.Finish(snap(2200, snapshot.Counters{"TcpExtTCPTimeWaitOverflow": 114, "TcpExtTW": 52, "TcpExtTWKilled": 0}, 40000))
	if len(f.Unattributed) != 0 {
		t.Errorf("nothing more is unattributed: %+v", f.Unattributed)
	}
	if _, u := r.Totals(); u[tracer.FamilyOverflow] != 3 || u[tracer.FamilyTW] != 1 {
		t.Errorf("totals %v", u)
	}
}

// Without counted families (filters keep some sockets only), counters are not compared.
func TestNotCountedUnderFilters(t *testing.T) {
	r := New(0, nil)
	f := r.Finish(snap(0, snapshot.Counters{"TcpExtTCPTimeWaitOverflow": 9, "TcpExtTW": 9, "TcpExtTWKilled": 0}))
	if len(f.Unattributed) != 0 {
		t.Errorf("%+v", f.Unattributed)
	}
}

// A life's key gives back the addresses it was made from, as they were: IPv4, IPv6,
// IPv4-mapped IPv6 (a different socket from the IPv4 one) and none.
func TestLifeKeyKeepsTheAddresses(t *testing.T) {
	pairs := [][2]netip.Addr{
		{lo, netip.MustParseAddr("10.1.2.3")},
		{netip.MustParseAddr("::1"), netip.MustParseAddr("2001:db8::7")},
		{netip.MustParseAddr("::ffff:127.0.0.1"), netip.MustParseAddr("::ffff:10.1.2.3")},
		{{}, {}},
	}
	keys := map[lifeKey]bool{}
	for _, p := range pairs {
		k := newLifeKey(7, p[0], p[1], 40000, 8080)
		if s, d := k.addrs(); s != p[0] || d != p[1] {
			t.Errorf("key of %v -> %v gives back %v -> %v", p[0], p[1], s, d)
		}
		keys[k] = true
	}
	if len(keys) != len(pairs) {
		t.Errorf("%d distinct keys for %d distinct tuples", len(keys), len(pairs))
	}
	e := tw(tracer.KindTWEnter, 0, 40000)
	if k := lifeKeyOf(e); k != newLifeKey(7, lo, lo, 40000, 8080) || k == newLifeKey(7, lo, lo, 8080, 40000) {
		t.Errorf("ports in the key: %+v", k)
	}
}
