/* SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause) */
/* Failed connect()s, seen where only failures go: a socket leaving SYN_SENT for CLOSE.
 * A successful connect never takes this path, so the family costs nothing while nothing
 * fails. The errno is the kernel's own:
 *   - sk_err, set before tcp_done() by whatever ended the attempt: a reset (ECONNREFUSED),
 *     the SYN retries running out (ETIMEDOUT, or the ICMP error they met, sk_err_soft),
 *     an ICMP error while the socket was not locked (EHOSTUNREACH, ENETUNREACH, ...), an
 *     abort (ECONNABORTED). Softirq or not, the owner is the one that called connect().
 *   - none, inside connect() itself: tcp_v{4,6}_connect failed after SYN_SENT. If
 *     inet_hash_connect() found no local port (EADDRNOTAVAIL), sk_txhash is the one the
 *     socket had at CLOSE->SYN_SENT: connect() draws a new one right after it succeeds.
 *     Later failures (a route, a buffer) leave the errno unknown here. */
#ifndef TWTRACE_CONNECT_H
#define TWTRACE_CONNECT_H

#define EADDRNOTAVAIL 99

/* connect_started remembers, in the socket's new entry, what tells a port search that
 * failed: the socket is in the owner's connect(). */
static __always_inline void connect_started(struct sock *sk, struct sock_info *si)
{
	if (!(cfg_events & FAM_CONNECT))
		return;
	si->connect_txhash = sk->sk_txhash;
	si->connect_txhash_known = 1;
}

/* check_connect_fail reports a socket that left SYN_SENT for CLOSE, unless its owner
 * closed it while it was connecting (close() marks it shut down first). si is the
 * socket's entry, read before it is deleted, or NULL. */
static __always_inline void check_connect_fail(struct sock *sk, const struct event *st, const struct sock_info *si)
{
	int err = sk->sk_err;

	if (!err && BPF_CORE_READ_BITFIELD(sk, sk_shutdown) == SHUTDOWN_MASK)
		return;

	struct event e = *st;
	e.kind = EV_CONNECT_FAIL;
	if (err) {
		e.value = err;
		e.flags |= F_VALUE_KNOWN;
	} else if (si && si->connect_txhash_known && sk->sk_txhash == si->connect_txhash) {
		e.value = EADDRNOTAVAIL;
		e.flags |= F_VALUE_KNOWN;
		/* the port bound by hand, or none: inet_sport may hold a past attempt's */
		e.sport = sk->__sk_common.skc_num;
	}
	emit(&e);
}

#endif
