/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Bucket overflow without kprobes: tcp_time_wait() found the namespace's timewait table
 * full, so the full socket goes to CLOSE with no timewait timer armed for it. */
#ifndef TWTRACE_OVERFLOW_H
#define TWTRACE_OVERFLOW_H

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

/* check_overflow reports a close that should have left a timewait socket and did not:
 * from inet_twsk_alloc's NULL result on the function-probe backends, exactly; from
 * the table's fill level on the tracepoint backend. */
static __always_inline void check_overflow(struct sock *sk, struct cpu_scratch *c, const struct event *st, bool reset_sent)
{
	__u32 max;
	bool fin_received;
	__u8 substate;

	if (cfg_tw_probes) {
		if (c->overflow_sk != (__u64)sk)
			return;
		c->overflow_sk = 0;
		tw_table_full(sk, &max);
		substate = c->overflow_substate;
	} else {
		if (!tw_table_full(sk, &max) || closed_abortively(sk, reset_sent))
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
