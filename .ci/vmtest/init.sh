#!/bin/sh
# PID 1 of the test VM. The console (ttyS0, ttyAMA0 on arm64) gets the test output; the results device
# (vmtest.result: ttyS1, or a virtio console on arm64) gets only RESULT lines, so a kernel panic on the
# console can never be mistaken for a result.
# TWTRACE_EMULATED: the timer softirq runs late under TCG; the natural-expiry test allows for it
/bin/busybox --install -s /bin # the applets: the host could not run this architecture's busybox to list them
export PATH=/bin HOME=/tmp TMPDIR=/tmp TWTRACE_BIN=/twtrace TWTRACE_EMULATED=1

mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1 # the initramfs has no /dev/console node of its own
mkdir -p /sys/fs/bpf /sys/kernel/tracing /sys/kernel/debug
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
mount -t debugfs debugfs /sys/kernel/debug
mount -t tmpfs tmpfs /tmp
# a pure cgroup v2 host: sockets' cgroups are named (the tests also check the case without one)
mkdir -p /sys/fs/cgroup
mount -t cgroup2 cgroup2 /sys/fs/cgroup
ip link set lo up
for m in /lib/modules/*.ko; do [ -f "$m" ] && insmod "$m"; done # NN-name.ko: dependencies first

arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^vmtest\.$1=//p"; }
kernel=$(arg kernel)
result=$(arg result)
[ "$(arg long)" = 1 ] || export TWTRACE_SKIP_LONG=1
i=0
while [ ! -c "$result" ] && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done # a module's device appears once probed
[ -c "$result" ] || echo "vmtest: no results device $result"
case $result in /dev/ttyS*) stty -F "$result" raw -echo ;; esac

verdict() { # exit code -> word (contract with the test binaries: 0 passed, 3 backend not available, 4 not implemented by twtrace)
  case $1 in 0) echo passed ;; 3) echo unavailable ;; 4) echo unimplemented ;; *) echo failed ;; esac
}

echo "vmtest: kernel $kernel ($(uname -r)), TWTRACE_SKIP_LONG=${TWTRACE_SKIP_LONG:-unset}"
# the kernel's live state (sock_diag, sysctls, counters) needs no backend: once per kernel, its verdict on every row
echo "=== vmtest: /snapshot.test"
/snapshot.test -test.v
s=$(verdict $?)
backends=$(arg backends | tr , ' ')
run=$(arg run)
for b in ${backends:-fentry kprobe tracepoint}; do
  echo "=== vmtest: /tracer.test -backend=$b"
  /tracer.test -test.v -test.timeout 10m -test.run "${run:-.}" -backend=$b
  t=$(verdict $?)
  echo "=== vmtest: /twtrace-cmd.test -backend=$b"
  /twtrace-cmd.test -test.v -test.run "${run:-.}" -backend=$b
  c=$(verdict $?)
  # Both binaries must agree; one passing while the other says "not available" is a bug.
  r=$t
  [ "$t" = "$c" ] || r=failed
  [ "$s" = passed ] || r=failed
  echo "RESULT $kernel $b $r (tracer.test: $t, twtrace-cmd.test: $c, snapshot.test: $s)"
  echo "RESULT $kernel $b $r" >"$result"
done
sleep 1 # let the UARTs drain before the power goes
poweroff -f
