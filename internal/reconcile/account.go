package reconcile

import (
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
	"github.com/twtrace/twtrace/tracer"
)

// account is one namespace's reported counts and findings.
type account struct {
	overflows, births tally
	// last is the oldest snapshot not compared yet: it is, once Settle has passed
	last     *snapshot.Namespace
	unseen   uint64
	reported map[tracer.Families]uint64 // unattributed so far
}

func (a *account) tally(f tracer.Families) *tally {
	if f == tracer.FamilyOverflow {
		return &a.overflows
	}
	return &a.births
}

// tally counts reported events by their time: how many happened up to a moment, once
// every event up to it has been read. Events arrive nearly in time order.
type tally struct {
	before  time.Time // every event counted in settled happened at or before it
	settled uint64
	recent  []time.Time // events after before
}

func (t *tally) add(at time.Time) {
	if !at.After(t.before) {
		t.settled++
		return
	}
	t.recent = append(t.recent, at)
}

// until counts the events at or before moment, and forgets their times.
func (t *tally) until(moment time.Time) uint64 {
	if moment.After(t.before) {
		kept := t.recent[:0]
		for _, at := range t.recent {
			if at.After(moment) {
				kept = append(kept, at)
			} else {
				t.settled++
			}
		}
		t.recent, t.before = kept, moment
	}
	n := t.settled
	for _, at := range t.recent {
		if !at.After(moment) {
			n++
		}
	}
	return n
}
