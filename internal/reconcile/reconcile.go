// Package reconcile sets what the programs reported next to what the kernel shows and
// counts, namespace by namespace, and says how far apart they are:
//   - a timewait socket whose birth was reported and that sock_diag no longer lists, with
//     no death reported, died unseen (the kernel did not run the programs for its timer:
//     measured on the tracepoint backend under load, see README);
//   - overflows and timewait births the kernel counted (TcpExtTCPTimeWaitOverflow,
//     TcpExtTW + TcpExtTWKilled) beyond the events reported are unattributed.
//
// Events are folded in as they are read (Observe); snapshots are compared with them once
// the events they could be compared with have all been read (the reader found the ring
// buffer empty Settle after they were taken), or at the end, once the stream is drained
// (Finish).
package reconcile

import (
	"net/netip"
	"sync"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// Settle is how far past a snapshot the reader must have read (found the ring buffer empty)
// before the snapshot is compared: the tracepoint backend delivers a held kill up to 120 ms
// after its time, and event times and snapshot times come from two clocks.
const Settle = time.Second

// Counted names the kernel counters a family's events are reconciled with.
var Counted = map[tracer.Families][]string{
	tracer.FamilyOverflow: {"TcpExtTCPTimeWaitOverflow"},
	tracer.FamilyTW:       {"TcpExtTW", "TcpExtTWKilled"}, // timewait sockets scheduled: births
}

// Unattributed is what the kernel counted in a namespace beyond the events reported.
type Unattributed struct {
	NetNS  uint32
	Family tracer.Families
	Count  uint64 // found by this comparison
	Total  uint64 // found in the namespace so far
}

// Findings are what one comparison found: deaths no program reported (tw_exit events with
// cause unseen) and counts no event stands for.
type Findings struct {
	Unseen       []tracer.Event
	Unattributed []Unattributed
}

// Reconciler holds the reported lives and counts. Safe for concurrent use.
type Reconciler struct {
	mu       sync.Mutex
	lives    map[lifeKey]*life
	accounts map[uint32]*account
	// counted are the families whose counts cover every socket of a namespace: reported
	// with no socket filter, so the kernel's per-namespace counters compare with them
	counted  tracer.Families
	baseline map[uint32]snapshot.Counters
}

// New starts reconciling. counted are the families to compare with the kernel's counters
// (none when the user's filters keep only some of a namespace's sockets); baseline holds
// the counters at the start, per namespace (one missing was born since: it started at 0).
func New(counted tracer.Families, baseline map[uint32]snapshot.Counters) *Reconciler {
	return &Reconciler{lives: map[lifeKey]*life{}, accounts: map[uint32]*account{}, counted: counted, baseline: baseline}
}

// Observe folds in one reported event. A timewait socket born again while reported alive
// died unseen in between: that death is returned, to be reported with the event.
func (r *Reconciler) Observe(e *tracer.Event) (unseen tracer.Event, found bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	switch e.Kind {
	case tracer.KindTWEnter:
		r.account(e.NetNS).births.add(e.Time)
		k := lifeKeyOf(e)
		if old, ok := r.lives[k]; ok {
			unseen, found = old.death(k, e.Time), true
		}
		r.lives[k] = &life{born: e.Time, seen: e.Time, substate: e.Substate, pid: e.PID, comm: e.Comm, ownerOK: e.OwnerOK, cgroup: e.Cgroup}
	case tracer.KindTWRearm:
		if l, ok := r.lives[lifeKeyOf(e)]; ok {
			l.substate = e.Substate
		}
	case tracer.KindTWExit:
		delete(r.lives, lifeKeyOf(e))
	case tracer.KindTWOverflow:
		r.account(e.NetNS).overflows.add(e.Time)
	}
	return unseen, found
}

// Check compares a snapshot of namespace n with the events read so far: it remembers the
// snapshot, and reports what the one taken at least Settle before readUpTo shows, readUpTo
// being when the reader last found the ring buffer empty (every event before it was read;
// under load the reader lags the kernel by seconds, and wall time would find deaths and
// counts "missing" that are still in the buffer).
func (r *Reconciler) Check(n *snapshot.Namespace, readUpTo time.Time) Findings {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f Findings
	a := r.account(n.NetNS)
	if a.last != nil && readUpTo.Sub(a.last.Time) >= Settle {
		r.compare(a.last, &f)
		a.last = nil
	}
	r.mark(n)
	if a.last == nil {
		a.last = n
	}
	return f
}

// Finish compares a snapshot taken just before the stream was drained: every event it is
// compared with has been read.
func (r *Reconciler) Finish(n *snapshot.Namespace) Findings {
	r.mu.Lock()
	defer r.mu.Unlock()
	var f Findings
	r.mark(n)
	r.compare(n, &f)
	r.account(n.NetNS).last = nil
	return f
}

// Namespaces lists the namespaces with reported lives or counts to compare.
func (r *Reconciler) Namespaces() []uint32 {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]uint32, 0, len(r.accounts))
	for ns := range r.accounts {
		out = append(out, ns)
	}
	return out
}

// Totals sums the findings so far: deaths found unseen, and unattributed counts by family.
func (r *Reconciler) Totals() (unseen uint64, unattributed map[tracer.Families]uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	unattributed = map[tracer.Families]uint64{}
	for _, a := range r.accounts {
		unseen += a.unseen
		for fam, n := range a.reported {
			unattributed[fam] += n
		}
	}
	return unseen, unattributed
}

