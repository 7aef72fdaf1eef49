package tracer

import "fmt"

// transitionSlots matches TRANSITION_SLOTS in bpf/maps.h: old*16 + new.
const transitionSlots = 256

// Transition is a pair of TCP states.
type Transition struct{ Old, New State }

// countHandoff counts what a timewait record stands for in the state family, when that
// family is counted: the hand-off (->TIME_WAIT) and the death (TIME_WAIT->CLOSE) are
// only ever seen as timewait records.
func (t *Tracer) countHandoff(e *Event) {
	if e.Kind == KindTWEnter || e.Kind == KindTWExit {
		t.handoffs[(int(e.OldState)&15)*16+int(e.NewState)&15].Add(1)
	}
}

// Transitions reports the state transitions counted since the start, when the tracer
// counts them (Options.CountTransitions): the kernel's counts plus the hand-offs and
// deaths read from timewait records. Pairs never seen are absent.
func (t *Tracer) Transitions() (map[Transition]uint64, error) {
	if !t.opts.CountTransitions || t.opts.Families&FamilyState == 0 {
		return nil, fmt.Errorf("state transitions are not counted by this tracer")
	}
	if t.coll == nil {
		return nil, fmt.Errorf("tracer closed")
	}
	perCPU := make([][]uint64, transitionSlots)
	for slot := range perCPU {
		if err := t.coll.Maps[twtraceMapTransitions].Lookup(uint32(slot), &perCPU[slot]); err != nil {
			return nil, fmt.Errorf("read transitions: %w", err)
		}
	}
	out := map[Transition]uint64{}
	for slot, values := range perCPU {
		n := t.handoffs[slot].Load()
		for _, v := range values {
			n += v
		}
		if n > 0 {
			out[Transition{State(slot / 16), State(slot % 16)}] = n
		}
	}
	return out, nil
}
