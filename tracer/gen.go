package tracer

//go:generate go tool bpf2go -cc clang-19 -cflags "-Wall -Werror -Wno-unused-function" -target amd64,arm64 -type event -type event_kind -type event_flag -type tw_cause -type tw_detail -type stat_index -type inferred_reason -type filter_case -type tcp_state_id -type event_family twtrace ../bpf/twtrace.c -- -I../headers -I../bpf
