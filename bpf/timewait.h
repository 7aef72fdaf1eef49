/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Timewait sockets: birth (hand-off from the full socket), re-arm and death.
 * The tracepoint backend sees them through the timer tracepoints, filtered on
 * timer->function == tw_timer_handler:
 *   new socket:  timer_start, then (same CPU, same bh section) the full socket's ->CLOSE
 *   re-arm:      timer_cancel immediately followed by timer_start of the same timer
 *   expiry:      timer_cancel immediately followed by timer_expire_entry of the same timer
 *   early kill:  timer_cancel alone; the socket may be freed right after, so the
 *                exit record is built at cancel time and held per CPU until resolved. */
#ifndef TWTRACE_TIMEWAIT_H
#define TWTRACE_TIMEWAIT_H

/* How long a due cancel waits for its callback when it can only be settled from an
 * interrupt (settle_pending run remotely): an expiry's cancel and callback are
 * microseconds apart unless the CPU is taken away between them. */
#define PENDING_MAX_AGE_NS (1000 * 1000 * 1000ULL)
#define HANDOFF_MAX_AGE_NS (10 * 1000 * 1000ULL)

static __always_inline struct inet_timewait_sock *tw_of(struct timer_list *t)
{
	return (void *)t - bpf_core_field_offset(struct inet_timewait_sock, tw_timer);
}

static __always_inline __u32 netns_refs(struct net *net)
{
	if (bpf_core_field_exists(net->ns.__ns_ref))
		return BPF_CORE_READ(net, ns.__ns_ref.refs.counter);
	if (bpf_core_field_exists(((struct ns_common___count *)0)->count))
		return BPF_CORE_READ((struct ns_common___count *)&net->ns, count.refs.counter);
	return BPF_CORE_READ((struct net___count *)net, count.refs.counter);
}

/* tw_taken_over says whether a connect() took the timewait socket's tuple over
 * (tcp_tw_reuse, or a port bound by hand): __inet_check_established unhashes it before
 * descheduling it, while every other end (expiry, SYN, RST, namespace exit) finds it
 * still hashed and unhashes it in inet_twsk_kill. Read at the timer's cancel or at
 * inet_twsk_kill's entry, it costs the connections that reuse nothing nothing. */
static __always_inline bool tw_taken_over(struct inet_timewait_sock *tw)
{
	return !BPF_CORE_READ(tw, __tw_common.skc_nulls_node.pprev);
}

/* set_tw_info stamps what a timewait socket carried over from its full socket. */
static __always_inline void set_tw_info(struct event *e, const struct tw_info *ti)
{
	set_owner(e, &ti->owner);
	e->cgroup = ti->cgroup;
	if (ti->cgroup_in)
		e->flags |= F_CGROUP_IN;
}

/* tw_exit_record fills what a timewait socket's exit reports, while it is still alive. */
static __always_inline bool tw_exit_record(struct event *e, struct inet_timewait_sock *tw, __u64 now)
{
	__u64 key = (__u64)tw;

	if (!read_tuple(e, &tw->__tw_common))
		return false;
	e->ts_ns = now;
	e->kind = EV_TW_EXIT;
	e->old_state = S_TIME_WAIT;
	e->new_state = S_CLOSE;
	e->substate = BPF_CORE_READ(tw, tw_substate);
	struct tw_info *ti = bpf_map_lookup_elem(&tws, &key);
	if (ti) {
		e->duration_ns = now - ti->birth_ns;
		e->flags |= F_DURATION_KNOWN;
		set_tw_info(e, ti);
	}
	if (tw_taken_over(tw))
		e->detail = DETAIL_REUSE;
	else if (netns_refs(BPF_CORE_READ(tw, __tw_common.skc_net.net)) == 0)
		e->detail = DETAIL_NETNS_EXIT;
	return true;
}

static __always_inline void tw_exit_send(struct event *e, __u64 tw, __u8 cause)
{
	if (!(e->flags & F_DURATION_KNOWN))
		count(STAT_TW_UNKNOWN_BIRTH);
	else
		bpf_map_delete_elem(&tws, &tw);
	e->cause = cause;
	if (cause == CAUSE_EXPIRED)
		e->detail = DETAIL_NONE;
	if ((cfg_events & (FAM_STATE | FAM_TW)) && kept(e))
		deliver_twsk(e);
}

static __always_inline void pending_clear(struct cpu_scratch *c)
{
	c->pending_tw = 0;
}

static __always_inline void pending_flush_killed(struct cpu_scratch *c)
{
	__u64 tw = c->pending_tw;

	if (!tw)
		return;
	c->pending_tw = 0;
	tw_exit_send(&c->pending_ev, tw, CAUSE_KILLED);
}

/* Any other event on this CPU proves a held timer_cancel was neither a re-arm (cancel and
 * start run with interrupts off) nor an expiry (cancel and callback run in one timer softirq,
 * interruptible only by hardirqs): every caller runs in a softirq or a task, never in a
 * hardirq. tw is the timewait socket the caller is about to report, 0 for none. */
