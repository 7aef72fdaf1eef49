/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* The record layout shared with Go: bpf2go generates the Go type from struct event (-type event). */
#ifndef TWTRACE_EVENT_H
#define TWTRACE_EVENT_H

#define COMM_LEN 16

enum event_kind {
	EV_STATE = 1,
	EV_TW_ENTER = 2,    /* a full socket handed off to a timewait socket: also a state transition */
	EV_TW_REARM = 3,
	EV_TW_EXIT = 4,     /* a timewait socket died: also the TIME_WAIT->CLOSE transition */
	EV_TW_OVERFLOW = 5,
	EV_RESET = 6,
	EV_CONNECT_FAIL = 7, /* a connect() failed: value holds its errno when known */
};

enum event_flag {
	F_DURATION_KNOWN = 1 << 0, /* duration_ns holds in_old / lifetime */
	F_OWNER_KNOWN = 1 << 1,
	F_REASON_KERNEL = 1 << 2,  /* reason came from the kernel's tracepoint, not inferred */
	F_RESET_RECV = 1 << 3,
	F_VALUE_KNOWN = 1 << 4,    /* value holds timeout / max buckets / unread bytes */
	F_NO_SOCKET = 1 << 5,      /* reset sent for a packet that matched no socket */
	F_CGROUP_IN = 1 << 6,      /* the socket's cgroup is in the --cgroup subtree (set only with that filter) */
};

enum tw_cause {
	CAUSE_EXPIRED = 1,
	CAUSE_KILLED = 2,
	/* userspace only: sock_diag no longer lists the socket and no program reported its death */
	CAUSE_UNSEEN = 3,
};

enum tw_detail {
	DETAIL_NONE = 0,
	DETAIL_SYN = 1,
	DETAIL_RST = 2,
	DETAIL_REUSE = 3,
	DETAIL_NETNS_EXIT = 4,
};

/* Inferred reset reasons, reported on kernels whose tcp_send_reset has no reason argument.
 * Values are outside enum sk_rst_reason's range so the two never collide. */
enum inferred_reason {
	INFERRED_NOT_SPECIFIED = 0xff00,
	INFERRED_ABORT_ON_CLOSE = 0xff01,
	INFERRED_TCP_STATE = 0xff02,
};

struct event {
	__u64 ts_ns;       /* CLOCK_MONOTONIC */
	__u64 duration_ns; /* time in old state, or timewait lifetime */
	__u64 cgroup;      /* the socket's cgroup v2 id (sk_cgrp_data), carried to its timewait socket; 0 unknown */
	__u32 netns;
	__u32 pid;
	__u32 value;       /* timeout in jiffies, max_tw_buckets, or unread bytes: see kind */
	__u16 sport;       /* local */
	__u16 dport;       /* remote */
	__u8 saddr[16];
	__u8 daddr[16];
	char comm[COMM_LEN];
	__u8 kind;
	__u8 family; /* 4 or 6 */
	__u8 old_state;
	__u8 new_state;
	__u8 substate;
	__u8 cause;
	__u8 detail;
	__u8 flags;
	__u16 reason;
	__u8 _pad[6];
};

/* Tests only: a socket as the filter test program (test_filter) reads it from its context. */
struct filter_case {
	__u8 saddr[16];
	__u8 daddr[16];
	__u32 netns;
	__u32 pid;
	__u16 sport;
	__u16 dport;
	__u8 family;
	__u8 owner_known;
	__u8 _pad[2];
};

enum stat_index {
	STAT_EMITTED = 0,
	STAT_LOST = 1,      /* ring buffer full */
	STAT_FILTERED = 2,  /* dropped by a filter, in the kernel */
	STAT_SOCK_UNTRACKED = 3, /* transition of a socket whose previous state was never seen */
	STAT_TW_UNKNOWN_BIRTH = 4, /* timewait socket died whose birth we did not see */
	/* tracepoint backend: overflows the kernel counted on a CPU whose closes we did not see */
	STAT_OVERFLOW_UNATTRIBUTED = 5,
	/* tracepoint backend: closes judged from the timewait table's fill level, for want of the
	 * namespace's count on that CPU (its first close there): the only inexact verdicts */
	STAT_OVERFLOW_INFERRED = 6,
	/* records.h: a socket left unrecorded, its bucket full of live records (owner, lifetime unknown) */
	STAT_RECORD_NO_ROOM = 7,
	/* records.h: a record taken over from a socket whose end was never seen */
	STAT_RECORD_STALE = 8,
	STAT_MAX = 9,
};

#endif
