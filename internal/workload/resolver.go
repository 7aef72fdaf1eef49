package workload

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twtrace/twtrace/internal/cgroup2"
	"github.com/twtrace/twtrace/internal/cri"
	"golang.org/x/sys/unix"
)

// PodSource lists the node's pods and containers: a *cri.Client, or nil without a runtime.
type PodSource interface {
	Snapshot(ctx context.Context) (cri.Snapshot, error)
}

// Options configure a Resolver; zero values take the defaults.
type Options struct {
	// Hierarchy is the cgroup v2 hierarchy (cgroup2.Find); nil when none is mounted: cgroup ids stay unknown.
	Hierarchy *cgroup2.Hierarchy
	// Pods names pods and containers; nil leaves pod UIDs and container ids unnamed.
	Pods PodSource
	// MaxCgroups bounds the workloads kept by cgroup id (default 16384); beyond it, those of removed
	// cgroups are forgotten first.
	MaxCgroups int
	// Retain is how long a removed cgroup's workload stays known (default 10 minutes): a container's
	// timewait sockets outlive it by a minute, and events are read late.
	Retain time.Duration
	// MinRefresh spaces the refreshes misses trigger (default 100 ms): a walk of the cgroup tree, a
	// listing of the runtime's pods, a scan of /proc, each at most once per MinRefresh. A miss inside
	// that interval waits for its end rather than giving up on a cgroup created just after a walk.
	MinRefresh time.Duration
	// RetryUnknown is how long an id found nowhere (or a pod the runtime did not list) is not looked
	// for again (default 1 s).
	RetryUnknown time.Duration
	// ProcRoot is where /proc is (default /proc), for the network namespace scan.
	ProcRoot string
	// Now and Sleep are the clock (tests).
	Now   func() time.Time
	Sleep func(time.Duration)
}

// Resolver maps the cgroup ids and network namespaces events carry to workloads. A hit is a map read
// under a read lock; a miss refreshes what it needs. Safe for concurrent use.
type Resolver struct {
	o Options

	// cgroups maps an id to its *entry: read without a lock, written only under refresh; an entry
	// is never modified once stored, but replaced.
	cgroups  sync.Map
	ncgroups atomic.Int64

	refresh  sync.Mutex // one refresh at a time
	paths    map[uint64]string
	lastWalk time.Time
	handles  int8 // open_by_handle_at: 0 untried, 1 works, -1 not here (no capability, not cgroupfs)
	pods     cri.Snapshot
	lastPods time.Time
	podsErr  error
	netns    map[uint64]nsEntry
	lastScan time.Time

	misses, walks, podListings, podErrors, netnsScans, forgotten, ambiguous atomic.Uint64 // ambiguous: at the last scan
}

type entry struct {
	w         Workload
	known     bool      // false: no such cgroup at the last walk
	unnamed   bool      // a pod the runtime did not list yet
	tried     time.Time // when it was last looked for
	goneSince time.Time // zero while the cgroup exists
}

// Stats count what the resolver did, for the summary and the exporter.
type Stats struct {
	Misses         uint64 // cgroup lookups left unknown
	Walks          uint64 // walks of the cgroup tree
	PodListings    uint64 // runtime listings
	PodErrors      uint64 // runtime listings that failed
	NetnsScans     uint64 // scans of /proc for network namespaces
	AmbiguousNetns uint64 // namespaces shared by several pods or containers at the last scan, left unnamed
	Cgroups        int    // workloads kept by cgroup id
	Forgotten      uint64 // removed cgroups forgotten after Retain (or to stay within MaxCgroups)
}

