/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Settings, socket reading and emission shared by every hook. */
#ifndef TWTRACE_COMMON_H
#define TWTRACE_COMMON_H

#define AF_INET 2
#define AF_INET6 10
#define IPPROTO_TCP 6
#define RCV_SHUTDOWN 1
#define SHUTDOWN_MASK 3

/* TCP states as the kernel numbers them (stable ABI, include/net/tcp_states.h), named so
 * that bpf2go carries them to Go (tracer.State) */
enum tcp_state_id {
	S_ESTABLISHED = TCP_ESTABLISHED,
	S_SYN_SENT = TCP_SYN_SENT,
	S_SYN_RECV = TCP_SYN_RECV,
	S_FIN_WAIT1 = TCP_FIN_WAIT1,
	S_FIN_WAIT2 = TCP_FIN_WAIT2,
	S_TIME_WAIT = TCP_TIME_WAIT,
	S_CLOSE = TCP_CLOSE,
	S_CLOSE_WAIT = TCP_CLOSE_WAIT,
	S_LAST_ACK = TCP_LAST_ACK,
	S_LISTEN = TCP_LISTEN,
	S_CLOSING = TCP_CLOSING,
	S_NEW_SYN_RECV = TCP_NEW_SYN_RECV,
};

/* event families selected with --events (tracer.Families) */
enum event_family {
	FAM_STATE = 1 << 0,
	FAM_TW = 1 << 1,
	FAM_OVERFLOW = 1 << 2,
	FAM_RESET = 1 << 3,
	FAM_CONNECT = 1 << 4,
};

/* Set from Go before load; the verifier prunes what they switch off. */
volatile const __u32 cfg_events = FAM_STATE | FAM_TW | FAM_OVERFLOW | FAM_RESET | FAM_CONNECT;
volatile const __u16 cfg_port;
volatile const __u16 cfg_sport;
volatile const __u16 cfg_dport;
volatile const __u32 cfg_pid;
volatile const __u32 cfg_netns;
volatile const __u8 cfg_family;      /* 0, 4 or 6 */
volatile const __u8 cfg_addr_family; /* 0 when --addr is unset */
volatile const __u8 cfg_addr_prefix;
volatile const __u8 cfg_addr[16];
/* --cgroup: the subtree's root cgroup id (0: no filter) and its level below the hierarchy's root */
volatile const __u64 cfg_cgroup_id;
volatile const __u32 cfg_cgroup_level;
volatile const __u64 cfg_tw_timer_handler; /* address of tw_timer_handler */
/* the timewait hook runs on function probes (fentry or kprobe) instead of timer tracepoints */
volatile const __u8 cfg_tw_probes;
/* The reader is woken each time another 1 << cfg_wakeup_shift bytes have been written
 * since it last caught up, and polls on a timer besides: a wakeup per record costs the
 * producer an interrupt, which dominated its run time. */
volatile const __u32 cfg_wakeup_shift;
/* benchmarks only: the state, reset and timer-tracepoint bodies return at once, to
 * measure what attaching the tracepoint backend costs by itself */
volatile const __u8 cfg_empty;
/* full-socket state events are counted in the transitions map instead of sent */
volatile const __u8 cfg_count_state;

static __always_inline bool read_tuple(struct event *e, struct sock_common *skc)
{
	__u16 family = BPF_CORE_READ(skc, skc_family);

	if (family == AF_INET) {
		e->family = 4;
		BPF_CORE_READ_INTO((__u32 *)e->saddr, skc, skc_rcv_saddr);
		BPF_CORE_READ_INTO((__u32 *)e->daddr, skc, skc_daddr);
	} else if (family == AF_INET6) {
		e->family = 6;
		BPF_CORE_READ_INTO(&e->saddr, skc, skc_v6_rcv_saddr);
		BPF_CORE_READ_INTO(&e->daddr, skc, skc_v6_daddr);
	} else {
		return false;
	}
	e->sport = BPF_CORE_READ(skc, skc_num);
	e->dport = bpf_ntohs(BPF_CORE_READ(skc, skc_dport));
	e->netns = BPF_CORE_READ(skc, skc_net.net, ns.inum);
	return true;
}

/* A full socket's local port: tcp_set_state(CLOSE) zeroes skc_num before the
 * tracepoint fires, inet_sport survives. */
