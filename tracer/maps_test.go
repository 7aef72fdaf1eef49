package tracer

import (
	"maps"
	"slices"
	"testing"

	"github.com/cilium/ebpf"
)

// Every map has a fixed size, and the per-socket ones cannot be filled for good by sockets
// whose death was missed: the LRU hashes evict their oldest entries, the record tables take
// over records older than any live socket's quiet spell (bpf/records.h).
func TestMapsAreBounded(t *testing.T) {
	for _, build := range []struct {
		name      string
		load      func() (*ebpf.CollectionSpec, error)
		perSocket ebpf.MapType
	}{{"tables", loadTwtrace, ebpf.Array}, {"lru-hash", loadTwtraceLRU, ebpf.LRUHash}} {
		t.Run(build.name, func(t *testing.T) {
			spec, err := build.load()
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
				if perSocket[name] && m.Type != build.perSocket {
					t.Errorf("per-socket map %s is %s, want %s", name, m.Type, build.perSocket)
				}
				delete(perSocket, name)
			}
			for name := range perSocket {
				t.Errorf("per-socket map %s not found", name)
			}
		})
	}
}

// The tracer loads either build by the first one's names: both must have the same
// programs, maps and variables.
func TestBuildsShareNames(t *testing.T) {
	tables, err := loadTwtrace()
	if err != nil {
		t.Fatal(err)
	}
	lru, err := loadTwtraceLRU()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		what string
		a, b []string
	}{
		{"programs", slices.Sorted(maps.Keys(tables.Programs)), slices.Sorted(maps.Keys(lru.Programs))},
		{"maps", slices.Sorted(maps.Keys(tables.Maps)), slices.Sorted(maps.Keys(lru.Maps))},
		{"variables", slices.Sorted(maps.Keys(tables.Variables)), slices.Sorted(maps.Keys(lru.Variables))},
	} {
		if !slices.Equal(c.a, c.b) {
			t.Errorf("%s differ: tables %v, lru-hash %v", c.what, c.a, c.b)
		}
	}
}
