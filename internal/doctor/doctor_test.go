package doctor

import (
	"github.com/twtrace/twtrace/internal/snapshot"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestDiagnose(t *testing.T) {
	base := map[string]string{"tcp_tw_reuse": "2", "tcp_timestamps": "1", "tcp_max_tw_buckets": "1000",
		"tcp_fin_timeout": "60", "ip_local_port_range": "40000 40099", "tcp_rfc1337": "0"}
	with := func(k, v string) map[string]string {
		m := map[string]string{}
		for a, b := range base {
			m[a] = b
		}
		m[k] = v
		return m
	}
	dest := snapshot.Destination{SAddr: netip.MustParseAddr("10.0.0.1"), DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 443}
	cases := []struct {
		name    string
		sysctls map[string]string
		m       *Measurement
		want    map[string]Severity // every finding, exactly
	}{
		{"settings only", base, nil, map[string]Severity{"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo}},
		{"recycle on", with("tcp_tw_recycle", "1"), nil, map[string]Severity{"tw_recycle_enabled": SeverityWarning, "fin_timeout_not_time_wait": SeverityInfo}},
		{"recycle off", with("tcp_tw_recycle", "0"), nil, map[string]Severity{"fin_timeout_not_time_wait": SeverityInfo}},
		{"reuse without timestamps", with("tcp_timestamps", "0"), nil, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "tw_reuse_without_timestamps": SeverityWarning}},
		{"overflow", base, &Measurement{Window: time.Second, Overflows: 3, CounterDelta: 3, PeakLive: 1000}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "max_tw_buckets_reached": SeverityCritical}},
		{"near the limit", base, &Measurement{Window: time.Second, CounterDelta: 0, PeakLive: 800}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "max_tw_buckets_near": SeverityWarning}},
		{"below 80%", base, &Measurement{Window: time.Second, PeakLive: 799}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo}},
		{"ports 80%", base, &Measurement{Window: time.Second, TopDestination: dest, TopLive: 80}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "ephemeral_ports_pressure": SeverityCritical}},
		{"ports 20%", base, &Measurement{Window: time.Second, TopDestination: dest, TopLive: 20}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "ephemeral_ports_pressure": SeverityWarning}},
		{"rst kills", base, &Measurement{Window: time.Second, KilledByRST: 2}, map[string]Severity{
			"tw_recycle_removed": SeverityInfo, "fin_timeout_not_time_wait": SeverityInfo, "rst_kills_time_wait": SeverityInfo}},
	}
	for _, c := range cases {
		got := Diagnose("6.18.0", c.sysctls, c.m)
		if len(got) != len(c.want) {
			t.Errorf("%s: %d findings, want %d: %+v", c.name, len(got), len(c.want), got)
		}
		for i, f := range got {
			if c.want[f.ID] != f.Severity {
				t.Errorf("%s: finding %s is %s, want %q", c.name, f.ID, f.Severity, c.want[f.ID])
			}
			if i > 0 && severityRank(got[i-1].Severity) > severityRank(f.Severity) {
				t.Errorf("%s: findings not most severe first: %+v", c.name, got)
			}
		}
	}
}

func severityRank(s Severity) int {
	return map[Severity]int{SeverityCritical: 0, SeverityWarning: 1, SeverityInfo: 2}[s]
}

// An overflow family that was not traced is unknown in the evidence, never "0 overflows".
func TestDiagnoseUntracedOverflows(t *testing.T) {
	sysctls := map[string]string{"tcp_max_tw_buckets": "1000", "tcp_tw_reuse": "2", "tcp_timestamps": "1"}
	m := &Measurement{Window: time.Second, CounterDelta: 5, PeakLive: 1000, OverflowsUntraced: true}
	for _, f := range Diagnose("6.18.0", sysctls, m) {
		if f.ID == "max_tw_buckets_reached" {
			if !strings.Contains(f.Evidence, "not traced") || strings.Contains(f.Evidence, "0 overflows") {
				t.Errorf("evidence %q should say overflows were not traced", f.Evidence)
			}
			return
		}
	}
	t.Error("the kernel counter's +5 alone should raise max_tw_buckets_reached")
}
