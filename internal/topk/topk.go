// Package topk bounds the label cardinality of per-workload metrics: at most K keys (workloads) have
// series of their own, the busiest ones, and every other key is counted in one shared series. A
// key's series never decreases: a key admitted starts from zero (what it did before stays where it
// was counted), and a key evicted stops being exported while the shared series takes its further
// counts, so counters stay monotonic whatever the membership does.
package topk

import (
	"cmp"
	"slices"
	"sync"
	"time"
)

// Limiter chooses the keys with series of their own. Safe for concurrent use.
type Limiter[K cmp.Ordered] struct {
	k         int
	idle      time.Duration
	maxTracks int

	mu      sync.Mutex
	members map[K]*member
	recent  map[K]uint64 // activity of keys that are not members, since the last Rebalance
}

type member struct {
	recent     uint64
	lastActive time.Time
}

// New returns a limiter for k keys; a member with no activity for idle gives its place up. It
// tracks the activity of at most 16·k+1024 other keys between two rebalances.
func New[K cmp.Ordered](k int, idle time.Duration) *Limiter[K] {
	return &Limiter[K]{k: k, idle: idle, maxTracks: 16*k + 1024, members: make(map[K]*member), recent: make(map[K]uint64)}
}

// Member records one unit of activity for key and says whether key has its own series now (false:
// count it in the shared one).
func (l *Limiter[K]) Member(key K) bool { return l.Count(key, 1) }

// Count records n units of activity for key, as Member does one.
func (l *Limiter[K]) Count(key K, n uint64) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m, ok := l.members[key]; ok {
		m.recent += n
		return true
	}
	// Beyond maxTracks a key still counts in the shared series; it only waits a round to compete.
	if len(l.recent) < l.maxTracks {
		l.recent[key] += n
	} else if v, ok := l.recent[key]; ok {
		l.recent[key] = v + n
	}
	return false
}

// Rebalance, called at each scrape, updates the membership from the activity since the last call:
// members idle for longer than idle leave; free places go to the busiest other keys; an other key
// at least twice as busy as the quietest member takes its place (the factor keeps two keys of
// similar activity from taking turns). It returns the keys that left, whose series are to be
// deleted, and the keys that joined.
func (l *Limiter[K]) Rebalance(now time.Time) (left, joined []K) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for key, m := range l.members {
		if m.recent > 0 {
			m.lastActive = now
		} else if now.Sub(m.lastActive) >= l.idle {
			delete(l.members, key)
			left = append(left, key)
		}
	}
	candidates := make([]K, 0, len(l.recent))
	for key := range l.recent {
		candidates = append(candidates, key)
	}
	slices.SortFunc(candidates, func(a, b K) int {
		if c := cmp.Compare(l.recent[b], l.recent[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	for _, key := range candidates {
		activity := l.recent[key]
		if len(l.members) >= l.k {
			quietest, q, ok := l.quietest()
			if !ok || activity < 2*q.recent || activity == 0 {
				break
			}
			delete(l.members, quietest)
			left = append(left, quietest)
		}
		l.members[key] = &member{recent: activity, lastActive: now}
		joined = append(joined, key)
	}
	for _, m := range l.members {
		m.recent = 0
	}
	clear(l.recent)
	slices.Sort(left)
	slices.Sort(joined)
	return left, joined
}

func (l *Limiter[K]) quietest() (K, *member, bool) {
	var key K
	var q *member
	for k, m := range l.members {
		if q == nil || m.recent < q.recent || (m.recent == q.recent && k > key) {
			key, q = k, m
		}
	}
	return key, q, q != nil
}

// Members lists the keys with series of their own, sorted.
func (l *Limiter[K]) Members() []K {
	l.mu.Lock()
	defer l.mu.Unlock()
	keys := make([]K, 0, len(l.members))
	for k := range l.members {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Split keeps the k largest values (ties by key) and sums the others: for gauges, which need no
// stable membership.
func Split[K cmp.Ordered](values map[K]float64, k int) (top map[K]float64, other float64) {
	keys := make([]K, 0, len(values))
	for key := range values {
		keys = append(keys, key)
	}
	slices.SortFunc(keys, func(a, b K) int {
		if c := cmp.Compare(values[b], values[a]); c != 0 {
			return c
		}
		return cmp.Compare(a, b)
	})
	top = make(map[K]float64, min(k, len(keys)))
	for i, key := range keys {
		if i < k {
			top[key] = values[key]
		} else {
			other += values[key]
		}
	}
	return top, other
}
