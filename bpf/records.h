/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Records kept per socket, keyed by its address: a full socket's owner and timing
 * (sock_info, table socks) and what a timewait socket carried over (tw_info, table tws).
 *
 * Where the kernel has BPF atomics (5.12+), a table is an array of buckets of RECORD_WAYS
 * records, the bucket chosen by the address. A record is claimed by swapping its
 * key from 0 (compare-and-exchange, so two CPUs never claim one), read and written in
 * place, and dropped by zeroing its key: a few loads, where an LRU hash costs a locked
 * allocation per insert and a locked free per delete (BENCHMARKS.md, issue 15). A full
 * bucket gives up its oldest record only when that was claimed more than RECORD_STALE_J
 * jiffies ago (its socket's end was missed: a run the kernel skipped); otherwise the new
 * socket goes unrecorded, counted in STAT_RECORD_NO_ROOM, and reports its owner or
 * lifetime as unknown. Only such an eviction can overlap the evicted socket's own use of
 * the record; a reader re-checks the key after copying.
 *
 * Kernels without atomics get the object built with TWTRACE_LRU_RECORDS (tracer/gen.go):
 * LRU hashes of the same records, which evict the least recently used one when full. */
#ifndef TWTRACE_RECORDS_H
#define TWTRACE_RECORDS_H

/* named so that bpf2go carries it to Go (tracer.CountRecords) */
enum record_layout { RECORD_WAYS = 4 };
/* 90 s at HZ 1000, longer at lower rates: far beyond a socket's quiet spell between two of
 * its own record writes in a full bucket, which then only holds long-lived ones */
#define RECORD_STALE_J (90 * 1000ULL)

#ifdef TWTRACE_LRU_RECORDS

struct sock_rec {
	__u64 key;
	struct sock_info info;
};

struct tw_rec {
	__u64 key;
	struct tw_info info;
};

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct sock_rec);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 65536);
	__type(key, __u64);
	__type(value, struct tw_rec);
} tws SEC(".maps");

#define DEFINE_RECORDS(name, map, rec_t, info_t)                                           \
	/* name##_get: addr's record, copied into *out, or NULL */                          \
	static __always_inline info_t *name##_get(__u64 addr, info_t *out)                   \
	{                                                                                    \
		rec_t *r = bpf_map_lookup_elem(&map, &addr);                                 \
		if (!r)                                                                      \
			return NULL;                                                         \
		*out = r->info;                                                              \
		return &r->info;                                                             \
	}                                                                                    \
	static __always_inline void name##_put(__u64 addr, const info_t *info)               \
	{                                                                                    \
		rec_t r = { .key = addr, .info = *info };                                    \
		bpf_map_update_elem(&map, &addr, &r, BPF_ANY);                               \
	}                                                                                    \
	static __always_inline void name##_drop(__u64 addr)                                  \
	{                                                                                    \
		bpf_map_delete_elem(&map, &addr);                                            \
	}                                                                                    \
	static __always_inline bool name##_take(__u64 addr, info_t *out)                     \
	{                                                                                    \
		if (!name##_get(addr, out))                                                  \
			return false;                                                        \
		name##_drop(addr);                                                           \
		return true;                                                                 \
	}

#else

#define SOCK_BUCKETS_LOG2 14 /* 65,536 records */
#define TW_BUCKETS_LOG2 15   /* 131,072: a namespace's tcp_max_tw_buckets on a 24 GiB machine */

/* A bucket keeps its ways' keys and claim times on its first cache line, so that finding a
 * record, or claiming one, reads one line: with whole records side by side, a claim's
 * look for the address already there read all four of the bucket's lines (the state hook
 * spent about half its samples there). Buckets are 256 bytes, so the keys (32 bytes) sit at
 * the same place in every bucket's line and never straddle two: an array's values begin 16
 * bytes into a line (struct bpf_array), at most 32 would do. */
struct sock_bucket {
	__u64 key[RECORD_WAYS];
	__u64 claimed_j[RECORD_WAYS];
	struct sock_info info[RECORD_WAYS];
	__u8 _pad[256 - 16 * RECORD_WAYS - RECORD_WAYS * sizeof(struct sock_info)];
};

struct tw_bucket {
	__u64 key[RECORD_WAYS];
	__u64 claimed_j[RECORD_WAYS];
	struct tw_info info[RECORD_WAYS];
};

_Static_assert(sizeof(struct sock_bucket) == 256 && sizeof(struct tw_bucket) == 256, "a bucket is 4 cache lines");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << SOCK_BUCKETS_LOG2);
	__type(key, __u32);
	__type(value, struct sock_bucket);
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1 << TW_BUCKETS_LOG2);
	__type(key, __u32);
	__type(value, struct tw_bucket);
} tws SEC(".maps");

/* A bucket by the address's own bits above the object size (shift): sockets next to each other
 * in the slab, as those born together are, get records next to each other, on the same page
 * of the table. A hash scattered them over its 3.5 and 8 MB, a TLB miss each: measured, the
 * state hook took 35-60 ns longer on average (BENCHMARKS.md). */
#define RECORD_BUCKET(addr, log2, shift) ((__u32)((addr) >> (shift)) & ((1U << (log2)) - 1))

