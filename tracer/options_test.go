package tracer

import (
	"strings"
	"testing"
)

func TestParseFamilies(t *testing.T) {
	tests := []struct {
		in   string
		want Families
	}{
		{"state", FamilyState},
		{"tw", FamilyTW},
		{"overflow", FamilyOverflow},
		{"reset", FamilyReset},
		{"connect", FamilyConnect},
		{"tw,reset", FamilyTW | FamilyReset},
		{"all", AllFamilies},
		{" state , tw ", FamilyState | FamilyTW},
		{"state,state", FamilyState},
		{"reset,all", AllFamilies},
		{"state,tw,overflow,reset,connect", AllFamilies},
	}
	for _, tt := range tests {
		got, err := ParseFamilies(tt.in)
		if err != nil {
			t.Errorf("ParseFamilies(%q): %v", tt.in, err)
			continue
		}
		if got != tt.want {
			t.Errorf("ParseFamilies(%q) = %#x, want %#x", tt.in, got, tt.want)
		}
	}
}

func TestParseFamiliesErrors(t *testing.T) {
	tests := []struct {
		in  string
		bad string // the value the message must quote
	}{
		{"bogus", `"bogus"`},
		{"state,bogus", `"bogus"`},
		{"State", `"State"`},
		{"tw;reset", `"tw;reset"`},
		{"", `""`},
		{"state,,tw", `""`},
	}
	for _, tt := range tests {
		got, err := ParseFamilies(tt.in)
		if err == nil {
			t.Errorf("ParseFamilies(%q) = %v, want an error", tt.in, got)
			continue
		}
		if got != 0 {
			t.Errorf("ParseFamilies(%q) returned %#x with its error, want 0", tt.in, got)
		}
		if !strings.Contains(err.Error(), tt.bad) {
			t.Errorf("ParseFamilies(%q) error %q does not name %s", tt.in, err, tt.bad)
		}
	}
}

func TestParseFamiliesString(t *testing.T) {
	tests := []struct {
		fs   Families
		want string
	}{
		{0, ""},
		{FamilyState, "state"},
		{FamilyReset | FamilyTW, "tw,reset"},
		{AllFamilies, "state,tw,overflow,reset,connect"},
		{AllFamilies | 1<<8, "state,tw,overflow,reset,connect"},
	}
	for _, tt := range tests {
		if got := tt.fs.String(); got != tt.want {
			t.Errorf("Families(%#x).String() = %q, want %q", uint32(tt.fs), got, tt.want)
		}
		if tt.want == "" {
			continue
		}
		if back, err := ParseFamilies(tt.want); err != nil || back != tt.fs&AllFamilies {
			t.Errorf("ParseFamilies(%q) = %#x, %v; want %#x", tt.want, back, err, tt.fs&AllFamilies)
		}
	}
}

func TestParseBackend(t *testing.T) {
	for _, in := range []string{"auto", "fentry", "kprobe", "tracepoint"} {
		got, err := ParseBackend(in)
		if err != nil || got != Backend(in) {
			t.Errorf("ParseBackend(%q) = %q, %v; want %q, nil", in, got, err, in)
		}
	}
	for _, in := range []string{"", "ebpf", "Auto", " kprobe", "fexit"} {
		got, err := ParseBackend(in)
		if err == nil {
			t.Errorf("ParseBackend(%q) = %q, want an error", in, got)
			continue
		}
		if got != "" {
			t.Errorf("ParseBackend(%q) returned %q with its error, want \"\"", in, got)
		}
		if want := `"` + in + `"`; !strings.Contains(err.Error(), want) {
			t.Errorf("ParseBackend(%q) error %q does not name %s", in, err, want)
		}
	}
}

func TestValidateRingBufferSize(t *testing.T) {
	tests := []struct {
		size uint32
		ok   bool
	}{
		{0, false},
		{1000, false},
		{2048, false}, // a power of two below the page size
		{4096, true},
		{8192, true},
		{12288, false}, // a multiple of the page size, not a power of two
		{1 << 22, true},
		{1 << 31, true},
		{1<<31 + 4096, false},
	}
	for _, tt := range tests {
		err := ValidateRingBufferSize(tt.size, 4096)
		if (err == nil) != tt.ok {
			t.Errorf("ValidateRingBufferSize(%d, 4096) = %v, want ok=%v", tt.size, err, tt.ok)
		}
		if err != nil && !strings.Contains(err.Error(), "4096") {
			t.Errorf("ValidateRingBufferSize(%d, 4096) error %q does not name the page size", tt.size, err)
		}
	}
	if err := ValidateRingBufferSize(DefaultRingBufferSize, 4096); err != nil {
		t.Errorf("DefaultRingBufferSize is invalid: %v", err)
	}
	if err := ValidateRingBufferSize(32768, 65536); err == nil {
		t.Errorf("ValidateRingBufferSize(32768, 65536) = nil, want an error (below a 64K page)")
	}
}

func TestStateString(t *testing.T) {
	tests := []struct {
		s    State
		want string
	}{
		{StateEstablished, "ESTABLISHED"},
		{StateSynSent, "SYN_SENT"},
		{StateSynRecv, "SYN_RECV"},
		{StateFinWait1, "FIN_WAIT1"},
		{StateFinWait2, "FIN_WAIT2"},
		{StateTimeWait, "TIME_WAIT"},
		{StateClose, "CLOSE"},
		{StateCloseWait, "CLOSE_WAIT"},
		{StateLastAck, "LAST_ACK"},
		{StateListen, "LISTEN"},
		{StateClosing, "CLOSING"},
		{StateNewSynRecv, "NEW_SYN_RECV"},
		{0, "UNKNOWN(0)"},
		{13, "UNKNOWN(13)"},
		{255, "UNKNOWN(255)"},
	}
	for _, tt := range tests {
		if got := tt.s.String(); got != tt.want {
			t.Errorf("State(%d).String() = %q, want %q", uint8(tt.s), got, tt.want)
		}
	}
	// The numbering is the kernel's (include/net/tcp_states.h).
	if StateEstablished != 1 || StateTimeWait != 6 || StateNewSynRecv != 12 {
		t.Errorf("state numbering drifted from the kernel's: ESTABLISHED=%d TIME_WAIT=%d NEW_SYN_RECV=%d",
			StateEstablished, StateTimeWait, StateNewSynRecv)
	}
}

func TestParseState(t *testing.T) {
	for s := StateEstablished; s <= StateNewSynRecv; s++ {
		got, ok := ParseState(s.String())
		if !ok || got != s {
			t.Errorf("ParseState(%q) = %d, %v; want %d, true", s.String(), got, ok, s)
		}
	}
	for _, name := range []string{"", "UNKNOWN(0)", "UNKNOWN(13)", "established", "TCP_ESTABLISHED", "TIME_WAIT "} {
		if got, ok := ParseState(name); ok {
			t.Errorf("ParseState(%q) = %d, true; want false", name, got)
		}
	}
}

func TestNearestHZ(t *testing.T) {
	tests := []struct {
		rate float64
		want uint32
	}{
		{0, 100},
		{98, 100},
		{174, 100},
		{176, 250},
		{240, 250},
		{250, 250},
		{290, 300},
		{649, 300},
		{651, 1000},
		{1020, 1000},
		{5000, 1000},
	}
	for _, tt := range tests {
		if got := nearestHZ(tt.rate); got != tt.want {
			t.Errorf("nearestHZ(%v) = %d, want %d", tt.rate, got, tt.want)
		}
	}
}
