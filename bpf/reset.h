/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Resets sent (tcp:tcp_send_reset) and received (tcp:tcp_receive_reset). */
#ifndef TWTRACE_RESET_H
#define TWTRACE_RESET_H

/* read_skb_tuple reads the tuple of a packet that matched no socket; local is its destination. */
static __always_inline bool read_skb_tuple(struct event *e, struct sk_buff *skb)
{
	unsigned char *head = BPF_CORE_READ(skb, head);
	__u16 nh = BPF_CORE_READ(skb, network_header);
	__u16 th = BPF_CORE_READ(skb, transport_header);
	struct tcphdr t;
	__u8 version;

	if (bpf_probe_read_kernel(&version, 1, head + nh) || bpf_probe_read_kernel(&t, sizeof(t), head + th))
		return false;
	version >>= 4;
	if (version == 4) {
		struct iphdr ip;
		if (bpf_probe_read_kernel(&ip, sizeof(ip), head + nh))
			return false;
		e->family = 4;
		__builtin_memcpy(e->saddr, &ip.daddr, 4);
		__builtin_memcpy(e->daddr, &ip.saddr, 4);
	} else if (version == 6) {
		struct ipv6hdr ip6;
		if (bpf_probe_read_kernel(&ip6, sizeof(ip6), head + nh))
			return false;
		e->family = 6;
		__builtin_memcpy(e->saddr, &ip6.daddr, 16);
		__builtin_memcpy(e->daddr, &ip6.saddr, 16);
	} else {
		return false;
	}
	e->sport = bpf_ntohs(t.dest);
	e->dport = bpf_ntohs(t.source);
	e->netns = BPF_CORE_READ(skb, dev, nd_net.net, ns.inum);
	e->flags |= F_NO_SOCKET;
	return true;
}

static __always_inline bool linger_zero(struct sock *sk)
{
	unsigned long flags = BPF_CORE_READ(sk, __sk_common.skc_flags);
	int bit = bpf_core_enum_value(enum sock_flags, SOCK_LINGER);

	return (flags & (1UL << bit)) && BPF_CORE_READ(sk, sk_lingertime) == 0;
}

/* infer_reason names a sent reset's cause on kernels whose tracepoint has no reason:
 * close() with unread data, or a zero-linger close / disconnect, both leave the socket in CLOSE. */
static __always_inline __u16 infer_reason(struct sock *sk, const struct event *e)
{
	if (e->old_state != S_CLOSE)
		return INFERRED_NOT_SPECIFIED;
	if (e->value > 0)
		return INFERRED_ABORT_ON_CLOSE;
	if (linger_zero(sk))
		return INFERRED_TCP_STATE;
	return INFERRED_NOT_SPECIFIED;
}

/* carried_info stamps the owner (and for a timewait socket the cgroup) the hooks kept for sk. */
static __always_inline void carried_info(struct cpu_scratch *c, struct sock *sk, struct event *e)
{
	__u64 key = (__u64)sk;

	if (e->old_state == S_TIME_WAIT) {
		struct tw_info ti;
		if (tw_get(key, &ti))
			set_tw_info(e, &ti);
		return;
	}
	struct sock_info si;
	if (sock_get(key, &si))
		set_owner(e, &si.owner);
	else if (c->closed_sk == key)
		set_owner(e, &c->closed_owner);
}

static __always_inline int on_reset(struct sock *sk, struct sk_buff *skb, __u32 reason, bool kernel_reason, bool recv)
{
	if (cfg_empty)
		return 0;
	struct cpu_scratch *c = this_cpu();
	struct event e = {};

	if (!c)
		return 0;
	pending_settle(c, 0);
	e.ts_ns = bpf_ktime_get_ns();
	e.kind = EV_RESET;
	if (recv)
		e.flags |= F_RESET_RECV;
	if (!sk) {
		if (!skb || !read_skb_tuple(&e, skb))
			return 0;
	} else {
		e.old_state = BPF_CORE_READ(sk, __sk_common.skc_state);
		/* since 6.10 sk may also be a timewait or request socket: only sock_common is shared */
		bool full = e.old_state != S_TIME_WAIT && e.old_state != S_NEW_SYN_RECV;
		if (!(full ? read_sock_tuple(&e, sk) : read_tuple(&e, &sk->__sk_common)))
			return 0;
		carried_info(c, sk, &e);
		/* a reset sent on a socket already in CLOSE comes from its owner's close() or disconnect() */
		if (full && !recv && e.old_state == S_CLOSE && !(e.flags & F_OWNER_KNOWN)) {
			struct owner o;
			current_owner(&o);
			set_owner(&e, &o);
		}
		if (full) {
			struct tcp_sock *tp = (struct tcp_sock *)sk;
			set_cgroup(&e, sk, false);
			e.value = BPF_CORE_READ(tp, rcv_nxt) - BPF_CORE_READ(tp, copied_seq);
			e.flags |= F_VALUE_KNOWN;
			if (!recv)
				c->reset_sk = (__u64)sk;
		}
	}
	if (!recv && kernel_reason) {
		e.reason = reason;
		e.flags |= F_REASON_KERNEL;
	} else if (!recv) {
		e.reason = sk && (e.flags & F_VALUE_KNOWN) ? infer_reason(sk, &e) : INFERRED_NOT_SPECIFIED;
	}
	if (cfg_events & FAM_RESET)
		emit(&e);
	return 0;
}

#endif
