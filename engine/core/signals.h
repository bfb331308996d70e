/* Termination signals (SIGINT, SIGTERM, SIGHUP) turned into a flag that the
 * program checks at safe points, instead of dying or unwinding at an
 * arbitrary instruction: an interrupted backup must restart the canisters it
 * stopped before it exits.
 *
 * The handler only records the signal (the first one since the last clear,
 * and a count). It is installed without SA_RESTART, so a blocking wait
 * returns EINTR; fsn_signals_ppoll closes the window between checking the
 * flag and starting to wait (the handler also writes to an eventfd the wait
 * polls). This is the engine's one piece of mutable
 * process-wide state: a signal handler has no other place to write to, and
 * dispositions are per process anyway. */
#ifndef FSN_SIGNALS_H
#define FSN_SIGNALS_H

#include <poll.h>
#include <signal.h>

#include "err.h"

/* Installs the handler for SIGINT, SIGTERM and SIGHUP, keeping the previous
 * dispositions for fsn_signals_release. Idempotent. */
int fsn_signals_catch(fsn_err *err);
/* Restores the previous dispositions of the signals whose handler is still
 * ours (one changed by someone else since is left alone). Idempotent; what
 * was caught stays pending. */
void fsn_signals_release(void);
/* The first signal caught since the last clear, or 0; *count (if not NULL)
 * gets how many were caught since. */
int fsn_signals_pending(int *count);
/* Forgets the caught signals. */
void fsn_signals_clear(void);
/* "SIGINT", "SIGTERM", "SIGHUP", or NULL for another signal. */
const char *fsn_signal_name(int sig);

/* poll(2) that also stops for a caught signal, without a lost wakeup: with
 * the handler installed, the flag is checked, then the poll also watches a
 * descriptor the handler makes readable (where that descriptor could not be
 * made, or the set is large: the three signals are blocked, the flag
 * checked, then ppoll unblocks them atomically). Returns poll's result; -1 with errno
 * EINTR when interrupted, and then *sig is the pending signal (0 when some
 * other handler interrupted it, e.g. lua5.4's own SIGINT one). */
int fsn_signals_ppoll(struct pollfd *fds, nfds_t n, int timeout_ms, int *sig);

#endif
