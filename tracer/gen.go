package tracer

// Two builds of one source: twtrace keeps per-socket records in set-associative tables claimed
// with BPF atomics (5.12+, bpf/records.h); twtraceLRU keeps them in LRU hashes, for kernels
// without atomics, and shares the first build's Go types.
//go:generate go tool bpf2go -cc clang-19 -cflags "-Wall -Werror -Wno-unused-function -mcpu=v3" -target amd64,arm64 -type event -type event_kind -type event_flag -type tw_cause -type tw_detail -type stat_index -type inferred_reason -type filter_case -type tcp_state_id -type event_family -type record_layout twtrace ../bpf/twtrace.c -- -I../headers -I../bpf
//go:generate go tool bpf2go -cc clang-19 -cflags "-Wall -Werror -Wno-unused-function -DTWTRACE_LRU_RECORDS" -target amd64,arm64 -no-global-types -output-stem twtrace_lru twtraceLRU ../bpf/twtrace.c -- -I../headers -I../bpf
