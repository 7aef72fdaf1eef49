/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Timewait sockets: birth (hand-off from the full socket), re-arm and death.
 * The tracepoint backend sees them through the timer tracepoints, filtered on
 * timer->function == tw_timer_handler:
 *   new socket:  timer_start, then (same CPU) the full socket's ->CLOSE
 *   re-arm:      timer_cancel immediately followed by timer_start of the same timer, for
 *                the same tuple (a killed socket's memory is reused at once by the slab)
 *   expiry:      timer_cancel immediately followed by timer_expire_entry of the same timer
 *   early kill:  timer_cancel alone; the socket may be freed right after, so the
 *                exit record is built at cancel time and held per CPU until resolved.
 * The birth and owner a socket's exit reports are taken from the tws map while the socket
 * is alive: keyed by address, a later delete could hit the next socket at that address. */
#ifndef TWTRACE_TIMEWAIT_H
#define TWTRACE_TIMEWAIT_H

/* How long a due cancel waits for its callback when it can only be settled from an
 * interrupt (settle_pending run remotely): an expiry's cancel and callback are
 * microseconds apart unless the CPU is taken away between them. */
#define PENDING_MAX_AGE_NS (1000 * 1000 * 1000ULL)
/* A close follows its timewait socket's birth within microseconds, unless the CPU is taken
 * away in between (a preempted task, an emulated CPU: 12 ms was seen under QEMU). */
#define HANDOFF_MAX_AGE_NS (1000 * 1000 * 1000ULL)

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

/* tw_exit_record fills what a timewait socket's exit reports, while it is still alive,
 * and takes its birth and owner out of the tws map (into *taken, birth_ns 0 if unknown). */
static __always_inline bool tw_exit_record(struct event *e, struct inet_timewait_sock *tw, __u64 now,
					   struct tw_info *taken)
{
	__u64 key = (__u64)tw;

	taken->birth_ns = 0;
	if (!read_tuple(e, &tw->__tw_common))
		return false;
	e->ts_ns = now;
	e->kind = EV_TW_EXIT;
	e->old_state = S_TIME_WAIT;
	e->new_state = S_CLOSE;
	e->substate = BPF_CORE_READ(tw, tw_substate);
	if (tw_take(key, taken)) {
		e->duration_ns = now - taken->birth_ns;
		e->flags |= F_DURATION_KNOWN;
		set_tw_info(e, taken);
	}
	if (tw_taken_over(tw))
		e->detail = DETAIL_REUSE;
	else if (netns_refs(BPF_CORE_READ(tw, __tw_common.skc_net.net)) == 0)
		e->detail = DETAIL_NETNS_EXIT;
	return true;
}

static __always_inline void tw_exit_send(struct event *e, __u8 cause)
{
	e->cause = cause;
	if (cause == CAUSE_EXPIRED)
		e->detail = DETAIL_NONE;
	/* an unknown lifetime counts only where the user's filters keep the death */
	if (!(cfg_events & (FAM_STATE | FAM_TW)) || !kept(e))
		return;
	if (!(e->flags & F_DURATION_KNOWN))
		count(STAT_TW_UNKNOWN_BIRTH);
	deliver_twsk(e);
}

/* pending_take claims the held cancel (of tw, or of any socket when tw is 0) into *e.
 * Programs running with interrupts enabled may be interrupted here by a timer program
 * on this CPU: the record is copied while the cancel is still held, and claimed only if
 * the interrupting program did not settle it meanwhile. */
static __always_inline bool pending_take(struct cpu_scratch *c, __u64 tw, struct event *e)
{
	__u64 held = c->pending_tw;

	if (!held || (tw && held != tw))
		return false;
	*e = c->pending_ev;
	if (c->pending_tw != held)
		return false;
	c->pending_tw = 0;
	return true;
}

static __always_inline void pending_flush_killed(struct cpu_scratch *c)
{
	struct event e;

	if (pending_take(c, 0, &e))
		tw_exit_send(&e, CAUSE_KILLED);
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

/* same_socket reports whether tw is the socket the held record describes. */
static __always_inline bool same_socket(const struct event *held, struct inet_timewait_sock *tw)
{
	struct event now = {};

	if (!read_tuple(&now, &tw->__tw_common))
		return false;
	return now.family == held->family && now.sport == held->sport && now.dport == held->dport &&
	       now.netns == held->netns && !__builtin_memcmp(now.saddr, held->saddr, sizeof(now.saddr)) &&
	       !__builtin_memcmp(now.daddr, held->daddr, sizeof(now.daddr));
}

/* birth_note keeps a newly armed timewait socket until its full socket's ->CLOSE claims
 * it: in a free slot, else in the oldest. A claim copies a slot before freeing it, so a
 * program interrupting the claim never writes into the slot being claimed. */
static __always_inline struct birth *birth_note(struct cpu_scratch *c, __u64 tw, __u64 now)
{
	struct birth *slot = &c->births[0];

	for (int i = 0; i < HANDOFF_SLOTS; i++) {
		struct birth *b = &c->births[i];
		if (!b->tw || now - b->ts > HANDOFF_MAX_AGE_NS) {
			slot = b;
			break;
		}
		if (b->ts < slot->ts)
			slot = b;
	}
	__builtin_memset(slot, 0, sizeof(*slot));
	slot->ts = now;
	slot->tw = tw;
	return slot;
}

/* birth_fill describes the socket in its slot: its tuple, namespace and substate. */
static __always_inline void birth_fill(struct birth *b, struct inet_timewait_sock *tw, __u8 substate)
{
	b->substate = substate;
	b->sport = BPF_CORE_READ(tw, __tw_common.skc_num);
	b->dport = bpf_ntohs(BPF_CORE_READ(tw, __tw_common.skc_dport));
	b->netns = BPF_CORE_READ(tw, __tw_common.skc_net.net, ns.inum);
}

static __always_inline struct birth *birth_find(struct cpu_scratch *c, __u64 tw)
{
	for (int i = 0; i < HANDOFF_SLOTS; i++)
		if (c->births[i].tw == tw)
			return &c->births[i];
	return NULL;
}

/* birth_claim takes the birth armed here for the full socket closing now (e: its tuple
 * and time), if there is one: the newest, should an older one for that tuple have stayed
 * unclaimed (its close skipped by the kernel). */
static __always_inline bool birth_claim(struct cpu_scratch *c, const struct event *e, struct birth *out)
{
	struct birth *found = NULL;

	for (int i = 0; i < HANDOFF_SLOTS; i++) {
		struct birth *b = &c->births[i];
		if (!b->tw || e->ts_ns - b->ts > HANDOFF_MAX_AGE_NS || b->sport != e->sport ||
		    b->dport != e->dport || b->netns != e->netns)
			continue;
		if (!found || b->ts > found->ts)
			found = b;
	}
	if (!found)
		return false;
	*out = *found;
	found->tw = 0;
	return out->tw != 0;
}

/* tw_wanted reports whether the user's namespace and family filters keep tw. */
static __always_inline bool tw_wanted(struct inet_timewait_sock *tw)
{
	struct event e = {};
	__u16 family = BPF_CORE_READ(tw, __tw_common.skc_family);

	e.family = family == AF_INET6 ? 6 : 4;
	e.netns = BPF_CORE_READ(tw, __tw_common.skc_net.net, ns.inum);
	return socket_wanted(&e);
}

/* sock_wanted_probed is tw_wanted for a full socket read with probe reads (kprobes). */
static __always_inline bool sock_wanted_probed(struct sock *sk)
{
	struct event e = {};

	e.family = BPF_CORE_READ(sk, __sk_common.skc_family) == AF_INET6 ? 6 : 4;
	e.netns = BPF_CORE_READ(sk, __sk_common.skc_net.net, ns.inum);
	return socket_wanted(&e);
}

static __always_inline void tw_armed(struct cpu_scratch *c, struct inet_timewait_sock *tw,
				     unsigned long expires, __u64 now)
{
	__u64 key = (__u64)tw;
	__u32 timeout = expires - bpf_jiffies64();

	if (c->pending_tw == key) {
		if (!same_socket(&c->pending_ev, tw)) {
			/* the held cancel killed a socket whose memory a new one took */
			pending_flush_killed(c);
		} else {
			c->pending_tw = 0;
			struct event *e = &c->pending_ev;
			if (e->flags & F_DURATION_KNOWN)
				tw_put(key, &c->pending_ti);
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
	}
	/* sockets the filters leave out never take a slot another's hand-off needs */
	if (!tw_wanted(tw))
		return;
	struct birth *b = birth_note(c, key, now);
	b->timeout = timeout;
	birth_fill(b, tw, BPF_CORE_READ(tw, tw_substate));
}

static __always_inline void tw_cancelled(struct cpu_scratch *c, struct inet_timewait_sock *tw,
					 struct timer_list *timer, __u64 now)
{
	struct event *e = &c->pending_ev;

	c->pending_tw = 0;
	__builtin_memset(e, 0, sizeof(*e));
	if (!tw_exit_record(e, tw, now, &c->pending_ti))
		return;
	c->pending_ts = now;
	c->pending_due = (long)(bpf_jiffies64() - BPF_CORE_READ(timer, expires)) >= 0;
	c->pending_tw = (__u64)tw;
}

static __always_inline void tw_expiring(struct cpu_scratch *c, struct inet_timewait_sock *tw, __u64 now)
{
	struct event e = {};
	struct tw_info taken;

	if (pending_take(c, (__u64)tw, &e) || tw_exit_record(&e, tw, now, &taken))
		tw_exit_send(&e, CAUSE_EXPIRED);
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
 * armed before on this CPU with the same tuple, if there is one. */
static __always_inline bool tw_handoff(struct cpu_scratch *c, struct event *e, const struct owner *o)
{
	struct birth b;

	if (!birth_claim(c, e, &b))
		return false;
	e->kind = EV_TW_ENTER;
	e->new_state = S_TIME_WAIT;
	/* born when armed, as its lifetime counts: the close comes microseconds later, or
	 * more on a busy CPU, and a reader bounding a lifetime by this time would be short;
	 * the old state ended then too */
	if (e->flags & F_DURATION_KNOWN)
		e->duration_ns = e->duration_ns > e->ts_ns - b.ts ? e->duration_ns - (e->ts_ns - b.ts) : 0;
	e->ts_ns = b.ts;
	e->substate = b.substate;
	e->value = b.timeout;
	/* inet_twsk_alloc ran before the timer was armed: take the timeout the first arming was
	 * given, or the armed expiry against the jiffies of the allocation, a moment before */
	if (cfg_tw_probes) {
		struct inet_timewait_sock *tw = (void *)b.tw; /* not inside BPF_CORE_READ: birth is ours, not the kernel's */
		e->value = b.first_known ? b.first_timeout : BPF_CORE_READ(tw, tw_timer.expires) - b.jiffies;
	}
	e->flags |= F_VALUE_KNOWN;
	if (!(cfg_events & (FAM_STATE | FAM_TW)) || !kept(e))
		return true;
	if (cfg_events & FAM_STATE)
		count_unknown_in_old(e);
	struct tw_info ti = { .birth_ns = b.ts, .cgroup = e->cgroup, .owner = *o,
			      .cgroup_in = !!(e->flags & F_CGROUP_IN) };
	tw_put(b.tw, &ti);
	deliver_twsk(e);
	return true;
}

/* Function-probe backends (fentry/fexit or kprobe/kretprobe) see the allocation,
 * the scheduling and the death of a timewait socket directly. */

/* refusal_claim takes the NULL inet_twsk_alloc() result noted here for sk, if any. */
static __always_inline bool refusal_claim(struct cpu_scratch *c, struct sock *sk, __u8 *substate)
{
	for (int i = 0; i < HANDOFF_SLOTS; i++) {
		struct refused *r = &c->refusals[i];
		if (r->sk != (__u64)sk)
			continue;
		*substate = r->substate;
		r->sk = 0;
		return true;
	}
	return false;
}

/* on_twsk_alloc: inet_twsk_alloc(sk, dr, state) returned tw; NULL is exactly the
 * kernel's TCPTimeWaitOverflow. Both are completed at the full socket's ->CLOSE. */
static __always_inline void on_twsk_alloc(struct sock *sk, int state, struct inet_timewait_sock *tw)
{
	struct cpu_scratch *c = this_cpu();
	__u64 now = bpf_ktime_get_ns();

	if (!c)
		return;
	if (!tw) {
		if (!sock_wanted_probed(sk))
			return;
		/* a free slot, else the first: refusals are claimed within microseconds */
		struct refused *slot = &c->refusals[0];
		for (int i = 0; i < HANDOFF_SLOTS; i++) {
			if (!c->refusals[i].sk) {
				slot = &c->refusals[i];
				break;
			}
		}
		slot->substate = state;
		slot->sk = (__u64)sk;
		return;
	}
	if (!tw_wanted(tw))
		return;
	struct birth *b = birth_note(c, (__u64)tw, now);
	b->jiffies = bpf_jiffies64();
	birth_fill(b, tw, state);
}

/* on_twsk_schedule: __inet_twsk_schedule(tw, timeo, rearm); the first arming is the birth,
 * already reported, a rearm is reported here, in jiffies. */
static __always_inline void on_twsk_schedule(struct inet_timewait_sock *tw, int timeo, bool rearm)
{
	__u64 key = (__u64)tw;
	struct tw_info ti;
	struct event e = {};

	if (!rearm) {
		/* 6.12+ may inline this first arming into inet_twsk_hashdance_schedule: then unseen */
		struct cpu_scratch *c = this_cpu();
		struct birth *b = c ? birth_find(c, key) : NULL;
		if (b) {
			b->first_timeout = timeo;
			b->first_known = 1;
		}
		return;
	}
	if (!(cfg_events & FAM_TW))
		return;
	if (!tw_get(key, &ti) || !read_tuple(&e, &tw->__tw_common))
		return;
	e.ts_ns = bpf_ktime_get_ns();
	e.kind = EV_TW_REARM;
	e.old_state = S_TIME_WAIT;
	e.new_state = S_TIME_WAIT;
	e.substate = BPF_CORE_READ(tw, tw_substate);
	e.value = timeo;
	e.duration_ns = e.ts_ns - ti.birth_ns;
	e.flags |= F_VALUE_KNOWN | F_DURATION_KNOWN;
	set_tw_info(&e, &ti);
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
	struct tw_info taken;
	__u8 cause = CAUSE_KILLED;

	if (!c)
		return;
	if (c->expiring_tw == (__u64)tw) {
		c->expiring_tw = 0;
		cause = CAUSE_EXPIRED;
	}
	if (!tw_exit_record(&e, tw, bpf_ktime_get_ns(), &taken))
		return;
	if (cause == CAUSE_KILLED && e.detail == DETAIL_NONE)
		e.detail = kill_detail(c, tw, e.ts_ns);
	tw_exit_send(&e, cause);
}

#endif
