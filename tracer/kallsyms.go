package tracer

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// errKallsymsHidden: the kernel shows this process zeros instead of addresses.
var errKallsymsHidden = errors.New("/proc/kallsyms hides kernel addresses from twtrace, which needs tw_timer_handler's: " +
	"run as root or with CAP_SYSLOG, and with kernel.kptr_restrict below 2 (sysctl -w kernel.kptr_restrict=1)")

// kernelSymbol returns the address of a text symbol from /proc/kallsyms.
func kernelSymbol(name string) (uint64, error) {
	var addr uint64
	found, err := scanTextSymbols(func(sym string, a uint64) bool {
		addr = a
		return sym != name
	})
	switch {
	case err != nil:
		return 0, err
	case !found:
		return 0, fmt.Errorf("kernel symbol %s not found in /proc/kallsyms", name)
	case addr == 0:
		return 0, errKallsymsHidden
	}
	return addr, nil
}

// kallsymsHidden reports whether /proc/kallsyms shows this process zeros for text
// symbols: kernel.kptr_restrict (or perf_event_paranoid above 1) without CAP_SYSLOG.
func kallsymsHidden() bool {
	var addr uint64
	found, _ := scanTextSymbols(func(_ string, a uint64) bool {
		addr = a
		return false
	})
	return found && addr == 0
}

// scanTextSymbols calls more with each text symbol until it returns false, and reports
// whether it did.
func scanTextSymbols(more func(name string, addr uint64) bool) (bool, error) {
	f, err := os.Open("/proc/kallsyms")
	if err != nil {
		return false, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 3 || (fields[1] != "t" && fields[1] != "T") {
			continue
		}
		addr, err := strconv.ParseUint(fields[0], 16, 64)
		if err != nil {
			return false, fmt.Errorf("kallsyms %s: %w", fields[2], err)
		}
		if !more(fields[2], addr) {
			return true, nil
		}
	}
	return false, sc.Err()
}
