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

/* Per full socket (records.h): when it entered its current state, and its owner. Dropped at CLOSE. */
struct sock_info {
	__u64 since_ns;
	struct owner owner;
	/* sk_txhash when connect() moved the socket to SYN_SENT: connect() draws a new one
	 * once it has a local port, so an unchanged one at SYN_SENT->CLOSE means it found none */
	__u32 connect_txhash;
	__u32 connect_txhash_known;
};

/* Per timewait socket (records.h): its birth, and the owner and cgroup carried over. Dropped at death. */
struct tw_info {
	__u64 birth_ns;
	__u64 cgroup;
	struct owner owner;
	__u8 cgroup_in; /* F_CGROUP_IN of the full socket */
	__u8 _pad[7];
};

/* Per namespace (by inode) and per CPU: the namespace's TcpExtTCPTimeWaitOverflow as this
 * CPU counted it when last read, and the namespace it was read from (an inode is reused). */
struct overflow_seen {
	__u64 count;
	__u64 net;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_PERCPU_HASH);
	__uint(max_entries, 1024);
	__type(key, __u32);
	__type(value, struct overflow_seen);
} overflow_seen SEC(".maps");

/* A timewait timer armed on this CPU for a socket whose hand-off (its full socket's
 * ->CLOSE) is still to come. */
struct birth {
	__u64 tw;
	__u64 ts;
	__u32 timeout;
	__u32 netns;
	__u16 sport;
	__u16 dport;
	__u8 substate;
	/* function-probe backends: the first timeout, once __inet_twsk_schedule showed it */
	__u8 first_known;
	__u8 _pad[2];
	__u64 jiffies; /* function-probe backends: jiffies at inet_twsk_alloc */
	__u32 first_timeout;
	__u32 _pad2;
};

/* A full socket whose inet_twsk_alloc() returned NULL here (function-probe backends). */
struct refused {
	__u64 sk;
	__u8 substate;
	__u8 _pad[7];
};

/* Slots for births and refusals: a softirq may run between a socket's tcp_time_wait()
 * and its ->CLOSE (backlog processing runs with bottom halves enabled) and hand off
 * sockets of its own. */
#define HANDOFF_SLOTS 4

/* What one CPU just did, to join events the kernel emits back to back in one
 * bottom-half-disabled section (timer armed, then full socket closed, then reset sent). */
struct cpu_scratch {
	struct birth births[HANDOFF_SLOTS];
	struct refused refusals[HANDOFF_SLOTS];
	/* a timewait timer detached: re-arm, expiry or kill, settled by what follows; the
	 * socket's birth and owner, taken from the tws map at the detach, for a re-arm */
	__u64 pending_tw;
	__u64 pending_ts;
	__u8 pending_due;
	__u8 _pad1[7];
	struct tw_info pending_ti;
	struct event pending_ev;
	/* the last full socket closed here, whose owner a following reset still needs */
	__u64 closed_sk;
	struct owner closed_owner;
	/* the last full socket that sent a reset here: its next transition, a close, is not an
	 * overflow; that transition consumes it (the slab gives the address to new sockets) */
	__u64 reset_sk;
	/* kprobe backend: inet_twsk_alloc's arguments, for its return probe */
	__u64 alloc_sk;
	__u8 alloc_state;
	__u8 _pad2[7];
	/* the timewait socket whose timer handler is running here */
	__u64 expiring_tw;
	/* the last segment a timewait socket processed here: a kill right after it was
	 * caused by it */
	__u64 segment_tw;
	__u64 segment_ts;
	__u8 segment_detail;
	__u8 pcpu_off_known;
	__u8 _pad3[6];
	/* where this CPU's copy of per-CPU kernel memory lies from its per-CPU pointer */
	__u64 pcpu_off;
	/* as_scalar's passage */
	__u64 scalar;
	/* the last namespace a socket here was in (netns_of) */
	__u64 net;
	__u32 net_mix;
	__u32 net_inum;
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct cpu_scratch);
} scratch SEC(".maps");

static __always_inline void count_n(__u32 idx, __u64 n)
{
	__u64 *v = bpf_map_lookup_elem(&stats, &idx);
	if (v)
		*v += n;
}

static __always_inline void count(__u32 idx)
{
	count_n(idx, 1);
}

static __always_inline struct cpu_scratch *this_cpu(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&scratch, &zero);
}

/* as_scalar turns a kernel pointer into a plain number: the verifier refuses arithmetic on
 * pointers other than adding offsets, and keeps no pointer type for what map memory holds. */
static __always_inline __u64 as_scalar(__u64 p)
{
	struct cpu_scratch *c = this_cpu();

	if (!c)
		return 0;
	*(volatile __u64 *)&c->scalar = p;
	return *(volatile __u64 *)&c->scalar;
}

#endif