static __always_inline void pending_settle(struct cpu_scratch *c, __u64 tw)
{
	if (c->pending_tw && c->pending_tw != tw)
		pending_flush_killed(c);
}

static __always_inline void tw_armed(struct cpu_scratch *c, struct inet_timewait_sock *tw,
				     unsigned long expires, __u64 now)
{
	__u64 key = (__u64)tw;
	__u32 timeout = expires - bpf_jiffies64();

	if (c->pending_tw == key) {
		pending_clear(c);
		struct event *e = &c->pending_ev;
		e->kind = EV_TW_REARM;
		e->old_state = S_TIME_WAIT;
		e->new_state = S_TIME_WAIT;
		e->detail = DETAIL_NONE;
		e->substate = BPF_CORE_READ(tw, tw_substate);
		e->value = timeout;
		e->flags |= F_VALUE_KNOWN;
		if ((cfg_events & FAM_TW) && (e->flags & F_DURATION_KNOWN))
			emit(e);
		return;
	}
	c->armed_tw = key;
	c->armed_ts = now;
	c->armed_timeout = timeout;
	c->armed_substate = BPF_CORE_READ(tw, tw_substate);
	c->armed_sport = BPF_CORE_READ(tw, __tw_common.skc_num);
	c->armed_dport = bpf_ntohs(BPF_CORE_READ(tw, __tw_common.skc_dport));
	c->armed_netns = BPF_CORE_READ(tw, __tw_common.skc_net.net, ns.inum);
}

static __always_inline void tw_cancelled(struct cpu_scratch *c, struct inet_timewait_sock *tw,
					 struct timer_list *timer, __u64 now)
{
	struct event *e = &c->pending_ev;

	__builtin_memset(e, 0, sizeof(*e));
	if (!tw_exit_record(e, tw, now))
		return;
	c->pending_tw = (__u64)tw;
	c->pending_ts = now;
	c->pending_due = (long)(bpf_jiffies64() - BPF_CORE_READ(timer, expires)) >= 0;
}

static __always_inline void tw_expiring(struct cpu_scratch *c, struct inet_timewait_sock *tw, __u64 now)
{
	__u64 key = (__u64)tw;

	if (c->pending_tw == key) {
		pending_clear(c);
		tw_exit_send(&c->pending_ev, key, CAUSE_EXPIRED);
		return;
	}
	struct event e = {};
	if (tw_exit_record(&e, tw, now))
		tw_exit_send(&e, key, CAUSE_EXPIRED);
}

/* One body for the three timer tracepoints. */
enum timer_op { TIMER_START, TIMER_CANCEL, TIMER_EXPIRE };

static __always_inline int on_timer(struct timer_list *timer, enum timer_op op)
{
	/* nearly every timer is some other subsystem's: the filter alone, before any map
	 * work, and nothing settled, since these may run in a hardirq */
	if (cfg_empty || (__u64)timer->function != cfg_tw_timer_handler)
		return 0;
	struct cpu_scratch *c = this_cpu();
	struct inet_timewait_sock *tw = tw_of(timer);
	__u64 now;

	if (!c)
		return 0;
	pending_settle(c, (__u64)tw);
	now = bpf_ktime_get_ns();
	switch (op) {
	case TIMER_START:
		/* the tracepoint's own expiry argument changed meaning in 6.8 */
		tw_armed(c, tw, BPF_CORE_READ(timer, expires), now);
		break;
	case TIMER_CANCEL:
		tw_cancelled(c, tw, timer, now);
		break;
	case TIMER_EXPIRE:
		tw_expiring(c, tw, now);
		break;
	}
	return 0;
}

/* tw_handoff turns a full socket's ->CLOSE into its hand-off to the timewait socket
 * armed just before on this CPU, if there is one with the same tuple. */
static __always_inline bool tw_handoff(struct cpu_scratch *c, struct event *e, const struct owner *o)
{
	if (!c->armed_tw || e->ts_ns - c->armed_ts > HANDOFF_MAX_AGE_NS ||
	    c->armed_sport != e->sport || c->armed_dport != e->dport || c->armed_netns != e->netns)
		return false;

	__u64 tw = c->armed_tw;
	c->armed_tw = 0;
	e->kind = EV_TW_ENTER;
	e->new_state = S_TIME_WAIT;
	e->substate = c->armed_substate;
	e->value = c->armed_timeout;
	/* inet_twsk_alloc ran before the timer was armed: take the timeout the first arming was
	 * given, or the armed expiry against the jiffies of the allocation, a moment before */
	if (cfg_tw_probes)
		e->value = c->armed_first_known ? c->armed_first_timeout
						: BPF_CORE_READ((struct inet_timewait_sock *)tw, tw_timer.expires) - c->armed_jiffies;
	e->flags |= F_VALUE_KNOWN;
	if (!(cfg_events & (FAM_STATE | FAM_TW)) || !kept(e))
		return true;
	struct tw_info ti = { .birth_ns = c->armed_ts, .cgroup = e->cgroup, .owner = *o,
			      .cgroup_in = !!(e->flags & F_CGROUP_IN) };
	bpf_map_update_elem(&tws, &tw, &ti, BPF_ANY);
	deliver_twsk(e);
	return true;
}

