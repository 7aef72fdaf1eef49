package main

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// mountTracefs makes the tracepoints' perf event IDs readable, as libbpf-tools need
// to attach; twtrace's tp_btf programs do not.
func mountTracefs() error {
	if _, err := os.Stat("/sys/kernel/tracing/events"); err == nil {
		return nil
	}
	if err := unix.Mount("tracefs", "/sys/kernel/tracing", "tracefs", 0, ""); err != nil {
		return fmt.Errorf("mount tracefs on /sys/kernel/tracing (tcpstates needs it): %w", err)
	}
	return nil
}
