package tracer

import (
	"fmt"
	"strings"
)

// Families selects event families (--events).
type Families uint32

// The bits are enum event_family in bpf/common.h.
const (
	FamilyState    = Families(twtraceEventFamilyFAM_STATE)
	FamilyTW       = Families(twtraceEventFamilyFAM_TW)
	FamilyOverflow = Families(twtraceEventFamilyFAM_OVERFLOW)
	FamilyReset    = Families(twtraceEventFamilyFAM_RESET)
	FamilyConnect  = Families(twtraceEventFamilyFAM_CONNECT)

	AllFamilies = FamilyState | FamilyTW | FamilyOverflow | FamilyReset | FamilyConnect
)

var familyNames = []struct {
	name string
	f    Families
}{{"state", FamilyState}, {"tw", FamilyTW}, {"overflow", FamilyOverflow}, {"reset", FamilyReset}, {"connect", FamilyConnect}}

// ParseFamilies parses a comma-separated list such as "state,tw"; "all" selects every family.
func ParseFamilies(s string) (Families, error) {
	var fs Families
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		if part == "all" {
			fs |= AllFamilies
			continue
		}
		found := false
		for _, n := range familyNames {
			if n.name == part {
				fs |= n.f
				found = true
			}
		}
		if !found {
			return 0, fmt.Errorf("unknown event family %q (want state, tw, overflow, reset, connect or all)", part)
		}
	}
	return fs, nil
}

func (fs Families) String() string {
	var names []string
	for _, n := range familyNames {
		if fs&n.f != 0 {
			names = append(names, n.name)
		}
	}
	return strings.Join(names, ",")
}

// Options configure a Tracer.
type Options struct {
	Families Families
	Filter   Filter
	Backend  Backend
	// RingBufferSize in bytes: a power of two and a multiple of the page size. 0 means the default.
	RingBufferSize uint32
	// CountTransitions counts the state family in the kernel instead of streaming it: Run
	// delivers no KindState events and Transitions reports the counts. For readers that
	// only count (views, metrics), it removes about nine records per connection.
	CountTransitions bool
	// EmptyBodies attaches the programs of the tracepoint backend with bodies that return
	// at once (see Emptied): the floor under twtrace's own work, for measuring what that
	// work costs. Nothing is traced on that backend.
	EmptyBodies bool
}

// DefaultRingBufferSize is what the ring buffer holds when Options leave it 0.
const DefaultRingBufferSize = 4 << 20

// ValidateRingBufferSize checks what the kernel would refuse, with a clearer message.
func ValidateRingBufferSize(size uint32, pageSize int) error {
	if size == 0 || size&(size-1) != 0 || size%uint32(pageSize) != 0 {
		return fmt.Errorf("ring buffer size %d: must be a power of two and a multiple of the page size (%d)", size, pageSize)
	}
	return nil
}