static __always_inline bool read_sock_tuple(struct event *e, struct sock *sk)
{
	if (!read_tuple(e, &sk->__sk_common))
		return false;
	e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	return true;
}

/* netns_of reads a namespace's inode number, which lies beside the namespace's reference
 * count: every socket's birth and death writes that, so its cache line moves between CPUs
 * and a read of it costs a transfer. The last namespace is remembered per CPU, checked by
 * its address and its random hash_mix (a namespace reusing the memory draws another). */
static __always_inline __u32 netns_of(struct cpu_scratch *c, struct net *net)
{
	__u32 mix = net->hash_mix;

	if (c->net == (__u64)net && c->net_mix == mix)
		return c->net_inum;
	c->net = 0;
	c->net_mix = mix;
	c->net_inum = net->ns.inum;
	c->net = (__u64)net;
	return c->net_inum;
}

/* The same tuple read with direct loads, for a socket the hook got as a BTF pointer
 * (tp_btf, fentry): a load costs a nanosecond where a probe read costs tens, and the
 * state hook runs about nine times per connection. */
static __always_inline bool read_sock_tuple_btf(struct event *e, struct sock *sk, struct cpu_scratch *c)
{
	struct sock_common *skc = &sk->__sk_common;
	__u16 family = skc->skc_family;

	if (family == AF_INET) {
		e->family = 4;
		*(__u32 *)e->saddr = skc->skc_rcv_saddr;
		*(__u32 *)e->daddr = skc->skc_daddr;
	} else if (family == AF_INET6) {
		e->family = 6;
		for (int i = 0; i < 4; i++) {
			((__u32 *)e->saddr)[i] = skc->skc_v6_rcv_saddr.in6_u.u6_addr32[i];
			((__u32 *)e->daddr)[i] = skc->skc_v6_daddr.in6_u.u6_addr32[i];
		}
	} else {
		return false;
	}
	e->dport = bpf_ntohs(skc->skc_dport);
	e->netns = netns_of(c, skc->skc_net.net);
	e->sport = skc->skc_num;
	/* ->CLOSE has zeroed skc_num already; inet_sport survives, past struct sock, where
	 * only a probe read reaches */
	if (!e->sport)
		e->sport = bpf_ntohs(BPF_CORE_READ((struct inet_sock *)sk, inet_sport));
	return true;
}

static __always_inline void set_owner(struct event *e, const struct owner *o)
{
	if (!o->known)
		return;
	e->pid = o->pid;
	__builtin_memcpy(e->comm, o->comm, COMM_LEN);
	e->flags |= F_OWNER_KNOWN;
}

static __always_inline void current_owner(struct owner *o)
{
	o->known = 1;
#ifdef TWTRACE_LRU_RECORDS
	o->pid = bpf_get_current_pid_tgid() >> 32;
	bpf_get_current_comm(o->comm, COMM_LEN);
#else
	/* the task's own fields, with direct loads where the comm helper costs 40 ns: every
	 * kernel with atomics (5.12) has bpf_get_current_task_btf (5.11) */
	struct task_struct *t = bpf_get_current_task_btf();

	o->pid = t->tgid;
	((__u64 *)o->comm)[0] = *(__u64 *)&t->comm[0];
	((__u64 *)o->comm)[1] = *(__u64 *)&t->comm[8];
#endif
}

static __always_inline bool prefix_match(const __u8 *a)
{
	__u32 bits = cfg_addr_prefix;

	for (int i = 0; i < 16; i++) {
		if (bits == 0)
			return true;
		__u8 mask = bits >= 8 ? 0xff : (__u8)(0xff << (8 - bits));
		if ((a[i] ^ cfg_addr[i]) & mask)
			return false;
		bits = bits >= 8 ? bits - 8 : 0;
	}
	return true;
}

static __always_inline bool v4_mapped(const __u8 *a)
{
	return ((const __u64 *)a)[0] == 0 && ((const __u32 *)a)[2] == bpf_htonl(0xffff);
}

static __always_inline bool addr_match(const struct event *e, const __u8 *a)
{
	if (e->family == cfg_addr_family)
		return prefix_match(a);
	/* an IPv4 peer of a dual-stack IPv6 socket */
	if (cfg_addr_family == 4 && e->family == 6 && v4_mapped(a))
		return prefix_match(a + 12);
	return false;
}

