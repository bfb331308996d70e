/* Unit tests of caught signals: the flag, its interplay with wait_any (a
 * signal before the wait is not lost, one during it ends the wait, finished
 * children come first, uninterruptible waits go on), default dispositions in
 * children, and release restoring exactly what was there. */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "proc.h"
#include "signals.h"

extern char **environ;

static volatile sig_atomic_t prev_hup_seen = 0;
static void prev_hup(int sig) {
  (void)sig;
  prev_hup_seen = 1;
}
static void foreign(int sig) { (void)sig; }

static void *raise_term_later(void *arg) {
  (void)arg;
  usleep(200 * 1000);
  raise(SIGTERM); /* to this thread: its handler runs here */
  return NULL;
}

static int spawn(fsn_proc *p, char **argv) {
  fsn_spawn_opts o;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.envp = environ;
  o.capture_limit = 4096;
  fsn_err err;
  return fsn_proc_spawn(p, &o, &err);
}

static void (*handler_of(int sig))(int) {
  struct sigaction sa;
  sigaction(sig, NULL, &sa);
  return sa.sa_handler;
}

static char *text(const fsn_ring *r) {
  static char out[8192];
  size_t n = fsn_ring_copy(r, out);
  out[n] = 0;
  return out;
}

int main(void) {
  fsn_err err;
  int count = -1, sig = -1;
  /* What was there before: kept by catch, restored by release. */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = prev_hup;
  sigaction(SIGHUP, &sa, NULL);
  signal(SIGINT, SIG_IGN);
  signal(SIGTERM, SIG_DFL);

  CHECK(fsn_signals_pending(&count) == 0 && count == 0);
  CHECK(fsn_signals_catch(&err) == 0);
  CHECK(fsn_signals_catch(&err) == 0); /* idempotent: the saved ones stay */
  sigaction(SIGTERM, NULL, &sa);
  CHECK(sa.sa_handler != SIG_DFL && !(sa.sa_flags & SA_RESTART));
  /* A write to a pipe nobody reads fails with EPIPE instead of killing. */
  CHECK(handler_of(SIGPIPE) == SIG_IGN);
  int pfd[2];
  CHECK(pipe(pfd) == 0);
  close(pfd[0]);
  errno = 0;
  CHECK(write(pfd[1], "x", 1) == -1 && errno == EPIPE);
  close(pfd[1]);
  CHECK(handler_of(SIGINT) == sa.sa_handler && handler_of(SIGHUP) == sa.sa_handler);

  /* The first signal is the pending one; later ones are counted. */
  raise(SIGTERM);
  raise(SIGHUP);
  CHECK(fsn_signals_pending(&count) == SIGTERM && count == 2);
  CHECK(!prev_hup_seen);
  CHECK_STR(fsn_signal_name(SIGTERM), "SIGTERM");
  CHECK(fsn_signal_name(SIGUSR1) == NULL);
  fsn_signals_clear();
  CHECK(fsn_signals_pending(&count) == 0 && count == 0);

  /* A signal caught before the wait starts ends it at once (a 20 s timeout
   * would show a lost one), and again on every call until cleared. */
  fsn_proc sleeper, quick;
  char *sleep_argv[] = {"sleep", "30", NULL};
  char *true_argv[] = {"true", NULL};
  CHECK(spawn(&sleeper, sleep_argv) == 0);
  fsn_proc *ps[] = {&sleeper, &quick};
  raise(SIGINT);
  CHECK(fsn_proc_wait_any(ps, 1, 20000, &sig) == -2 && sig == SIGINT);
  sig = -1;
  CHECK(fsn_proc_wait_any(ps, 1, 20000, &sig) == -2 && sig == SIGINT);
  /* A finished child is still returned before the pending signal. */
  CHECK(spawn(&quick, true_argv) == 0);
  fsn_proc *q = &quick;
  CHECK(fsn_proc_wait_any(&q, 1, -1, NULL) == 0);
  CHECK(fsn_proc_wait_any(ps, 2, 20000, &sig) == 1);
  fsn_proc_close(&quick);
  fsn_signals_clear();
  CHECK(fsn_proc_wait_any(ps, 1, 30, &sig) == -1); /* a plain timeout again */

  /* A signal arriving during the wait ends it, named. */
  fsn_proc killer;
  char *hup_argv[] = {"sh", "-c", "sleep 0.2; kill -HUP $PPID", NULL};
  CHECK(spawn(&killer, hup_argv) == 0);
  sig = -1;
  CHECK(fsn_proc_wait_any(ps, 1, 20000, &sig) == -2 && sig == SIGHUP);
  CHECK(fsn_signals_pending(&count) == SIGHUP && count == 1 && !prev_hup_seen);
  fsn_signals_clear();
  fsn_proc_close(&killer);

  /* A signal handled on another thread (a process-directed one may land on
   * any thread that does not block it) ends the wait too. */
  pthread_t other;
  CHECK(pthread_create(&other, NULL, raise_term_later, NULL) == 0);
  sig = -1;
  CHECK(fsn_proc_wait_any(ps, 1, 20000, &sig) == -2 && sig == SIGTERM);
  pthread_join(other, NULL);
  fsn_signals_clear();
  CHECK(fsn_proc_wait_any(ps, 1, 30, &sig) == -1); /* nothing left over */

  /* An uninterruptible wait (proc.run, Process:result) goes on to the end;
   * the signal stays pending for the caller's next safe point. */
  fsn_proc runner;
  char *term_argv[] = {"sh", "-c", "kill -TERM $PPID; sleep 0.2; echo done", NULL};
  CHECK(spawn(&runner, term_argv) == 0);
  fsn_proc *r = &runner;
  CHECK(fsn_proc_wait_any(&r, 1, -1, NULL) == 0);
  CHECK(runner.status == 0);
  CHECK_STR(text(&runner.out), "done\n");
  CHECK(fsn_signals_pending(&count) == SIGTERM && count == 1);
  fsn_proc_close(&runner);
  fsn_signals_clear();

  /* Children start with default dispositions and nothing blocked, even
   * while the parent catches, ignores or blocks. */
  sigset_t block, old;
  sigemptyset(&block);
  sigaddset(&block, SIGHUP);
  sigprocmask(SIG_BLOCK, &block, &old);
  signal(SIGPIPE, SIG_IGN);
  fsn_proc cat;
  char *cat_argv[] = {"cat", "/proc/self/status", NULL};
  CHECK(spawn(&cat, cat_argv) == 0);
  signal(SIGPIPE, SIG_DFL);
  sigprocmask(SIG_SETMASK, &old, NULL);
  fsn_proc *c = &cat;
  CHECK(fsn_proc_wait_any(&c, 1, -1, NULL) == 0);
  const char *status = text(&cat.out);
  CHECK(strstr(status, "SigBlk:\t0000000000000000\n") != NULL);
  CHECK(strstr(status, "SigIgn:\t0000000000000000\n") != NULL);
  CHECK(strstr(status, "SigCgt:\t0000000000000000\n") != NULL);
  fsn_proc_close(&cat);

  /* Release restores what catch found; the pending signal survives it but
   * no longer ends a wait. */
  raise(SIGHUP);
  fsn_signals_release();
  fsn_signals_release();
  CHECK(handler_of(SIGHUP) == prev_hup);
  CHECK(handler_of(SIGINT) == SIG_IGN);
  CHECK(handler_of(SIGTERM) == SIG_DFL);
  CHECK(handler_of(SIGPIPE) == SIG_DFL);
  CHECK(fsn_signals_pending(&count) == SIGHUP);
  CHECK(fsn_proc_wait_any(ps, 1, 30, &sig) == -1);
  fsn_signals_clear();
  raise(SIGHUP);
  CHECK(prev_hup_seen && fsn_signals_pending(NULL) == 0);

  /* A disposition someone else changed since catch is left alone. */
  CHECK(fsn_signals_catch(&err) == 0);
  signal(SIGHUP, foreign);
  fsn_signals_release();
  CHECK(handler_of(SIGHUP) == foreign);
  CHECK(handler_of(SIGINT) == SIG_IGN);

  fsn_proc_close(&sleeper);
  return check_done("test_signals");
}