#define DEFINE_RECORDS(name, map, info_t, bucket_t, log2, shift)                                \
	static __always_inline bucket_t *name##_bucket(__u64 addr)                           \
	{                                                                                    \
		__u32 i = RECORD_BUCKET(addr, log2, shift);                                   \
		return bpf_map_lookup_elem(&map, &i);                                        \
	}                                                                                    \
	/* name##_find: the way holding addr (a plain number, as_scalar), or -1. The way is    \
	 * laundered (as_scalar): the verifier then checks what follows once, not once per    \
	 * way (four times the instructions, twice the load time). */                        \
	static __always_inline int name##_find(bucket_t *b, __u64 addr)                      \
	{                                                                                    \
		for (int w = 0; w < RECORD_WAYS; w++)                                        \
			if (b->key[w] == addr)                                               \
				return as_scalar(w) & (RECORD_WAYS - 1);                     \
		return -1;                                                                   \
	}                                                                                    \
	/* name##_copy: copies addr's record into *out and returns its bucket (*way: its     \
	 * way), or NULL; NULL too when the record was taken over while being copied */      \
	static __always_inline bucket_t *name##_copy(__u64 ptr, info_t *out, int *way)        \
	{                                                                                    \
		__u64 addr = as_scalar(ptr);                                                 \
		bucket_t *b = name##_bucket(addr);                                           \
		int w = b ? name##_find(b, addr) : -1;                                       \
		if (w < 0)                                                                   \
			return NULL;                                                         \
		w &= RECORD_WAYS - 1;                                                        \
		*out = b->info[w];                                                           \
		*way = w;                                                                    \
		return *(volatile const __u64 *)&b->key[w] == addr ? b : NULL;               \
	}                                                                                    \
	/* name##_get: addr's record, copied into *out, or NULL */                           \
	static __always_inline info_t *name##_get(__u64 ptr, info_t *out)                    \
	{                                                                                    \
		int w = 0;                                                                   \
		bucket_t *b = name##_copy(ptr, out, &w);                                     \
		return b ? &b->info[w & (RECORD_WAYS - 1)] : NULL;                           \
	}                                                                                    \
	/* name##_take: name##_get that drops the record, found once */                      \
	static __always_inline bool name##_take(__u64 ptr, info_t *out)                      \
	{                                                                                    \
		int w = 0;                                                                   \
		bucket_t *b = name##_copy(ptr, out, &w);                                     \
		if (!b)                                                                      \
			return false;                                                        \
		b->key[w & (RECORD_WAYS - 1)] = 0;                                           \
		return true;                                                                 \
	}                                                                                    \
	/* name##_claim: addr's record, else a free one, else a stale one, else none */      \
	static __always_inline info_t *name##_claim(__u64 ptr)                               \
	{                                                                                    \
		__u64 addr = as_scalar(ptr);                                                 \
		bucket_t *b = name##_bucket(addr);                                           \
		__u64 now = bpf_jiffies64();                                                 \
		__u32 oldest = 0;                                                            \
		if (!b)                                                                      \
			return NULL;                                                         \
		int own = name##_find(b, addr);                                              \
		if (own >= 0)                                                                \
			return &b->info[own & (RECORD_WAYS - 1)];                            \
		for (int w = 0; w < RECORD_WAYS; w++) {                                      \
			if (!b->key[w] && __sync_val_compare_and_swap(&b->key[w], 0, addr) == 0) { \
				b->claimed_j[w] = now;                                       \
				return &b->info[as_scalar(w) & (RECORD_WAYS - 1)];           \
			}                                                                    \
			if (b->claimed_j[w] < b->claimed_j[oldest & (RECORD_WAYS - 1)])      \
				oldest = w;                                                  \
		}                                                                            \
		oldest &= RECORD_WAYS - 1;                                                   \
		__u64 old = b->key[oldest];                                                  \
		if (old && now - b->claimed_j[oldest] > RECORD_STALE_J &&                    \
		    __sync_val_compare_and_swap(&b->key[oldest], old, addr) == old) {        \
			b->claimed_j[oldest] = now;                                          \
			count(STAT_RECORD_STALE);                                            \
			return &b->info[oldest];                                             \
		}                                                                            \
		count(STAT_RECORD_NO_ROOM);                                                  \
		return NULL;                                                                 \
	}                                                                                    \
	static __always_inline void name##_put(__u64 addr, const info_t *info)               \
	{                                                                                    \
		info_t *r = name##_claim(addr);                                              \
		if (r)                                                                       \
			*r = *info;                                                          \
	}                                                                                    \
	/* only the record's own socket drops it */                                          \
	static __always_inline void name##_drop(__u64 ptr)                                   \
	{                                                                                    \
		__u64 addr = as_scalar(ptr);                                                 \
		bucket_t *b = name##_bucket(addr);                                           \
		int w = b ? name##_find(b, addr) : -1;                                       \
		if (w >= 0)                                                                  \
			b->key[w & (RECORD_WAYS - 1)] = 0;                                   \
	}

#endif

#ifdef TWTRACE_LRU_RECORDS
DEFINE_RECORDS(sock, socks, struct sock_rec, struct sock_info)
DEFINE_RECORDS(tw, tws, struct tw_rec, struct tw_info)
#else
/* a tcp_sock takes about 2.3 KB of its slab, a tcp_timewait_sock about 256 bytes */
DEFINE_RECORDS(sock, socks, struct sock_info, struct sock_bucket, SOCK_BUCKETS_LOG2, 11)
DEFINE_RECORDS(tw, tws, struct tw_info, struct tw_bucket, TW_BUCKETS_LOG2, 8)
#endif

#endif