/* A socket's namespace and family never change: the state hook drops other sockets
 * before tracking them. */
static __always_inline bool netns_wanted(const struct event *e)
{
	return !cfg_netns || e->netns == cfg_netns;
}

static __always_inline bool socket_wanted(const struct event *e)
{
	return (!cfg_family || e->family == cfg_family) && netns_wanted(e);
}

/* Whether any filter is set: without one, every socket is kept. */
static __always_inline bool filtering(void)
{
	return cfg_port || cfg_sport || cfg_dport || cfg_pid || cfg_netns || cfg_family || cfg_addr_family ||
	       cfg_cgroup_id;
}

static __always_inline bool wanted(const struct event *e)
{
	if (!socket_wanted(e))
		return false;
	if (cfg_port && e->sport != cfg_port && e->dport != cfg_port)
		return false;
	if (cfg_sport && e->sport != cfg_sport)
		return false;
	if (cfg_dport && e->dport != cfg_dport)
		return false;
	if (cfg_pid && (!(e->flags & F_OWNER_KNOWN) || e->pid != cfg_pid))
		return false;
	if (cfg_addr_family && !addr_match(e, e->saddr) && !addr_match(e, e->daddr))
		return false;
	if (cfg_cgroup_id && !(e->flags & F_CGROUP_IN))
		return false;
	return true;
}

static __always_inline void send(struct event *e)
{
	__u64 flags = BPF_RB_NO_WAKEUP;
	__u64 waiting = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA);

	/* the record that crosses a multiple of the batch wakes the reader: one wakeup per
	 * batch, and another per batch for a reader that missed one */
	if ((waiting >> cfg_wakeup_shift) != ((waiting + sizeof(*e)) >> cfg_wakeup_shift))
		flags = BPF_RB_FORCE_WAKEUP;
	if (bpf_ringbuf_output(&events, e, sizeof(*e), flags))
		count(STAT_LOST);
	else
		count(STAT_EMITTED);
}

/* kept says whether the user's filters keep e, and counts it when they do not. */
static __always_inline bool kept(const struct event *e)
{
	if (wanted(e))
		return true;
	count(STAT_FILTERED);
	return false;
}

/* emit sends e if the user's filters keep it, and says whether they did. */
static __always_inline bool emit(struct event *e)
{
	if (!kept(e))
		return false;
	send(e);
	return true;
}

/* count_unknown_in_old counts a transition the user asked for whose socket was first seen
 * mid-life: its time in the old state is unknown. Only streamed transitions carry that time;
 * counting, most transitions skip the socket's record (needs_record). */
static __always_inline void count_unknown_in_old(const struct event *e)
{
	if (cfg_count_state)
		return;
	if (!(e->flags & F_DURATION_KNOWN) && e->old_state != S_CLOSE && e->old_state != S_LISTEN)
		count(STAT_SOCK_UNTRACKED);
}

/* count_states counts the transition old->new in the transitions map. */
static __always_inline void count_states(__u8 old, __u8 new)
{
	__u32 slot = (old & 15) * 16 + (new & 15);
	__u64 *v = bpf_map_lookup_elem(&transitions, &slot);

	if (v)
		(*v)++;
}

/* count_transition counts e's transition in the transitions map. */
static __always_inline void count_transition(const struct event *e)
{
	count_states(e->old_state, e->new_state);
}

/* emit_state sends a full socket's transition, or counts it when only counts are read. */
static __always_inline void emit_state(struct event *e)
{
	if (!(cfg_events & FAM_STATE) || !kept(e))
		return;
	count_unknown_in_old(e);
	if (cfg_count_state)
		count_transition(e);
	else
		send(e);
}

/* deliver_twsk delivers a kept timewait birth or death, which is a state transition too
 * (->TIME_WAIT, TIME_WAIT->CLOSE): counted here when the state family is counted, sent
 * when the tw family is traced or the state family streamed. Every transition is then
 * counted in the kernel, whether or not anything reads the ring buffer. */
static __always_inline void deliver_twsk(struct event *e)
{
	if ((cfg_events & FAM_STATE) && cfg_count_state)
		count_transition(e);
	if ((cfg_events & FAM_TW) || ((cfg_events & FAM_STATE) && !cfg_count_state))
		send(e);
}

#endif
