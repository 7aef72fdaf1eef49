package tracer

import "strconv"

// State is a TCP state as the kernel numbers it (include/net/tcp_states.h), through
// enum tcp_state_id in bpf/common.h.
type State uint8

const (
	StateEstablished = State(twtraceTcpStateIdS_ESTABLISHED)
	StateSynSent     = State(twtraceTcpStateIdS_SYN_SENT)
	StateSynRecv     = State(twtraceTcpStateIdS_SYN_RECV)
	StateFinWait1    = State(twtraceTcpStateIdS_FIN_WAIT1)
	StateFinWait2    = State(twtraceTcpStateIdS_FIN_WAIT2)
	StateTimeWait    = State(twtraceTcpStateIdS_TIME_WAIT)
	StateClose       = State(twtraceTcpStateIdS_CLOSE)
	StateCloseWait   = State(twtraceTcpStateIdS_CLOSE_WAIT)
	StateLastAck     = State(twtraceTcpStateIdS_LAST_ACK)
	StateListen      = State(twtraceTcpStateIdS_LISTEN)
	StateClosing     = State(twtraceTcpStateIdS_CLOSING)
	StateNewSynRecv  = State(twtraceTcpStateIdS_NEW_SYN_RECV)
)

var stateNames = [...]string{
	StateEstablished: "ESTABLISHED",
	StateSynSent:     "SYN_SENT",
	StateSynRecv:     "SYN_RECV",
	StateFinWait1:    "FIN_WAIT1",
	StateFinWait2:    "FIN_WAIT2",
	StateTimeWait:    "TIME_WAIT",
	StateClose:       "CLOSE",
	StateCloseWait:   "CLOSE_WAIT",
	StateLastAck:     "LAST_ACK",
	StateListen:      "LISTEN",
	StateClosing:     "CLOSING",
	StateNewSynRecv:  "NEW_SYN_RECV",
}

// String returns the kernel's name without the TCP_ prefix, or UNKNOWN(n).
func (s State) String() string {
	if int(s) < len(stateNames) && stateNames[s] != "" {
		return stateNames[s]
	}
	return "UNKNOWN(" + strconv.Itoa(int(s)) + ")"
}

// ParseState is the inverse of String for known states.
func ParseState(name string) (State, bool) {
	for i, n := range stateNames {
		if n != "" && n == name {
			return State(i), true
		}
	}
	return 0, false
}