func (r *Reconciler) account(ns uint32) *account {
	a := r.accounts[ns]
	if a == nil {
		a = &account{reported: map[tracer.Families]uint64{}}
		r.accounts[ns] = a
	}
	return a
}

// lifeKey names a timewait socket: at most one lives per tuple. Plain memory (no pointer,
// no padding), so that the map hashes and compares it as bytes: a churning namespace holds
// a hundred thousand lives, and every timewait event finds its own.
type lifeKey struct {
	saddr, daddr [16]byte
	netns        uint32
	ports        uint32 // source port << 16 | destination port
	family       uint32 // 4, 6, or 0 for no address
}

func newLifeKey(ns uint32, saddr, daddr netip.Addr, sport, dport uint16) lifeKey {
	k := lifeKey{saddr: saddr.As16(), daddr: daddr.As16(), netns: ns, ports: uint32(sport)<<16 | uint32(dport)}
	switch {
	case saddr.Is4():
		k.family = 4
	case saddr.Is6():
		k.family = 6
	}
	return k
}

func lifeKeyOf(e *tracer.Event) lifeKey {
	return newLifeKey(e.NetNS, e.SAddr, e.DAddr, e.SPort, e.DPort)
}

func lifeKeyOfSocket(ns uint32, s *snapshot.Socket) lifeKey {
	return newLifeKey(ns, s.SAddr, s.DAddr, s.SPort, s.DPort)
}

// addrs are the key's addresses as they were given.
func (k lifeKey) addrs() (saddr, daddr netip.Addr) {
	switch k.family {
	case 4:
		return netip.AddrFrom16(k.saddr).Unmap(), netip.AddrFrom16(k.daddr).Unmap()
	case 6:
		return netip.AddrFrom16(k.saddr), netip.AddrFrom16(k.daddr)
	}
	return netip.Addr{}, netip.Addr{}
}

// life is a timewait socket whose birth was reported and whose death was not yet.
type life struct {
	born, seen time.Time // seen: when last known alive (listed, or born)
	gone       time.Time // taken by the first snapshot that did not list it; zero while listed
	substate   tracer.State
	pid        uint32
	comm       [16]byte
	ownerOK    bool
	cgroup     uint64 // the full socket's, as its death would have carried it
}

// death is the unseen death of l, known to lie between seen and gone (or end).
func (l *life) death(k lifeKey, end time.Time) tracer.Event {
	if !l.gone.IsZero() {
		end = l.gone
	}
	saddr, daddr := k.addrs()
	e := tracer.Event{Time: end, Kind: tracer.KindTWExit, Family: 4, SAddr: saddr, DAddr: daddr,
		SPort: uint16(k.ports >> 16), DPort: uint16(k.ports), NetNS: k.netns, PID: l.pid, Comm: l.comm, OwnerOK: l.ownerOK, Cgroup: l.cgroup,
		OldState: tracer.StateTimeWait, NewState: tracer.StateClose, Substate: l.substate,
		Cause: tracer.CauseUnseen, LifetimeMin: l.seen.Sub(l.born), LifetimeMax: end.Sub(l.born)}
	if saddr.Is6() {
		e.Family = 6
	}
	return e
}

// mark records what snapshot n lists: lives listed are seen alive at its time, lives it
// does not list (born before it) are gone by then.
func (r *Reconciler) mark(n *snapshot.Namespace) {
	listed := make(map[lifeKey]bool, len(n.TimeWaitSockets))
	for i := range n.TimeWaitSockets {
		listed[lifeKeyOfSocket(n.NetNS, &n.TimeWaitSockets[i])] = true
	}
	for k, l := range r.lives {
		switch {
		case k.netns != n.NetNS || !l.born.Before(n.Time):
		case listed[k]:
			l.seen, l.gone = n.Time, time.Time{}
		case l.gone.IsZero():
			l.gone = n.Time
		}
	}
}

// compare reports the lives snapshot n found gone whose death is still unreported, and
// the counts n's counters hold beyond the events reported up to its time.
func (r *Reconciler) compare(n *snapshot.Namespace, f *Findings) {
	a := r.account(n.NetNS)
	for k, l := range r.lives {
		if k.netns == n.NetNS && !l.gone.IsZero() && !l.gone.After(n.Time) {
			f.Unseen = append(f.Unseen, l.death(k, l.gone))
			delete(r.lives, k)
			a.unseen++
		}
	}
	if n.Counters == nil {
		return
	}
	for fam, names := range Counted {
		if r.counted&fam == 0 {
			continue
		}
		var kernel int64
		for _, name := range names {
			d, ok := n.Counters.Delta(r.baseline[n.NetNS], name)
			if !ok {
				kernel = -1
				break
			}
			kernel += d
		}
		reported := a.tally(fam).until(n.Time)
		if kernel < 0 || uint64(kernel) <= reported+a.reported[fam] {
			continue
		}
		found := uint64(kernel) - reported - a.reported[fam]
		a.reported[fam] += found
		f.Unattributed = append(f.Unattributed, Unattributed{NetNS: n.NetNS, Family: fam, Count: found, Total: a.reported[fam]})
	}
}
