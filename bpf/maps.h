/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
#ifndef TWTRACE_MAPS_H
#define TWTRACE_MAPS_H

/* Sizes are rewritten from Go before load (--ringbuf-size etc.); these are the defaults. */
struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STAT_MAX);
	__type(key, __u32);
	__type(value, __u64);
} stats SEC(".maps");

/* State transitions counted per CPU, indexed old * 16 + new, for readers that need the
 * counts and not each event: one increment instead of a ring buffer record. */
#define TRANSITION_SLOTS 256

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, TRANSITION_SLOTS);
	__type(key, __u32);
	__type(value, __u64);
} transitions SEC(".maps");

struct owner {
	__u32 pid;
	__u32 known;
	char comm[COMM_LEN];
};

/* Per full socket: when it entered its current state, and its owner. Deleted at CLOSE. */
struct sock_info {
	__u64 since_ns;
	struct owner owner;
	/* sk_txhash when connect() moved the socket to SYN_SENT: connect() draws a new one
	 * once it has a local port, so an unchanged one at SYN_SENT->CLOSE means it found none */
	__u32 connect_txhash;
	__u32 connect_txhash_known;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_info);
} socks SEC(".maps");

/* Per timewait socket: its birth, and the owner and cgroup carried over. Deleted at death. */
struct tw_info {
	__u64 birth_ns;
	__u64 cgroup;
	struct owner owner;
	__u8 cgroup_in; /* F_CGROUP_IN of the full socket */
	__u8 _pad[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tw_info);
} tws SEC(".maps");

/* What one CPU just did, to join events the kernel emits back to back in one
 * bottom-half-disabled section (timer armed, then full socket closed, then reset sent). */
struct cpu_scratch {
	/* a timewait timer armed for a socket we have not seen handed off yet */
	__u64 armed_tw;
	__u64 armed_ts;
	__u32 armed_timeout;
	__u32 armed_netns;
	__u16 armed_sport;
	__u16 armed_dport;
	__u8 armed_substate;
	__u8 _pad0[3];
	/* a timewait timer detached: re-arm, expiry or kill, settled by what follows */
	__u64 pending_tw;
	__u64 pending_ts;
	__u8 pending_due;
	__u8 _pad1[7];
	struct event pending_ev;
	/* the last full socket closed here, whose owner a following reset still needs */
	__u64 closed_sk;
	struct owner closed_owner;
	/* the last full socket that sent a reset here: its next transition, a close, is not an
	 * overflow; that transition consumes it (the slab gives the address to new sockets) */
	__u64 reset_sk;
	/* function-probe backends: inet_twsk_alloc's arguments (kprobe) and its NULL result */
	__u64 alloc_sk;
	__u64 overflow_sk;
	__u8 alloc_state;
	__u8 overflow_substate;
	__u8 _pad2[6];
	/* function-probe backends: jiffies when the armed timewait socket was allocated, and
	 * its first timeout when __inet_twsk_schedule showed it */
	__u64 armed_jiffies;
	__u32 armed_first_timeout;
	__u8 armed_first_known;
	__u8 _pad4[3];
	/* the timewait socket whose timer handler is running here */
	__u64 expiring_tw;
	/* the last segment a timewait socket processed here: a kill right after it was
	 * caused by it */
	__u64 segment_tw;
	__u64 segment_ts;
	__u8 segment_detail;
	__u8 _pad3[7];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_scratch);
} scratch SEC(".maps");

static __always_inline void count(__u32 idx)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		(*v)++;
}

static __always_inline struct cpu_scratch *this_cpu(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

#endif
