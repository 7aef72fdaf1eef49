/* A full socket's cgroup v2 id (sk->sk_cgrp_data: the cgroup of the task that created it, inherited
 * by accepted sockets from their listener; readable in softirq), and the --cgroup subtree filter. */
#ifndef TWTRACE_CGROUP_H
#define TWTRACE_CGROUP_H

/* < 5.15: one word, the cgroup pointer, unless net_prio or net_cls (cgroup v1) took it over for their
 * data (bit 0) or cgroup_sk_alloc was disabled (bit 1): the kernel then says "root", we say unknown. */
struct sock_cgroup_data___val {
	__u64 val;
} __attribute__((preserve_access_index));

struct sock___cgrp_val {
	struct sock_cgroup_data___val sk_cgrp_data;
} __attribute__((preserve_access_index));

/* < 6.0: the ids of a cgroup's ancestors by level (itself last); later the ancestors themselves */
struct cgroup___ancestor_ids {
	__u64 ancestor_ids[0];
} __attribute__((preserve_access_index));

static __always_inline struct cgroup *sock_cgroup(struct sock *sk)
{
	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup))
		return BPF_CORE_READ(sk, sk_cgrp_data.cgroup);
	__u64 v = BPF_CORE_READ((struct sock___cgrp_val *)sk, sk_cgrp_data.val);
	return (v & 3) ? NULL : (struct cgroup *)v;
}

/* The cgroup id, 0 when unknown (no cgroup, or cgroup v1 data in its place). */
static __always_inline __u64 sock_cgroup_id(struct sock *sk)
{
	struct cgroup *cg = sock_cgroup(sk);

	return cg ? BPF_CORE_READ(cg, kn, id) : 0;
}

/* The same for the hook's BTF pointer: on 5.15+ three direct loads, where probe reads cost tens of
 * nanoseconds each, in the hook that runs about nine times per connection. */
static __always_inline __u64 sock_cgroup_id_btf(struct sock *sk)
{
	if (bpf_core_field_exists(struct sock_cgroup_data, cgroup)) {
		struct cgroup *cg = sk->sk_cgrp_data.cgroup;

		return cg ? cg->kn->id : 0;
	}
	return sock_cgroup_id(sk);
}

/* whether the socket's cgroup lies in the --cgroup subtree: its ancestor at the subtree root's level
 * is that root */
static __always_inline bool cgroup_in_subtree(struct sock *sk)
{
	struct cgroup *cg = sock_cgroup(sk);
	__u64 id = 0;

	if (!cg || BPF_CORE_READ(cg, level) < (int)cfg_cgroup_level)
		return false;
	if (bpf_core_field_exists(struct cgroup, ancestors)) {
		struct cgroup *a = NULL;

		bpf_probe_read_kernel(&a, sizeof(a), (void *)cg + bpf_core_field_offset(struct cgroup, ancestors) +
							   cfg_cgroup_level * sizeof(a));
		id = a ? BPF_CORE_READ(a, kn, id) : 0;
	} else {
		bpf_probe_read_kernel(&id, sizeof(id), (void *)cg +
			bpf_core_field_offset(struct cgroup___ancestor_ids, ancestor_ids) + cfg_cgroup_level * sizeof(id));
	}
	return id == cfg_cgroup_id;
}

/* set_cgroup stamps a full socket's cgroup on its event, and whether --cgroup keeps it; btf says
 * sk is a BTF pointer (direct loads allowed). */
static __always_inline void set_cgroup(struct event *e, struct sock *sk, bool btf)
{
	e->cgroup = btf ? sock_cgroup_id_btf(sk) : sock_cgroup_id(sk);
	if (cfg_cgroup_id && cgroup_in_subtree(sk))
		e->flags |= F_CGROUP_IN;
}

#endif
