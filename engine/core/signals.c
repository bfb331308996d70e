/* Caught termination signals: a flag set by the handler, checked at safe
 * points by the Lua executor and by interruptible waits. */
#define _GNU_SOURCE
#include "signals.h"

#include <errno.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

static const int SIGNALS[] = {SIGINT, SIGTERM, SIGHUP};
#define NSIGNALS (sizeof SIGNALS / sizeof SIGNALS[0])

/* Written by the handler: sig_atomic_t, and never while another instance
 * runs (sa_mask blocks all three during it). */
static volatile sig_atomic_t first_caught = 0;
static volatile sig_atomic_t caught_count = 0;
/* Only touched by the thread that calls catch and release (Lua's). */
static struct sigaction previous[NSIGNALS];
static struct sigaction previous_pipe;
static int installed = 0;
/* Made readable by the handler, after the flag: part of every wait's poll
 * set, it closes the window between checking the flag and starting to wait
 * without blocking the signals around each wait (a sigprocmask pair per
 * scheduler wakeup). Made once by catch and never closed, so a handler
 * (on any thread) never writes to a reused number. -1: the blocking way. */
static int wake_fd = -1;

static void on_signal(int sig) {
  if (!first_caught) first_caught = sig;
  if (caught_count < 1000000) caught_count++;
  if (wake_fd >= 0) {
    int e = errno; /* async-signal-safe: write(2), errno kept */
    uint64_t one = 1;
    ssize_t r = write(wake_fd, &one, sizeof one);
    (void)r; /* full (EAGAIN) is still readable */
    errno = e;
  }
}

/* Empties the wake-up descriptor (non-blocking). */
static void drain_wake(void) {
  uint64_t v;
  if (wake_fd >= 0)
    while (read(wake_fd, &v, sizeof v) < 0 && errno == EINTR) {}
}

static void signal_set(sigset_t *set) {
  sigemptyset(set);
  for (size_t i = 0; i < NSIGNALS; i++) sigaddset(set, SIGNALS[i]);
}

int fsn_signals_catch(fsn_err *err) {
  if (installed) return 0;
  /* Before the handler can run; without one, waits block the signals. */
  if (wake_fd < 0) wake_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_signal;
  signal_set(&sa.sa_mask);
  sa.sa_flags = 0; /* no SA_RESTART: a blocking wait must see EINTR */
  for (size_t i = 0; i < NSIGNALS; i++) {
    if (sigaction(SIGNALS[i], &sa, &previous[i]) != 0) {
      int e = errno;
      const char *name = fsn_signal_name(SIGNALS[i]);
      while (i-- > 0) sigaction(SIGNALS[i], &previous[i], NULL);
      return fsn_fail_errno(err, e, "catch %s", name);
    }
  }
  /* A reader that went away (`fleetsnap ... | head`) must not kill a run
   * that holds canisters stopped: with SIGPIPE ignored a write to the
   * closed pipe fails with EPIPE instead, and the run goes on to leave the
   * fleet as it found it. Children start with default dispositions. */
  struct sigaction ign;
  memset(&ign, 0, sizeof ign);
  ign.sa_handler = SIG_IGN;
  if (sigaction(SIGPIPE, &ign, &previous_pipe) != 0) {
    int e = errno;
    for (size_t i = 0; i < NSIGNALS; i++) sigaction(SIGNALS[i], &previous[i], NULL);
    return fsn_fail_errno(err, e, "ignore SIGPIPE");
  }
  installed = 1;
  return 0;
}

void fsn_signals_release(void) {
  if (!installed) return;
  for (size_t i = 0; i < NSIGNALS; i++) {
    struct sigaction cur;
    if (sigaction(SIGNALS[i], NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) &&
        cur.sa_handler == on_signal)
      sigaction(SIGNALS[i], &previous[i], NULL);
  }
  struct sigaction cur;
  if (sigaction(SIGPIPE, NULL, &cur) == 0 && !(cur.sa_flags & SA_SIGINFO) && cur.sa_handler == SIG_IGN)
    sigaction(SIGPIPE, &previous_pipe, NULL);
  installed = 0;
}

int fsn_signals_pending(int *count) {
  if (count) *count = (int)caught_count;
  return (int)first_caught;
}

void fsn_signals_clear(void) {
  /* Blocked so that a signal arriving meanwhile is kept whole (both fields)
   * or cleared whole, never half. */
  sigset_t set, old;
  signal_set(&set);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  first_caught = 0;
  caught_count = 0;
  drain_wake();
  pthread_sigmask(SIG_SETMASK, &old, NULL);
}

const char *fsn_signal_name(int sig) {
  switch (sig) {
  case SIGINT: return "SIGINT";
  case SIGTERM: return "SIGTERM";
  case SIGHUP: return "SIGHUP";
  default: return NULL;
  }
}

/* How many descriptors the wake-up way copies on the stack; a larger set
 * takes the blocking way. */
#define WAKE_MAX 512

int fsn_signals_ppoll(struct pollfd *fds, nfds_t n, int timeout_ms, int *sig) {
  *sig = 0;
  if (!installed) return poll(fds, n, timeout_ms); /* EINTR: not one of ours */
  if (wake_fd >= 0 && n < WAKE_MAX) {
    /* A signal caught before this check is seen here; one caught after it
     * has made wake_fd readable, so the poll does not sleep through it
     * (and one caught during the poll interrupts it: no SA_RESTART). */
    if (first_caught) {
      *sig = (int)first_caught;
      errno = EINTR;
      return -1;
    }
    struct pollfd all[WAKE_MAX];
    if (n) memcpy(all, fds, n * sizeof *fds);
    all[n] = (struct pollfd){wake_fd, POLLIN, 0};
    int r = poll(all, n + 1, timeout_ms);
    int e = errno;
    if (r < 0) {
      if (e == EINTR) *sig = (int)first_caught;
      errno = e;
      return r;
    }
    for (nfds_t i = 0; i < n; i++) fds[i].revents = all[i].revents;
    if (all[n].revents) {
      if (first_caught) {
        *sig = (int)first_caught;
        errno = EINTR;
        return -1;
      }
      /* Left over from signals since cleared: not a wake-up. The caller
       * polls again (a count of 0 reads as an early timeout). */
      drain_wake();
      r--;
    }
    return r;
  }
  sigset_t set, old;
  signal_set(&set);
  pthread_sigmask(SIG_BLOCK, &set, &old);
  /* A signal caught before this point is seen here; one arriving later
   * stays pending until ppoll unblocks it, which then returns EINTR. */
  int r, e;
  if (first_caught) {
    r = -1;
    e = EINTR;
  } else {
    struct timespec ts = {timeout_ms / 1000, (long)(timeout_ms % 1000) * 1000000L};
    r = ppoll(fds, n, timeout_ms < 0 ? NULL : &ts, &old);
    e = errno;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (r < 0 && e == EINTR) *sig = (int)first_caught;
  errno = e;
  return r;
}
