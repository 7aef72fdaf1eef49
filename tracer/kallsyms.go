package tracer

import (
	"bufio"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// kernelSymbol returns the address of a text symbol from /proc/kallsyms.
func kernelSymbol(name string) (uint64, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || fields[2] != name || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil {
			return 0, fmt.Errorf("kallsyms %s: %w", name, err)
		}
		if addr == 0 {
			return 0, fmt.Errorf("kallsyms hides addresses (kernel.kptr_restrict): run as root or with CAP_SYSLOG")
		}
		return addr, nil
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("kernel symbol %s not found in /proc/kallsyms", name)
}
