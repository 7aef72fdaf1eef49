package tracer

import (
	"testing"

	"github.com/cilium/ebpf"
)

// Every map has a fixed size, and the per-socket ones evict their oldest entries when
// full rather than refuse: a socket whose death was missed cannot fill them for good.
func TestMapsAreBounded(t *testing.T) {
	spec, err := loadTwtrace()
	if err != nil {
		t.Fatal(err)
	}
	perSocket := map[string]bool{twtraceMapSocks: true, twtraceMapTws: true}
	for name, m := range spec.Maps {
		if m.MaxEntries == 0 && m.Type != ebpf.Array {
			t.Errorf("map %s has no size", name)
		}
		if m.Type == ebpf.Hash || m.Type == ebpf.PerCPUHash {
			t.Errorf("map %s is a plain hash: it would refuse entries once full", name)
		}
		if perSocket[name] && m.Type != ebpf.LRUHash {
			t.Errorf("per-socket map %s is %s, want an LRU hash", name, m.Type)
		}
		delete(perSocket, name)
	}
	for name := range perSocket {
		t.Errorf("per-socket map %s not found", name)
	}
}
