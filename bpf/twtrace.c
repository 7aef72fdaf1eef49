/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
//go:build ignore

#include "vmlinux.h"
#include "bpf/bpf_helpers.h"
#include "bpf/bpf_core_read.h"
#include "bpf/bpf_tracing.h"
#include "bpf/bpf_endian.h"

#include "event.h"
#include "maps.h"
#include "records.h"
#include "compat.h"
#include "common.h"
#include "cgroup.h"
#include "timewait.h"
#include "overflow.h"
#include "connect.h"
#include "state.h"
#include "reset.h"

char LICENSE[] SEC("license") = "Dual BSD/GPL";

/* Referenced so that BTF, and through bpf2go the Go code, carries these enums. */
const enum event_kind *_kind __attribute__((unused));
const enum event_flag *_flag __attribute__((unused));
const enum tw_cause *_cause __attribute__((unused));
const enum tw_detail *_detail __attribute__((unused));
const enum stat_index *_stat __attribute__((unused));
const enum inferred_reason *_inferred __attribute__((unused));
const enum tcp_state_id *_state __attribute__((unused));
const enum event_family *_family __attribute__((unused));
const struct filter_case *_filter_case __attribute__((unused));
const enum record_layout *_record_layout __attribute__((unused));

SEC("tp_btf/inet_sock_set_state")
int BPF_PROG(tp_set_state, struct sock *sk, int oldstate, int newstate)
{
	return on_set_state(sk, oldstate, newstate);
}

SEC("tp_btf/timer_start")
int BPF_PROG(tp_timer_start, struct timer_list *timer)
{
	return on_timer(timer, TIMER_START);
}

SEC("tp_btf/timer_cancel")
int BPF_PROG(tp_timer_cancel, struct timer_list *timer)
{
	return on_timer(timer, TIMER_CANCEL);
}

SEC("tp_btf/timer_expire_entry")
int BPF_PROG(tp_timer_expire_entry, struct timer_list *timer)
{
	return on_timer(timer, TIMER_EXPIRE);
}

/* timewait hook, fentry backend */

SEC("fexit/inet_twsk_alloc")
int BPF_PROG(fx_twsk_alloc, const struct sock *sk, struct inet_timewait_death_row *dr, int state,
	     struct inet_timewait_sock *tw)
{
	on_twsk_alloc((struct sock *)sk, state, tw);
	return 0;
}

SEC("fentry/__inet_twsk_schedule")
int BPF_PROG(fe_twsk_schedule, struct inet_timewait_sock *tw, int timeo, bool rearm)
{
	on_twsk_schedule(tw, timeo, rearm);
	return 0;
}

SEC("fentry/tw_timer_handler")
int BPF_PROG(fe_tw_timer_handler, struct timer_list *t)
{
	on_tw_timer_handler(t);
	return 0;
}

SEC("fentry/inet_twsk_kill")
int BPF_PROG(fe_twsk_kill, struct inet_timewait_sock *tw)
{
	on_twsk_kill(tw);
	return 0;
}

/* optional: what killed a timewait socket early */

SEC("fentry/tcp_timewait_state_process")
int BPF_PROG(fe_tw_segment, struct inet_timewait_sock *tw, struct sk_buff *skb, const struct tcphdr *th)
{
	on_tw_segment(tw, th);
	return 0;
}

/* timewait hook, kprobe backend */

SEC("kprobe/inet_twsk_alloc")
int BPF_KPROBE(kp_twsk_alloc, struct sock *sk, void *dr, int state)
{
	struct cpu_scratch *c = this_cpu();

	if (c) {
		c->alloc_sk = (__u64)sk;
		c->alloc_state = state;
	}
	return 0;
}

SEC("kretprobe/inet_twsk_alloc")
int BPF_KRETPROBE(krp_twsk_alloc, struct inet_timewait_sock *tw)
{
	struct cpu_scratch *c = this_cpu();

	if (c)
		on_twsk_alloc((struct sock *)c->alloc_sk, c->alloc_state, tw);
	return 0;
}

