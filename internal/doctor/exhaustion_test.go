package doctor

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/twtrace/twtrace/internal/snapshot"
)

// EADDRNOTAVAIL raises ephemeral_ports_exhausted with the counted evidence, and the advice
// follows this kernel's reuse rules for the settings found.
func TestDiagnosePortsExhausted(t *testing.T) {
	remote := snapshot.Destination{SAddr: netip.MustParseAddr("10.0.0.1"), DAddr: netip.MustParseAddr("10.0.0.2"), DPort: 443}
	local := snapshot.Destination{SAddr: netip.MustParseAddr("127.0.0.1"), DAddr: netip.MustParseAddr("127.0.0.1"), DPort: 5000}
	base := map[string]string{"tcp_tw_reuse": "2", "tcp_timestamps": "1", "ip_local_port_range": "40000 40009", "tcp_tw_reuse_delay": "1000"}
	with := func(kv ...string) map[string]string {
		m := map[string]string{}
		for k, v := range base {
			m[k] = v
		}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	cases := []struct {
		name    string
		sysctls map[string]string
		dest    snapshot.Destination
		advice  string
	}{
		{"default reuse, remote", base, remote, "set net.ipv4.tcp_tw_reuse = 1: 2 (the default) reuses loopback connections only, and 10.0.0.2 is not loopback"},
		{"default reuse, loopback", base, local, "tcp_tw_reuse = 2 already reuses loopback connections like this one"},
		{"reuse off", with("tcp_tw_reuse", "0"), remote, "set net.ipv4.tcp_tw_reuse = 1: it lets connect() take over"},
		{"reuse on", with("tcp_tw_reuse", "1"), remote, "tcp_tw_reuse = 1 is already on, yet connect() failed"},
		{"no timestamps", with("tcp_tw_reuse", "1", "tcp_timestamps", "0"), remote, "tcp_timestamps = 0 rules out tcp_tw_reuse"},
	}
	for _, c := range cases {
		m := &Measurement{Window: 3 * time.Second, PortFailures: []PortFailure{{Dest: c.dest, Failed: 7, Reused: 2, Live: 10}},
			PortFailuresBy: []WorkloadFailures{{"shop/cart-7d9f/web", 5}, {"demo.service", 1}, {"unknown", 1}}}
		var got *Finding
		for _, f := range Diagnose("6.18.0", c.sysctls, m) {
			if f.ID == "ephemeral_ports_exhausted" {
				got = &f
			}
		}
		if got == nil || got.Severity != SeverityCritical {
			t.Fatalf("%s: no critical ephemeral_ports_exhausted: %+v", c.name, got)
		}
		for _, want := range []string{"7 connect() calls failed with EADDRNOTAVAIL in 3s", "10 sockets in TIME_WAIT towards it now",
			"reused 2, failed 7", "ip_local_port_range 40000-40009, 10 ports", "tcp_tw_reuse = " + c.sysctls["tcp_tw_reuse"],
			"tcp_timestamps = " + c.sysctls["tcp_timestamps"], "tcp_tw_reuse_delay = 1000 ms", "called by shop/cart-7d9f/web 5, demo.service 1, unknown 1"} {
			if !strings.Contains(got.Evidence, want) {
				t.Errorf("%s: evidence %q lacks %q", c.name, got.Evidence, want)
			}
		}
		for _, want := range []string{c.advice, "IP_BIND_ADDRESS_NO_PORT", "Myths this rules out: tcp_tw_recycle", "tcp_fin_timeout", "SO_REUSEADDR"} {
			if !strings.Contains(got.Advice, want) {
				t.Errorf("%s: advice %q lacks %q", c.name, got.Advice, want)
			}
		}
	}
}

// No failure, or a connect family not traced, raises nothing: an unknown is never a finding.
func TestDiagnosePortsExhaustedNeedsFailures(t *testing.T) {
	sysctls := map[string]string{"tcp_tw_reuse": "2", "tcp_timestamps": "1", "ip_local_port_range": "40000 40009"}
	failure := []PortFailure{{Failed: 1}}
	for _, m := range []*Measurement{nil, {Window: time.Second}, {Window: time.Second, ConnectUntraced: true, PortFailures: failure}} {
		for _, f := range append(Diagnose("6.18.0", sysctls, m), DiagnoseTraced(&Measurement{ConnectUntraced: true, PortFailures: failure})...) {
			if f.ID == "ephemeral_ports_exhausted" {
				t.Errorf("measurement %+v: %+v", m, f)
			}
		}
	}
}
