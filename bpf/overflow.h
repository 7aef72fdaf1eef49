/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bucket overflow: tcp_time_wait() found no room for a timewait socket, so the full socket
 * goes to CLOSE with none.
 *   function probes: inet_twsk_alloc() returned NULL, exactly the kernel's condition;
 *   tracepoints: the kernel bumps TcpExtTCPTimeWaitOverflow on this CPU right before the
 *   socket's ->CLOSE, with bottom halves disabled: the close that finds this CPU's count of
 *   its namespace moved since the last close read it is the overflow. The timewait table's
 *   fill level, read at ->CLOSE, is racy (a timewait socket dying on another CPU in between
 *   frees a slot) and serves only a namespace's first close on a CPU. */
#ifndef TWTRACE_OVERFLOW_H
#define TWTRACE_OVERFLOW_H

/* LINUX_MIB_TCPTIMEWAITOVERFLOW: the counter's index in struct linux_mib, from the kernel's
 * BTF (an anonymous enum, which CO-RE cannot relocate). */
volatile const __u32 cfg_mib_tw_overflow;

enum verdict { VERDICT_NO, VERDICT_YES, VERDICT_UNKNOWN };

/* The socket is the state hook's BTF pointer: these read it with direct loads. */
static __always_inline struct inet_timewait_death_row *death_row(struct net *net)
{
	if (bpf_core_field_size(net->ipv4.tcp_death_row) == sizeof(void *))
		return ((struct netns_ipv4___dr_ptr *)&net->ipv4)->tcp_death_row;
	return &net->ipv4.tcp_death_row;
}

/* tw_table_full mirrors inet_twsk_alloc()'s test and reports the limit. */
static __always_inline bool tw_table_full(struct sock *sk, __u32 *max)
{
	struct inet_timewait_death_row *dr = death_row(sk->__sk_common.skc_net.net);
	int limit = dr->sysctl_max_tw_buckets;

	*max = limit;
	if (bpf_core_field_exists(dr->tw_refcount))
		return (int)dr->tw_refcount.refs.counter - 1 >= limit;
	return ((struct inet_timewait_death_row___v510 *)dr)->tw_count.counter >= limit;
}

/* Other ways a closing socket reaches CLOSE without a timewait socket: a reset received
 * (sk_err) or sent just before, or linger2 < 0. None of them is an overflow. */
static __always_inline bool closed_abortively(struct sock *sk, bool reset_sent)
{
	if (reset_sent)
		return true;
	if (sk->sk_err)
		return true;
	/* linger2 lies past struct sock: a probe read */
	return BPF_CORE_READ((struct tcp_sock *)sk, linger2) < 0;
}

/* address turns a pointer into a number the verifier lets us add to. */
static __always_inline __u64 address(const void *p)
{
	__u64 a = 0;

	bpf_probe_read_kernel(&a, sizeof(a), &p);
	return a;
}

/* this_cpu_offset is where this CPU's copy of per-CPU kernel memory lies from its per-CPU
 * pointer, learnt from our own per-CPU array: its element here minus the per-CPU pointer the
 * kernel keeps for it (bpf_array.pptrs[0]). Typed per-CPU ksyms would say it directly; the
 * loader does not support them. */
static __always_inline bool this_cpu_offset(struct cpu_scratch *c, __u64 *off)
{
	if (!c->pcpu_off_known) {
		__u64 pptr = 0;
		void *p = (void *)(address(&scratch) + bpf_core_field_offset(struct bpf_array, pptrs));

		if (bpf_probe_read_kernel(&pptr, sizeof(pptr), p) || !pptr)
			return false;
		c->pcpu_off = address(c) - pptr;
		c->pcpu_off_known = 1;
	}
	*off = c->pcpu_off;
	return true;
}

/* overflows_counted_here reads the namespace's TcpExtTCPTimeWaitOverflow as this CPU counts it. */
static __always_inline bool overflows_counted_here(struct net *net, struct cpu_scratch *c, __u64 *n)
{
	unsigned long v;
	__u64 off;

	if (!this_cpu_offset(c, &off))
		return false;
	void *p = (void *)(address(net->mib.net_statistics) + off + cfg_mib_tw_overflow * sizeof(v));
	if (bpf_probe_read_kernel(&v, sizeof(v), p))
		return false;
	*n = v;
	return true;
}

/* counted_overflow says whether the kernel counted an overflow for the close running now on
 * this CPU (none when a timewait socket took over), and keeps this CPU's count of the
 * namespace. More than this close's share means closes we did not see: unattributed. */
static __always_inline enum verdict counted_overflow(struct sock *sk, struct cpu_scratch *c, __u32 netns, bool handed_off)
{
	struct net *net = sk->__sk_common.skc_net.net;
	struct overflow_seen *seen;
	__u64 now;

	seen = bpf_map_lookup_elem(&overflow_seen, &netns);
	/* a hand-off only needs the count when there is none to compare the next close with */
	if (handed_off && seen && seen->net == address(net))
		return VERDICT_NO;
	if (!overflows_counted_here(net, c, &now))
		return VERDICT_UNKNOWN;
	if (!seen || seen->net != address(net) || now < seen->count) {
		struct overflow_seen first = { .count = now, .net = address(net) };
		bpf_map_update_elem(&overflow_seen, &netns, &first, BPF_ANY);
		return handed_off ? VERDICT_NO : VERDICT_UNKNOWN;
	}
	__u64 moved = now - seen->count;
	__u64 mine = !handed_off && moved > 0;
	seen->count = now;
	if (moved > mine)
		count_n(STAT_OVERFLOW_UNATTRIBUTED, moved - mine);
	return mine ? VERDICT_YES : VERDICT_NO;
}

/* check_overflow reports a close that should have left a timewait socket and did not. */
static __always_inline void check_overflow(struct sock *sk, struct cpu_scratch *c, const struct event *st, bool reset_sent)
{
	__u32 max;
	bool fin_received;
	__u8 substate;

	if (cfg_tw_probes) {
		if (!refusal_claim(c, sk, &substate))
			return;
		tw_table_full(sk, &max);
	} else {
		bool full = tw_table_full(sk, &max);
		enum verdict v = counted_overflow(sk, c, st->netns, false);

		if (v == VERDICT_UNKNOWN) {
			count(STAT_OVERFLOW_INFERRED);
			v = full && !closed_abortively(sk, reset_sent) ? VERDICT_YES : VERDICT_NO;
		}
		if (v == VERDICT_NO)
			return;
		/* tcp_fin() marks RCV_SHUTDOWN before asking for TIME_WAIT; otherwise it was FIN_WAIT2 */
		fin_received = BPF_CORE_READ_BITFIELD(sk, sk_shutdown) & RCV_SHUTDOWN;
		substate = (st->old_state == S_CLOSING || fin_received) ? S_TIME_WAIT : S_FIN_WAIT2;
	}
	struct event e = *st;
	e.kind = EV_TW_OVERFLOW;
	e.new_state = S_CLOSE;
	e.value = max;
	e.flags |= F_VALUE_KNOWN;
	e.substate = substate;
	emit(&e);
}

#endif
