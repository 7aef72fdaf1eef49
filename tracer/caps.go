package tracer

import (
	"fmt"
	"os"
	"strings"

	"golang.org/x/sys/unix"
)

// Capabilities not yet named by every x/sys release.
const (
	capPerfmon = 38
	capBPF     = 39
)

// CheckPrivileges is CheckPrivilegesFor every event family.
func CheckPrivileges() error { return CheckPrivilegesFor(AllFamilies) }

// CheckPrivilegesFor names, before anything is loaded, each capability the families need
// and this process lacks, and how to grant them: CAP_BPF to load the programs, CAP_PERFMON
// to attach them to tracepoints and let them read kernel memory, CAP_SYSLOG to read
// tw_timer_handler's address (every family but reset) where /proc/kallsyms hides addresses.
func CheckPrivilegesFor(families Families) error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	admin := has(unix.CAP_SYS_ADMIN) // still implies CAP_BPF and CAP_PERFMON, split from it in 5.8
	var missing []string
	if !has(capBPF) && !admin {
		missing = append(missing, "CAP_BPF (load eBPF programs)")
	}
	if !has(capPerfmon) && !admin {
		missing = append(missing, "CAP_PERFMON (attach to tracepoints, read kernel memory)")
	}
	if families&^FamilyReset != 0 && kallsymsHidden() {
		if has(unix.CAP_SYSLOG) {
			return errKallsymsHidden
		}
		missing = append(missing, "CAP_SYSLOG (read tw_timer_handler's address in /proc/kallsyms)")
	}
	if len(missing) == 0 {
		return nil
	}
	bin, err := os.Executable()
	if err != nil {
		bin = os.Args[0]
	}
	return fmt.Errorf("missing %s: run as root, or grant the capabilities: setcap cap_bpf,cap_perfmon,cap_syslog+ep %s",
		strings.Join(missing, ", "), bin)
}

// CheckBTF reports whether the kernel exposes BTF, which CO-RE and tp_btf need.
func CheckBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errNoBTF
	}
	return nil
}
