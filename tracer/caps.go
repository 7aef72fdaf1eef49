package tracer

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// Capabilities not yet named by every x/sys release.
const (
	capPerfmon = 38
	capBPF     = 39
)

// CheckPrivileges names the missing capability before anything is loaded.
func CheckPrivileges() error {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return fmt.Errorf("read capabilities: %w", err)
	}
	has := func(c uint) bool { return data[c/32].Effective&(1<<(c%32)) != 0 }
	if has(unix.CAP_SYS_ADMIN) {
		return nil
	}
	var missing []string
	if !has(capBPF) {
		missing = append(missing, "CAP_BPF")
	}
	if !has(capPerfmon) {
		missing = append(missing, "CAP_PERFMON")
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("missing %v: run as root (sudo %s ...) or grant them: setcap cap_bpf,cap_perfmon,cap_syslog+ep %s",
		missing, os.Args[0], os.Args[0])
}

// CheckBTF reports whether the kernel exposes BTF, which CO-RE and tp_btf need.
func CheckBTF() error {
	if _, err := os.Stat("/sys/kernel/btf/vmlinux"); err != nil {
		return errNoBTF
	}
	return nil
}
