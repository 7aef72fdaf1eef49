package tracer

import (
	"testing"

	"github.com/cilium/ebpf"
)

// Every map has a fixed size, and the per-socket ones cannot fill up for good: the hashes
// evict their oldest entries when full rather than refuse, and socket-local storage goes
// with its socket (the kernel allows it no size).
func TestMapsAreBounded(t *testing.T) {
	spec, err := loadTwtrace()
	if err != nil {
		t.Fatal(err)
	}
	perSocket := map[string]ebpf.MapType{twtraceMapSocks: ebpf.LRUHash, twtraceMapTws: ebpf.LRUHash, twtraceMapSockStore: ebpf.SkStorage}
	for name, m := range spec.Maps {
		want, isPerSocket := perSocket[name]
		if m.MaxEntries == 0 && m.Type != ebpf.Array && m.Type != ebpf.SkStorage {
			t.Errorf("map %s has no size", name)
		}
		if m.Type == ebpf.Hash || m.Type == ebpf.PerCPUHash {
			t.Errorf("map %s is a plain hash: it would refuse entries once full", name)
		}
		if m.Type == ebpf.SkStorage && !isPerSocket {
			t.Errorf("map %s is socket-local storage but not known as per-socket here", name)
		}
		if isPerSocket && m.Type != want {
			t.Errorf("per-socket map %s is %s, want %s", name, m.Type, want)
		}
		delete(perSocket, name)
	}
	for name := range perSocket {
		t.Errorf("per-socket map %s not found", name)
	}
}
