/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Older kernel layouts, matched by CO-RE through the ___flavour suffix. */
#ifndef TWTRACE_COMPAT_H
#define TWTRACE_COMPAT_H

/* <= 6.0: tw_count instead of tw_refcount */
struct inet_timewait_death_row___v510 {
	atomic_t tw_count;
	int sysctl_max_tw_buckets;
} __attribute__((preserve_access_index));

/* 5.18 - 6.0: the death row is a pointer */
struct netns_ipv4___dr_ptr {
	struct inet_timewait_death_row *tcp_death_row;
} __attribute__((preserve_access_index));

/* < 5.17: the namespace refcount is net->count; later ns.count; 6.18 ns.__ns_ref */
struct net___count {
	refcount_t count;
} __attribute__((preserve_access_index));

struct ns_common___count {
	refcount_t count;
} __attribute__((preserve_access_index));

#endif