/* Function-probe backends (fentry/fexit or kprobe/kretprobe) see the allocation,
 * the scheduling and the death of a timewait socket directly. */

/* on_twsk_alloc: inet_twsk_alloc(sk, dr, state) returned tw; NULL is exactly the
 * kernel's TCPTimeWaitOverflow. The hand-off is completed at the full socket's ->CLOSE. */
static __always_inline void on_twsk_alloc(struct sock *sk, int state, struct inet_timewait_sock *tw)
{
	struct cpu_scratch *c = this_cpu();

	if (!c)
		return;
	if (!tw) {
		c->overflow_sk = (__u64)sk;
		c->overflow_substate = state;
		return;
	}
	c->armed_tw = (__u64)tw;
	c->armed_ts = bpf_ktime_get_ns();
	c->armed_jiffies = bpf_jiffies64();
	c->armed_first_known = 0;
	c->armed_substate = state;
	c->armed_sport = BPF_CORE_READ(tw, __tw_common.skc_num);
	c->armed_dport = bpf_ntohs(BPF_CORE_READ(tw, __tw_common.skc_dport));
	c->armed_netns = BPF_CORE_READ(tw, __tw_common.skc_net.net, ns.inum);
}

/* on_twsk_schedule: __inet_twsk_schedule(tw, timeo, rearm); the first arming is the birth,
 * already reported, a rearm is reported here, in jiffies. */
static __always_inline void on_twsk_schedule(struct inet_timewait_sock *tw, int timeo, bool rearm)
{
	__u64 key = (__u64)tw;
	struct tw_info *ti;
	struct event e = {};

	if (!rearm) {
		/* 6.12+ may inline this first arming into inet_twsk_hashdance_schedule: then unseen */
		struct cpu_scratch *c = this_cpu();
		if (c && c->armed_tw == key) {
			c->armed_first_timeout = timeo;
			c->armed_first_known = 1;
		}
		return;
	}
	if (!(cfg_events & FAM_TW))
		return;
	ti = bpf_map_lookup_elem(&tws, &key);
	if (!ti || !read_tuple(&e, &tw->__tw_common))
		return;
	e.ts_ns = bpf_ktime_get_ns();
	e.kind = EV_TW_REARM;
	e.old_state = S_TIME_WAIT;
	e.new_state = S_TIME_WAIT;
	e.substate = BPF_CORE_READ(tw, tw_substate);
	e.value = timeo;
	e.duration_ns = e.ts_ns - ti->birth_ns;
	e.flags |= F_VALUE_KNOWN | F_DURATION_KNOWN;
	set_tw_info(&e, ti);
	emit(&e);
}

static __always_inline void on_tw_timer_handler(struct timer_list *t)
{
	struct cpu_scratch *c = this_cpu();

	if (c)
		c->expiring_tw = (__u64)tw_of(t);
}

#define CAUSE_WINDOW_NS (10 * 1000 * 1000ULL)

/* on_tw_segment: tcp_timewait_state_process(tw, skb, th). A reset kills the socket inside
 * it; an acceptable SYN or an answer with a reset kills it right after it returns. */
static __always_inline void on_tw_segment(struct inet_timewait_sock *tw, const struct tcphdr *th)
{
	struct cpu_scratch *c = this_cpu();
	__u8 syn = BPF_CORE_READ_BITFIELD_PROBED(th, syn);

	if (!c)
		return;
	c->segment_tw = (__u64)tw;
	c->segment_ts = bpf_ktime_get_ns();
	c->segment_detail = syn && !BPF_CORE_READ_BITFIELD_PROBED(th, rst) ? DETAIL_SYN : DETAIL_RST;
}

static __always_inline __u8 kill_detail(struct cpu_scratch *c, struct inet_timewait_sock *tw, __u64 now)
{
	if (c->segment_tw == (__u64)tw && now - c->segment_ts < CAUSE_WINDOW_NS) {
		c->segment_tw = 0;
		return c->segment_detail;
	}
	return DETAIL_NONE;
}

/* on_twsk_kill: inet_twsk_kill(tw) unhashes the socket; it expired if its timer handler
 * called us, else something killed it early. */
static __always_inline void on_twsk_kill(struct inet_timewait_sock *tw)
{
	struct cpu_scratch *c = this_cpu();
	struct event e = {};
	__u8 cause = CAUSE_KILLED;

	if (!c)
		return;
	if (c->expiring_tw == (__u64)tw) {
		c->expiring_tw = 0;
		cause = CAUSE_EXPIRED;
	}
	if (!tw_exit_record(&e, tw, bpf_ktime_get_ns()))
		return;
	if (cause == CAUSE_KILLED && e.detail == DETAIL_NONE)
		e.detail = kill_detail(c, tw, e.ts_ns);
	tw_exit_send(&e, (__u64)tw, cause);
}

#endif
