/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Full-socket transitions from sock:inet_sock_set_state. */
#ifndef TWTRACE_STATE_H
#define TWTRACE_STATE_H

/* Transitions made only by the owner's own system calls (connect, listen, close,
 * shutdown). Everywhere else the tracepoint may run in softirq, where the current
 * task is a bystander. */
static __always_inline bool in_owner_context(struct sock *sk, int old, int new)
{
	if ((old == S_CLOSE && (new == S_SYN_SENT || new == S_LISTEN)) ||
	    (new == S_FIN_WAIT1 && (old == S_ESTABLISHED || old == S_SYN_RECV)) ||
	    (old == S_CLOSE_WAIT && new == S_LAST_ACK))
		return true;
	/* close() with unread data or zero linger: __tcp_close() sets SHUTDOWN_MASK before
	 * the state change; every softirq path to CLOSE (tcp_done) sets it only after. */
	return new == S_CLOSE && (old == S_ESTABLISHED || old == S_CLOSE_WAIT || old == S_SYN_RECV) &&
	       BPF_CORE_READ_BITFIELD(sk, sk_shutdown) == SHUTDOWN_MASK;
}

/* What a transition needs from sk's record. Streaming, every event carries the time in
 * the old state and the owner. Counting (the views and metrics), no transition is sent:
 * only the owner matters, for the timewait socket or reset that may follow, so the record
 * is written where the owner is learnt and read where the socket closes. */
static __always_inline bool needs_record(bool owner_ctx, int new)
{
	return !cfg_count_state || owner_ctx || new == S_CLOSE;
}

/* The transitions where tcp_time_wait() hands a socket to a timewait socket, or overflows. */
static __always_inline bool leaves_for_timewait(int old, int new)
{
	return new == S_CLOSE && (old == S_FIN_WAIT1 || old == S_FIN_WAIT2 || old == S_CLOSING);
}

/* The tracepoint backend reads the namespace's overflow count at each such close. */
static __always_inline bool counts_overflows(void)
{
	return (cfg_events & FAM_OVERFLOW) && !cfg_tw_probes;
}

/* Whether a transition needs the time: streamed, every one (its time in the old state); counted,
 * only the start of a connect() and the closes that may report one (a failed connect's
 * duration, a timewait socket's birth, an overflow). The clock costs tens of nanoseconds. */
static __always_inline bool needs_time(int old, int new)
{
	return !cfg_count_state || (old == S_CLOSE && new == S_SYN_SENT) ||
	       (new == S_CLOSE && (old == S_SYN_SENT || leaves_for_timewait(old, new)));
}

static __always_inline int on_set_state(struct sock *sk, int old, int new)
{
	struct cpu_scratch *c;
	struct sock_info *r;
	struct sock_info cur = {};
	struct owner owner = {};
	struct event e = {};
	__u64 key = (__u64)sk;
	bool owner_ctx, known;

	if (cfg_empty)
		return 0;

	if (BPF_CORE_READ_BITFIELD(sk, sk_protocol) != IPPROTO_TCP)
		return 0;
	c = this_cpu();
	if (!c)
		return 0;
	pending_settle(c, 0);
	/* a reset this socket sent counts for its next transition only */
	bool reset_sent = c->reset_sk == key;
	if (reset_sent)
		c->reset_sk = 0;
	owner_ctx = in_owner_context(sk, old, new);
	/* Counting with no filter, most transitions need nothing of the socket: reading its
	 * tuple, namespace and cgroup would cost more than the count (the namespace's line
	 * is where every socket takes its reference, so it bounces between CPUs). */
	if (cfg_count_state && !filtering() && !needs_record(owner_ctx, new)) {
		if (cfg_events & FAM_STATE)
			count_states(old, new);
		return 0;
	}
	if (!read_sock_tuple_btf(&e, sk, c))
		return 0;
	/* a socket outside the namespace, family or cgroup asked for is never tracked: no
	 * record, no work (ports are not stable before connect, so they are filtered at emission) */
	set_cgroup(&e, sk, true);
	if (!socket_wanted(&e) || (cfg_cgroup_id && !(e.flags & F_CGROUP_IN))) {
		/* the namespace's overflow count includes the families and cgroups left out */
		if (netns_wanted(&e) && leaves_for_timewait(old, new) && counts_overflows())
			counted_overflow(sk, c, e.netns, false);
		count(STAT_FILTERED);
		return 0;
	}

	e.kind = EV_STATE;
	e.old_state = old;
	e.new_state = new;
	if (!needs_record(owner_ctx, new)) {
		emit_state(&e);
		return 0;
	}
	if (needs_time(old, new))
		e.ts_ns = bpf_ktime_get_ns();
	/* a closing socket's record is taken, found once: nothing follows its CLOSE */
	r = NULL;
	if (new == S_CLOSE)
		known = sock_take(key, &cur);
	else
		known = (r = sock_get(key, &cur)) != NULL;
	if (known) {
		if (cur.since_ns && e.ts_ns) {
			e.duration_ns = e.ts_ns - cur.since_ns;
			e.flags |= F_DURATION_KNOWN;
		}
		owner = cur.owner;
	}
	if (owner_ctx)
		current_owner(&owner);
	set_owner(&e, &owner);

	if (new != S_CLOSE) {
		if (r) {
			r->since_ns = e.ts_ns;
			r->owner = owner;
			if (old == S_CLOSE && new == S_SYN_SENT)
				connect_started(sk, r);
		} else {
			struct sock_info n = { .since_ns = e.ts_ns, .owner = owner };
			if (old == S_CLOSE && new == S_SYN_SENT)
				connect_started(sk, &n);
			sock_put(key, &n);
		}
		emit_state(&e);
		return 0;
	}

	if (old == S_SYN_SENT && (cfg_events & FAM_CONNECT))
		check_connect_fail(sk, &e, known ? &cur : NULL);
	c->closed_sk = key;
	c->closed_owner = owner;
	if (leaves_for_timewait(old, new) && tw_handoff(c, &e, &owner)) {
		if (counts_overflows())
			counted_overflow(sk, c, e.netns, true);
	} else {
		if (leaves_for_timewait(old, new) && (cfg_events & FAM_OVERFLOW))
			check_overflow(sk, c, &e, reset_sent);
		emit_state(&e);
	}
	return 0;
}

#endif
