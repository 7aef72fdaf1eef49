package tracer

import "fmt"

// transitionSlots matches TRANSITION_SLOTS in bpf/maps.h: old*16 + new.
const transitionSlots = 256

// Transition is a pair of TCP states.
type Transition struct{ Old, New State }

// Transitions reports the state transitions counted since the start, when the tracer
// counts them (Options.CountTransitions). The kernel counts every one, the timewait
// hand-off (->TIME_WAIT) and death (TIME_WAIT->CLOSE) included, whether or not Run is
// reading the ring buffer. Pairs never seen are absent.
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
		var n uint64
		for _, v := range values {
			n += v
		}
		if n > 0 {
			out[Transition{State(slot / 16), State(slot % 16)}] = n
		}
	}
	return out, nil
}
