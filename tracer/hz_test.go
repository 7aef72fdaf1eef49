package tracer

import (
	"strings"
	"testing"
)

func TestParseConfigHZ(t *testing.T) {
	for _, tt := range []struct {
		config string
		want   uint32 // 0: an error
	}{
		{"# CONFIG_HZ_100 is not set\nCONFIG_HZ_250=y\nCONFIG_HZ=250\n", 250},
		{"CONFIG_HZ=1000\n", 1000},
		{"CONFIG_HZ_PERIODIC=y\nCONFIG_HZ=100", 100},
		{"CONFIG_HZ=1024\n", 0},
		{"CONFIG_HZ=\n", 0},
		{"CONFIG_NO_HZ=y\n", 0},
		{"", 0},
	} {
		got, err := parseConfigHZ(strings.NewReader(tt.config))
		if got != tt.want || (err != nil) != (tt.want == 0) {
			t.Errorf("parseConfigHZ(%q) = %d, %v; want %d", tt.config, got, err, tt.want)
		}
	}
}

// The measurement agrees with the running kernel's configuration, where there is one.
func TestMeasuredHZMatchesConfig(t *testing.T) {
	requireRoot(t)
	hz, from, ok := configuredHZ()
	if !ok {
		t.Skip("no kernel configuration readable here (/proc/config.gz, /boot/config-*): nothing to compare with")
	}
	c := startTracer(t, Options{Families: FamilyReset})
	if got := c.tr.HZ(); got.HZ != hz || got.Source != from {
		t.Errorf("tracer HZ %+v, want %d from %s", got, hz, from)
	}
	measured, err := c.tr.measureHZ()
	if err != nil {
		t.Fatal(err)
	}
	if measured != hz {
		t.Errorf("measured HZ %d, %s says %d", measured, from, hz)
	}
}
