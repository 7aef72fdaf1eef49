package tracer

import (
	"sync"

	"github.com/cilium/ebpf/btf"
)

// mibTWOverflow is LINUX_MIB_TCPTIMEWAITOVERFLOW, the index of TcpExtTCPTimeWaitOverflow in
// the kernel's struct linux_mib, read once from its BTF: the enum listing the counters has
// no name, which CO-RE cannot relocate. 0 (LINUX_MIB_NUM, never this counter) when absent:
// the overflow hook then judges every close from the timewait table's fill level.
var mibTWOverflow = sync.OnceValue(func() uint32 {
	kernel, err := btf.LoadKernelSpec()
	if err != nil {
		return 0
	}
	return enumValue(kernel, "LINUX_MIB_TCPTIMEWAITOVERFLOW")
})

// enumValue finds an enumerator by name among the spec's anonymous enums, 0 when there is none.
func enumValue(spec *btf.Spec, name string) uint32 {
	for typ, err := range spec.All() {
		if err != nil {
			return 0
		}
		e, ok := typ.(*btf.Enum)
		if !ok || e.Name != "" {
			continue
		}
		for _, v := range e.Values {
			if v.Name == name {
				return uint32(v.Value)
			}
		}
	}
	return 0
}