// New returns a resolver; nothing is read until the first lookup.
func New(o Options) *Resolver {
	if o.MaxCgroups <= 0 {
		o.MaxCgroups = 16384
	}
	if o.Retain <= 0 {
		o.Retain = 10 * time.Minute
	}
	if o.MinRefresh <= 0 {
		o.MinRefresh = 100 * time.Millisecond
	}
	if o.RetryUnknown <= 0 {
		o.RetryUnknown = time.Second
	}
	if o.ProcRoot == "" {
		o.ProcRoot = "/proc"
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Sleep == nil {
		o.Sleep = time.Sleep
	}
	return &Resolver{o: o}
}

// Cached returns the workload of cgroup id if it is known already, without any system call.
func (r *Resolver) Cached(id uint64) (Workload, bool) {
	e, ok := r.load(id)
	return e.w, ok && e.known
}

func (r *Resolver) load(id uint64) (*entry, bool) {
	v, ok := r.cgroups.Load(id)
	if !ok {
		return &entry{}, false
	}
	return v.(*entry), true
}

// Cgroup returns the workload of cgroup id, refreshing on a miss; false when the id names no cgroup
// here (no v2 hierarchy, or a cgroup removed before it was first looked up).
func (r *Resolver) Cgroup(id uint64) (Workload, bool) {
	e, ok := r.load(id)
	if r.stale(e, ok) {
		e = r.resolve(id)
	}
	if !e.known {
		r.misses.Add(1)
	}
	return e.w, e.known
}

// CgroupNow answers as Cgroup would where Cgroup would answer from what it holds; ready is
// false, and nothing is counted, where Cgroup would look the id up: for a caller that must
// not wait (the event reader), which then hands the id to one that may.
func (r *Resolver) CgroupNow(id uint64) (w Workload, known, ready bool) {
	e, ok := r.load(id)
	if r.stale(e, ok) {
		return Workload{}, false, false
	}
	if !e.known {
		r.misses.Add(1)
	}
	return e.w, e.known, true
}

// stale says whether the entry loaded for an id is to be looked up again: never looked up,
// or unknown or unnamed and last tried RetryUnknown ago.
func (r *Resolver) stale(e *entry, ok bool) bool {
	return !ok || (!e.known || e.unnamed) && r.o.Now().Sub(e.tried) >= r.o.RetryUnknown
}

func (r *Resolver) resolve(id uint64) *entry {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	old, ok := r.load(id)
	if ok && r.o.Now().Sub(old.tried) < r.o.RetryUnknown {
		return old // another caller just looked
	}
	if r.o.Hierarchy == nil {
		return r.store(id, &entry{tried: r.o.Now()})
	}
	path, indexed := r.paths[id]
	if !indexed && !old.known {
		path, indexed = r.find(id)
	}
	switch {
	case indexed:
		w := Parse(path)
		return r.store(id, &entry{w: w, known: true, unnamed: !r.name(&w), tried: r.o.Now()})
	case old.known: // removed since it was named: keep what it was
		again := *old
		again.tried = r.o.Now()
		return r.store(id, &again)
	default:
		return r.store(id, &entry{tried: r.o.Now()})
	}
}

// name fills in the pod's namespace and name and the container's name from the runtime, listing
// its pods again if they are not in the last listing; false if the pod is still unnamed.
func (r *Resolver) name(w *Workload) bool {
	if r.o.Pods == nil || (w.PodUID == "" && w.ContainerID == "") {
		return true
	}
	if !nameFrom(r.pods, w) {
		r.listPods()
		nameFrom(r.pods, w)
	}
	return w.PodUID == "" || w.Pod != ""
}

// sweepEvery spaces the walks that notice removed cgroups when misses are answered by handle.
const sweepEvery = time.Minute

// find looks a cgroup id up: by its kernel file handle where that works (one system call), else by
// walking the tree. A walk also notices removed cgroups, so one is made at least every sweepEvery.
func (r *Resolver) find(id uint64) (string, bool) {
	if r.handles == 0 {
		r.handles = -1
		if r.o.Hierarchy.IsCgroupfs() {
			r.handles = 1
		}
	}
	if r.handles > 0 {
		path, err := r.o.Hierarchy.PathOf(id)
		switch {
		case err == nil || errors.Is(err, cgroup2.ErrNoCgroup):
			if r.o.Now().Sub(r.lastWalk) >= sweepEvery {
				r.walk()
			}
			if err == nil {
				r.paths[id] = path
			}
			return path, err == nil
		case errors.Is(err, unix.EPERM):
			r.handles = -1 // no CAP_DAC_READ_SEARCH: walk from now on
		}
	}
	r.walk()
	path, ok := r.paths[id]
	return path, ok
}

// spaced waits until MinRefresh has passed since last, then sets last to now.
func (r *Resolver) spaced(last *time.Time) {
	if wait := r.o.MinRefresh - r.o.Now().Sub(*last); wait > 0 && !last.IsZero() {
		r.o.Sleep(wait)
	}
	*last = r.o.Now()
}

func (r *Resolver) listPods() {
	r.spaced(&r.lastPods)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	s, err := r.o.Pods.Snapshot(ctx)
	r.podListings.Add(1)
	r.podsErr = err
	if err != nil {
		r.podErrors.Add(1)
		return
	}
	r.pods = s
}

// PodsErr is the error of the last runtime listing, nil if it answered (or none is configured).
func (r *Resolver) PodsErr() error {
	r.refresh.Lock()
	defer r.refresh.Unlock()
	return r.podsErr
}

// walk re-reads the cgroup tree, marks the workloads of removed cgroups gone and forgets those gone
// for longer than Retain.
func (r *Resolver) walk() {
	r.spaced(&r.lastWalk)
	paths := make(map[uint64]string, len(r.paths))
	if err := r.o.Hierarchy.Walk(func(p string, id uint64) { paths[id] = p }); err != nil {
		return // keep the previous index; the next miss retries
	}
	r.paths = paths
	r.walks.Add(1)
	now := r.o.Now()
	r.cgroups.Range(func(k, v any) bool {
		id, e := k.(uint64), v.(*entry)
		_, alive := paths[id]
		switch {
		case alive && !e.goneSince.IsZero():
			again := *e
			again.goneSince = time.Time{}
			r.cgroups.Store(id, &again)
		case !alive && e.goneSince.IsZero():
			again := *e
			again.goneSince = now
			r.cgroups.Store(id, &again)
		case !alive && now.Sub(e.goneSince) >= r.o.Retain:
			r.forget(id)
		}
		return true
	})
}

// store adds an entry, first making room within MaxCgroups: unknown ids and the longest-gone
// cgroups go first.
func (r *Resolver) store(id uint64, e *entry) *entry {
	if old, ok := r.load(id); ok {
		e.goneSince = old.goneSince
	} else {
		if r.ncgroups.Load() >= int64(r.o.MaxCgroups) {
			r.evict()
		}
		r.ncgroups.Add(1)
	}
	r.cgroups.Store(id, e)
	return e
}

func (r *Resolver) evict() {
	var victim uint64
	var oldest time.Time
	found := false
	r.cgroups.Range(func(k, v any) bool {
		id, e := k.(uint64), v.(*entry)
		if !e.known {
			victim, found = id, true
			return false
		}
		if !e.goneSince.IsZero() && (!found || e.goneSince.Before(oldest)) {
			victim, oldest, found = id, e.goneSince, true
		}
		return true
	})
	if !found { // every entry is a live cgroup: any will do, it is resolved again when asked for
		r.cgroups.Range(func(k, _ any) bool {
			victim = k.(uint64)
			return false
		})
	}
	r.forget(victim)
}

func (r *Resolver) forget(id uint64) {
	if _, ok := r.cgroups.LoadAndDelete(id); ok {
		r.ncgroups.Add(-1)
		r.forgotten.Add(1)
	}
}

// Stats returns the counters.
func (r *Resolver) Stats() Stats {
	return Stats{
		Misses: r.misses.Load(), Walks: r.walks.Load(),
		PodListings: r.podListings.Load(), PodErrors: r.podErrors.Load(), NetnsScans: r.netnsScans.Load(),
		AmbiguousNetns: r.ambiguous.Load(), Cgroups: int(r.ncgroups.Load()), Forgotten: r.forgotten.Load(),
	}
}
