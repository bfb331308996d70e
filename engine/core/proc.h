/* Child processes without a shell: argv + env, a private process group,
 * bounded capture of stdout/stderr (the tail is kept, every byte counted),
 * a timeout that sends SIGTERM to the group and SIGKILL after a grace
 * period, and a poll-based wait over many children at once. */
#ifndef FSN_PROC_H
#define FSN_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "err.h"

/* The last `limit` bytes of a stream, in a buffer grown on demand. */
typedef struct fsn_ring {
  char *data;
  size_t cap;   /* allocated, <= limit */
  size_t limit; /* bytes of tail kept at most */
  size_t head, len;
  uint64_t total; /* every byte seen */
} fsn_ring;

typedef struct fsn_spawn_opts {
  char *const *argv;   /* argv[0] is searched in the child's PATH if it has no '/' */
  char *const *envp;   /* the child's whole environment */
  const char *cwd;     /* NULL: inherit */
  const char *stdin_data; /* NULL: /dev/null */
  size_t stdin_len;
  const int *inherit_fds; /* kept open (same numbers) in the child */
  size_t n_inherit;
  size_t capture_limit;   /* per stream */
  long timeout_ms;        /* <= 0: none */
  long kill_grace_ms;
} fsn_spawn_opts;

typedef struct fsn_proc {
  pid_t pid;       /* 0 when never started */
  int pidfd;       /* -1 if the kernel has no pidfd_open */
  int out_fd, err_fd;
  fsn_ring out, err;
  long long start_ms, end_ms, deadline_ms, kill_at_ms;
  long grace_ms;
  int term_sent, kill_sent, timed_out;
  int reaped, status, signal; /* status -1 when killed by a signal */
  int finished;
  int64_t cpu_ns;  /* user + system of the child and its reaped descendants */
  long maxrss_kib; /* the largest resident set among them */
} fsn_proc;

void fsn_proc_init(fsn_proc *p);
int fsn_proc_spawn(fsn_proc *p, const fsn_spawn_opts *o, fsn_err *err);
/* Non-blocking progress: drain pipes, reap, enforce the timeout. */
void fsn_proc_step(fsn_proc *p);
/* Wait until one of ps[0..n) has finished (exited and its pipes closed);
 * returns its index, or -1 when timeout_ms (< 0: forever) runs out. With
 * sig NULL a signal does not end the wait. Otherwise -2 when a signal
 * interrupted it: *sig is then the signal caught by fsn_signals_catch, or 0
 * for another handler's (lua5.4's SIGINT one). While a caught signal is
 * pending (until fsn_signals_clear) a finished process is still returned
 * first, then -2 comes at once, however many calls ask. */
int fsn_proc_wait_any(fsn_proc *const *ps, size_t n, long timeout_ms, int *sig);
/* The same over processes and descriptors that become readable when their
 * work is done (a background task's eventfd): returns i < n for ps[i],
 * n + j for fds[j]. A finished process wins over a ready descriptor. */
int fsn_wait_any(fsn_proc *const *ps, size_t n, const int *fds, size_t nfds,
                 long timeout_ms, int *sig);
/* Signal the whole process group (no-op once reaped). */
int fsn_proc_kill(fsn_proc *p, int sig, fsn_err *err);
/* Kill the group if the child is still running, reap it, close pipes, free
 * buffers. Idempotent. */
void fsn_proc_close(fsn_proc *p);
void fsn_ring_init(fsn_ring *r, size_t limit);
/* Counts n bytes and keeps the last limit bytes seen (frees nothing: the
 * owner frees data). */
void fsn_ring_add(fsn_ring *r, const char *p, size_t n);
/* Linear copy of a ring's kept tail into out (room for len bytes). */
size_t fsn_ring_copy(const fsn_ring *r, char *out);
long long fsn_now_ms(void);
/* CPU time (user + system) of this process, and of its reaped children. */
void fsn_cpu_ns(int64_t *self, int64_t *children);

/* Builds a child environment: base minus every name in unset, then every
 * "NAME=value" of set (replacing or adding; set wins over unset). */
char **fsn_env_build(char *const *base, char *const *set, size_t nset,
                     char *const *unset, size_t nunset);

#endif
