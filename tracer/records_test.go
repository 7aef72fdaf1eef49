package tracer

import (
	"bytes"
	"encoding/binary"
	"testing"

	"github.com/cilium/ebpf/asm"
)

// The probe's compare-and-exchange must reach the kernel as one: an atomic add in its place
// (immediate 0) passes on 5.10, which then refuses the record tables.
func TestAtomicsProbeEncodesCmpXchg(t *testing.T) {
	var buf bytes.Buffer
	if err := atomicsProbe().Marshal(&buf, binary.LittleEndian); err != nil {
		t.Fatal(err)
	}
	for b := buf.Bytes(); len(b) >= asm.InstructionSize; b = b[asm.InstructionSize:] {
		if b[0] == 0xdb { // BPF_STX | BPF_ATOMIC | BPF_DW
			if imm := binary.LittleEndian.Uint32(b[4:8]); imm != 0xf1 {
				t.Errorf("atomic instruction % x has immediate %#x, want 0xf1 (BPF_CMPXCHG)", b[:8], imm)
			}
			return
		}
	}
	t.Errorf("the probe has no 64-bit atomic instruction: % x", buf.Bytes())
}
