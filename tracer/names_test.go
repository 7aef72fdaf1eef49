package tracer

import (
	"slices"
	"testing"
)

// The reasons listed in advance are exactly those a sent reset can carry: every name
// of the kernel's enum but its count, or, without it, every inferred one.
func TestResetReasonsKnown(t *testing.T) {
	withMax := append(slices.Clone(unitReasons), "max")
	if got, want := withMax.known(), []string{"no_socket", "not_specified", "tcp_abort_on_close"}; !slices.Equal(got, want) {
		t.Errorf("kernel reasons %q: known %q, want %q", withMax, got, want)
	}
	got := resetReasons(nil).known()
	if want := []string{"not_specified", "tcp_abort_on_close", "tcp_state"}; !slices.Equal(got, want) {
		t.Errorf("no kernel reasons: known %q, want %q", got, want)
	}
	for _, v := range specEnum(t, loadSpec(t), "inferred_reason").Values {
		if name := resetReasons(nil).name(uint16(v.Value), false); !slices.Contains(got, name) {
			t.Errorf("inferred %s is named %q, which is not listed in advance", v.Name, name)
		}
	}
}