SEC("kprobe/__inet_twsk_schedule")
int BPF_KPROBE(kp_twsk_schedule, struct inet_timewait_sock *tw, int timeo, bool rearm)
{
	on_twsk_schedule(tw, timeo, rearm);
	return 0;
}

SEC("kprobe/tw_timer_handler")
int BPF_KPROBE(kp_tw_timer_handler, struct timer_list *t)
{
	on_tw_timer_handler(t);
	return 0;
}

SEC("kprobe/inet_twsk_kill")
int BPF_KPROBE(kp_twsk_kill, struct inet_timewait_sock *tw)
{
	on_twsk_kill(tw);
	return 0;
}

SEC("kprobe/tcp_timewait_state_process")
int BPF_KPROBE(kp_tw_segment, struct inet_timewait_sock *tw, struct sk_buff *skb, const struct tcphdr *th)
{
	on_tw_segment(tw, th);
	return 0;
}

SEC("tp_btf/tcp_send_reset")
int tp_send_reset(unsigned long long *ctx)
{
	struct sock *sk = (struct sock *)ctx[0];
	struct sk_buff *skb = (struct sk_buff *)ctx[1];

	/* 6.10 added the reason argument together with enum sk_rst_reason */
	if (bpf_core_enum_value_exists(enum sk_rst_reason, SK_RST_REASON_NOT_SPECIFIED))
		return on_reset(sk, skb, (__u32)ctx[2], true, false);
	return on_reset(sk, skb, 0, false, false);
}

SEC("tp_btf/tcp_receive_reset")
int BPF_PROG(tp_receive_reset, struct sock *sk)
{
	return on_reset(sk, NULL, 0, false, true);
}

/* Run from Go on each CPU (BPF_F_TEST_RUN_ON_CPU): settles a held timer_cancel on an
 * otherwise idle CPU. ctx[0] is 1 when run by a thread pinned to that CPU, in a task, where
 * no timer softirq can be half-way: then whatever is held was a kill. Run from an
 * interrupt (0), it may have come between an expiring timer's cancel and its callback:
 * a due cancel is left to its callback, unless far too old for one. */
SEC("raw_tp/twtrace_settle")
int settle_pending(__u64 *ctx)
{
	struct cpu_scratch *c = this_cpu();

	if (!c || !c->pending_tw)
		return 0;
	if (ctx[0] || !c->pending_due || bpf_ktime_get_ns() - c->pending_ts > PENDING_MAX_AGE_NS)
		pending_flush_killed(c);
	return 0;
}

/* Tests only, never loaded by twtrace: wanted() on the socket described by the context
 * (struct filter_case), under the filter set as load-time constants, so that one table of
 * cases proves it and Go's Filter agree. */
SEC("raw_tp/twtrace_test_filter")
int test_filter(__u64 *ctx)
{
	struct filter_case fc;
	struct event e = {};
	__u64 *words = (__u64 *)&fc;

	for (int i = 0; i < sizeof(fc) / sizeof(__u64); i++)
		words[i] = ctx[i];
	__builtin_memcpy(e.saddr, fc.saddr, sizeof(e.saddr));
	__builtin_memcpy(e.daddr, fc.daddr, sizeof(e.daddr));
	e.netns = fc.netns;
	e.pid = fc.pid;
	e.sport = fc.sport;
	e.dport = fc.dport;
	e.family = fc.family;
	if (fc.owner_known)
		e.flags |= F_OWNER_KNOWN;
	return wanted(&e);
}

/* Read from Go (struct hz_sample): jiffies and the monotonic clock together. */
struct jiffies_sample {
	__u64 jiffies;
	__u64 ns;
} jiffies_now;

/* Run from Go a few times to measure the kernel's HZ where its configuration is not
 * readable: timeouts in jiffies need it. */
SEC("raw_tp/twtrace_jiffies")
int read_jiffies(void *ctx)
{
	jiffies_now.jiffies = bpf_jiffies64();
	jiffies_now.ns = bpf_ktime_get_ns();
	return 0;
}
