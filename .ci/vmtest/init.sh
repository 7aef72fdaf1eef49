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

# run_tests binary args...: prints the binary's verdict. A run that failed with named test
# failures (not a panic, not a timeout) runs those tests once more: under TCG a test can
# lose a timing race a real CPU never would. "retried" passes, and the tests are named.
run_tests() {
  bin=$1
  shift
  echo "=== vmtest: $bin $*" >&2
  { "$bin" -test.v "$@"; echo $? >/tmp/rc; } 2>&1 | tee /tmp/out >&2
  v=$(verdict "$(cat /tmp/rc)")
  failed=$(sed -n 's/^--- FAIL: \([A-Za-z0-9_]*\) .*/\1/p' /tmp/out | sort -u | tr '\n' '|' | sed 's/|$//')
  if [ "$v" != failed ] || [ -z "$failed" ] || grep -qE '^panic:' /tmp/out; then
    echo "$v"
    return
  fi
  echo "=== vmtest: $bin: running the failed tests once more: $failed" >&2
  "$bin" -test.v "$@" -test.run "^($failed)\$" >&2
  if [ "$(verdict $?)" = passed ]; then
    echo "FLAKY $kernel $b $bin: $failed" >&2
    echo "FLAKY $kernel $b $bin: $failed" >"$result"
    echo retried
  else
    echo failed
  fi
}

plain() { [ "$1" = retried ] && echo passed || echo "$1"; } # a verdict, retried or not

echo "vmtest: kernel $kernel ($(uname -r)), TWTRACE_SKIP_LONG=${TWTRACE_SKIP_LONG:-unset}"
# the kernel's live state (sock_diag, sysctls, counters) needs no backend: once per kernel, its verdict on every row
b=all
s=$(run_tests /snapshot.test)
backends=$(arg backends | tr , ' ')
run=$(arg run)
for b in ${backends:-fentry kprobe tracepoint}; do
  t=$(run_tests /tracer.test -test.timeout 10m -test.run "${run:-.}" -backend=$b)
  c=$(run_tests /twtrace-cmd.test -test.run "${run:-.}" -backend=$b)
  # Both binaries must agree; one passing while the other says "not available" is a bug.
  # A retried pass agrees with a pass, and the row says it was retried.
  r=$(plain "$t")
  [ "$r" = "$(plain "$c")" ] || r=failed
  [ "$(plain "$s")" = passed ] || r=failed
  case "$r $t $c $s" in "passed "*retried*) r=retried ;; esac
  echo "RESULT $kernel $b $r (tracer.test: $t, twtrace-cmd.test: $c, snapshot.test: $s)"
  echo "RESULT $kernel $b $r" >"$result"
done
sleep 1 # let the UARTs drain before the power goes
poweroff -f
