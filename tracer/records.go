package tracer

import (
	"encoding/binary"
	"fmt"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
)

// Records names where the programs keep what they know of each socket (bpf/records.h).
type Records string

const (
	// RecordTables: set-associative tables claimed with BPF atomics (Linux 5.12+).
	RecordTables Records = "tables"
	// RecordLRUHash: LRU hashes, on kernels without BPF atomics.
	RecordLRUHash Records = "lru-hash"
)

// hideAtomics, in testHideEnv, treats the kernel as one without BPF atomics.
const hideAtomics = "atomics"

// haveAtomics reports whether the kernel verifies and compiles a BPF compare-and-exchange
// (Linux 5.12): the record tables claim records with it, and a kernel without it refuses
// the whole object, however unreachable the instruction.
func haveAtomics() error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Type:         ebpf.SocketFilter,
		Instructions: atomicsProbe(),
		License:      "Dual BSD/GPL",
	})
	if err != nil {
		return fmt.Errorf("no BPF atomics (Linux 5.12+): %w", err)
	}
	prog.Close()
	return nil
}

// atomicsProbe is a compare-and-exchange on the stack.
func atomicsProbe() asm.Instructions {
	cmpxchg := asm.CmpXchg.Mem(asm.RFP, asm.R1, asm.DWord, -8)
	// cilium/ebpf v0.22 encodes the immediate before deriving it from the operation: without
	// this it writes 0, an atomic add, which 5.10 accepts
	cmpxchg.Constant = int64(asm.CmpXchg >> 8)
	return asm.Instructions{
		asm.Mov.Imm(asm.R0, 0),
		asm.StoreMem(asm.RFP, -8, asm.R0, asm.DWord),
		asm.Mov.Imm(asm.R1, 1),
		cmpxchg,
		asm.Mov.Imm(asm.R0, 0),
		asm.Return(),
	}
}

// recordsHere chooses the records this kernel allows, and the object built for them.
func recordsHere(hidden map[string]bool) (Records, func() (*ebpf.CollectionSpec, error)) {
	if hidden[hideAtomics] || haveAtomics() != nil {
		return RecordLRUHash, loadTwtraceLRU
	}
	return RecordTables, loadTwtrace
}

// recordCount counts the records the per-socket map name holds.
func (t *Tracer) recordCount(name string) (int, error) { return CountRecords(t.coll.Maps[name]) }

// CountRecords counts the entries of a hash map, or the records a record table holds (socks,
// tws): its claimed ways (a bucket starts with its ways' keys, the sockets' addresses).
func CountRecords(m *ebpf.Map) (int, error) {
	n := 0
	if m.Type() != ebpf.Array {
		key, next := make([]byte, m.KeySize()), make([]byte, m.KeySize())
		var cur any // nil: the first key
		for n < 2*int(m.MaxEntries()) && m.NextKey(cur, next) == nil {
			n++
			copy(key, next)
			cur = key
		}
		return n, nil
	}
	const ways = int(twtraceRecordLayoutRECORD_WAYS)
	var idx uint32
	var bucket []byte
	it := m.Iterate()
	for it.Next(&idx, &bucket) {
		for w := range ways {
			if binary.NativeEndian.Uint64(bucket[w*8:]) != 0 {
				n++
			}
		}
	}
	return n, it.Err()
}
