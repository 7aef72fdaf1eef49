package snapshot

import (
	"os"
	"path/filepath"
	"testing"
)

func TestReadCounters(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) {
		must(t, "write", os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644))
	}
	write("netstat", "TcpExt: SyncookiesSent TCPTimeWaitOverflow TWRecycled\nTcpExt: 1 16 0\n"+
		"IpExt: InOctets\nIpExt: 99\n")
	write("snmp", "Tcp: RtoAlgorithm MaxConn ActiveOpens\nTcp: 1 -1 20\n")
	c, err := ReadCounters(dir)
	must(t, "read", err)
	want := Counters{"TcpExtSyncookiesSent": 1, "TcpExtTCPTimeWaitOverflow": 16, "TcpExtTWRecycled": 0,
		"IpExtInOctets": 99, "TcpRtoAlgorithm": 1, "TcpActiveOpens": 20}
	if len(c) != len(want) {
		t.Errorf("got %v, want %v (MaxConn -1 is not a counter)", c, want)
	}
	for k, v := range want {
		if got, ok := c[k]; !ok || got != v {
			t.Errorf("%s = %d (%v), want %d", k, got, ok, v)
		}
	}
	if d, ok := c.Delta(Counters{"TcpExtTCPTimeWaitOverflow": 10}, "TcpExtTCPTimeWaitOverflow"); !ok || d != 6 {
		t.Errorf("delta %d %v, want 6", d, ok)
	}
	if d, ok := c.Delta(nil, "TcpActiveOpens"); !ok || d != 20 {
		t.Errorf("delta from a namespace born since: %d %v, want 20", d, ok)
	}
	if _, ok := c.Delta(nil, "NoSuchCounter"); ok {
		t.Error("a counter the kernel lacks has no delta")
	}
	write("snmp", "Tcp: RtoAlgorithm\n")
	if _, err := ReadCounters(dir); err == nil {
		t.Error("names without values must be an error")
	}
}
