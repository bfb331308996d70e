/* clone(CLONE_VM | CLONE_VFORK) + execve (no copy of the parent), pidfd-driven waits. */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <sched.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pathwalk.h"
#include "signals.h"

#ifndef CLOSE_RANGE_CLOEXEC
#define CLOSE_RANGE_CLOEXEC (1U << 2)
#endif

long long fsn_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void fsn_proc_init(fsn_proc *p) {
  memset(p, 0, sizeof *p);
  p->pidfd = p->out_fd = p->err_fd = -1;
}

/* {=== environment ===} */

static size_t name_len(const char *kv) {
  const char *eq = strchr(kv, '=');
  return eq ? (size_t)(eq - kv) : strlen(kv);
}

static int listed(const char *kv, char *const *names, size_t n, int names_have_values) {
  size_t len = name_len(kv);
  for (size_t i = 0; i < n; i++) {
    size_t l = names_have_values ? name_len(names[i]) : strlen(names[i]);
    if (l == len && strncmp(kv, names[i], len) == 0) return 1;
  }
  return 0;
}

char **fsn_env_build(char *const *base, char *const *set, size_t nset,
                     char *const *unset, size_t nunset) {
  size_t nbase = 0;
  while (base && base[nbase]) nbase++;
  char **env = malloc((nbase + nset + 1) * sizeof *env);
  if (!env) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < nbase; i++) {
    if (listed(base[i], unset, nunset, 0) || listed(base[i], set, nset, 1)) continue;
    env[k++] = base[i];
  }
  /* What the caller sets explicitly always reaches the child. */
  for (size_t i = 0; i < nset; i++) env[k++] = set[i];
  env[k] = NULL;
  return env;
}

/* {=== spawn ===} */

static const char *env_get(char *const *envp, const char *name) {
  size_t n = strlen(name);
  for (size_t i = 0; envp && envp[i]; i++)
    if (!strncmp(envp[i], name, n) && envp[i][n] == '=') return envp[i] + n + 1;
  return NULL;
}

/* The last name found, per thread: a run spawns the same program hundreds
 * of times, and the search was an access() per PATH entry each time. */
static __thread char last_prog[256], last_path[2048], last_out[4096];

/* Resolves a bare program name against PATH, as execvp would. *cached: the
 * name came from the cache unchecked; an exec that then fails for want of
 * the file forgets it and resolves again (fsn_proc_spawn), so the answer is
 * the one a fresh search gives, without an access() per spawn. */
static int resolve(const char *prog, char *const *envp, char *out, size_t cap, int *cached,
                   fsn_err *err) {
  *cached = 0;
  if (!*prog) return fsn_fail(err, "ENOENT", "spawn: empty program name");
  if (strchr(prog, '/')) {
    if (strlen(prog) >= cap) return fsn_fail(err, "ENAMETOOLONG", "spawn '%s': name too long", prog);
    strcpy(out, prog);
    if (access(out, X_OK) != 0) return fsn_fail_errno(err, errno, "spawn '%s'", prog);
    return 0;
  }
  const char *path = env_get(envp, "PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  if (strlen(prog) < sizeof last_prog && strlen(path) < sizeof last_path && !strcmp(prog, last_prog) &&
      !strcmp(path, last_path) && strlen(last_out) < cap) {
    strcpy(out, last_out);
    *cached = 1;
    return 0;
  }
  const char *search = path;
  int saw_eacces = 0;
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t dl = colon ? (size_t)(colon - path) : strlen(path);
    if (dl + strlen(prog) + 2 < cap) {
      if (dl == 0) { out[0] = '.'; dl = 1; } else memcpy(out, path, dl);
      out[dl] = '/';
      strcpy(out + dl + 1, prog);
      if (access(out, X_OK) == 0) {
        if (strlen(prog) < sizeof last_prog && strlen(search) < sizeof last_path &&
            strlen(out) < sizeof last_out) {
          strcpy(last_prog, prog);
          strcpy(last_path, search);
          strcpy(last_out, out);
        }
        return 0;
      }
      if (errno == EACCES) saw_eacces = 1;
    }
    if (!colon) break;
    path = colon + 1;
  }
  if (saw_eacces) return fsn_fail(err, "EACCES", "spawn '%s': permission denied", prog);
  return fsn_fail(err, "ENOENT", "spawn '%s': not found in PATH", prog);
}

/* A ring starts empty and grows (doubling, from RING_START) as output
 * arrives, up to its limit: most icp commands print a few hundred bytes, and
 * two rings of the limit per spawn were megabytes malloc'd for nothing.
 * While it is below its limit the ring is linear (head == len, never
 * wrapped), so growing is a plain realloc; it wraps only at the limit. */
#define RING_START 4096

void fsn_ring_init(fsn_ring *r, size_t limit) {
  memset(r, 0, sizeof *r);
  r->limit = limit;
}

/* Makes room for len + n bytes, up to the limit. Out of memory, the ring
 * keeps the capacity it has as its limit: a shorter tail, the count still
 * exact (the child's output must be drained whatever happens). */
static void ring_grow(fsn_ring *r, size_t n) {
  if (r->cap >= r->limit || r->len + n <= r->cap) return;
  size_t want = r->cap ? r->cap : RING_START;
  while (want < r->len + n && want < r->limit) want *= 2;
  if (want > r->limit) want = r->limit;
  char *d = realloc(r->data, want);
  if (!d) {
    r->limit = r->cap;
    return;
  }
  r->data = d;
  r->cap = want;
  /* A full linear ring has head 0 (it wrapped onto the start exactly):
   * the next byte goes after the kept ones, not over the first. */
  r->head = r->len;
}

void fsn_ring_add(fsn_ring *r, const char *p, size_t n) {
  r->total += n;
  ring_grow(r, n);
  if (r->cap == 0) return;
  if (n >= r->cap) {
    memcpy(r->data, p + n - r->cap, r->cap);
    r->head = 0;
    r->len = r->cap;
    return;
  }
  size_t first = r->cap - r->head < n ? r->cap - r->head : n;
  memcpy(r->data + r->head, p, first);
  memcpy(r->data, p + first, n - first);
  r->head = (r->head + n) % r->cap;
  r->len = r->len + n > r->cap ? r->cap : r->len + n;
}

size_t fsn_ring_copy(const fsn_ring *r, char *out) {
  if (r->len == 0) return 0; /* data may be NULL */
  if (r->len < r->cap) {
    memcpy(out, r->data, r->len);
    return r->len;
  }
  size_t tail = r->cap - r->head;
  memcpy(out, r->data + r->head, tail);
  memcpy(out + tail, r->data, r->head);
  return r->len;
}

/* clone(CLONE_VM | CLONE_VFORK), not fork: the child borrows the parent's
 * memory on a small stack of its own until it execs, so spawning costs the
 * same at 20 MB and at 2 GB of Lua heap (fork copied every page-table entry,
 * then took a copy-on-write fault for each page the parent touched before the
 * exec). This is what glibc's posix_spawn does, but posix_spawn cannot give
 * the same child: glibc 2.36 leaves its two internal signals (32, 33) ignored
 * across the exec, and icp must start with nothing ignored.
 *
 * Sharing memory makes the child's rules stricter than a fork child's: it
 * may touch nothing of the parent's but its argument block (the exec error
 * goes back through it), so the signal calls are raw system calls (ASan's and
 * glibc's sigaction wrappers keep tables in memory the parent owns), and the
 * parent blocks every signal around the clone so that none of its handlers
 * (engine.signals' flag, lua5.4's hook) can run in the child before the
 * child has reset them to the default. */

struct child_args {
  const fsn_spawn_opts *o;
  const char *path;
  int in_fd, out_w, err_w;
  volatile int err; /* the failing errno, written by the child */
  volatile int closed; /* set by the child: close_range closed every other fd */
};

/* The kernel's sigset: _NSIG bits (64 here, 128 on MIPS). */
#define KSIGSET_BYTES (_NSIG / 8)

__attribute__((no_sanitize("address", "undefined")))
static int child(void *arg) {
  struct child_args *a = arg;
  const fsn_spawn_opts *o = a->o;
  syscall(SYS_setpgid, 0, 0);
  /* All-zero kernel sigaction = SIG_DFL, no flags, on every layout. */
  unsigned long dfl[8] = {0};
  for (int s = 1; s < _NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) syscall(SYS_rt_sigaction, s, dfl, NULL, KSIGSET_BYTES);
  unsigned long none[2] = {0, 0};
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, none, NULL, KSIGSET_BYTES);
  if (dup2(a->in_fd, 0) < 0 || dup2(a->out_w, 1) < 0 || dup2(a->err_w, 2) < 0) goto fail;
  /* The pipes are made O_NONBLOCK for the parent's reads; the flag belongs
   * to each end's open file description, so clearing it here gives icp
   * blocking writes without touching the parent's read ends (and saves the
   * parent two fcntl calls per spawn). */
  if (fcntl(1, F_SETFL, 0) != 0 || fcntl(2, F_SETFL, 0) != 0) goto fail;
  if (o->cwd && chdir(o->cwd) != 0) goto fail;
  /* Descriptors Lua or the host opened without CLOEXEC must not leak into
   * icp (a leaked lock fd would keep a lock alive). They are closed here,
   * before the exec, not left to close-on-exec: the parent wakes when the
   * exec replaces the memory, before the kernel closes CLOEXEC descriptors,
   * and spawn must return only once the child holds exactly the
   * descriptors it keeps (a lock the parent closes next must be free).
   * Every range between the inherited descriptors goes; no allocation (the
   * memory is the parent's). */
  unsigned lo = 3;
  int closed = 1;
  for (;;) {
    unsigned next = UINT_MAX;
    for (size_t i = 0; i < o->n_inherit; i++) {
      int fd = o->inherit_fds[i];
      if (fd > 2 && (unsigned)fd >= lo && (unsigned)fd < next) next = (unsigned)fd;
    }
    unsigned hi = next == UINT_MAX ? UINT_MAX : next - 1;
    if (next > lo && syscall(SYS_close_range, lo, hi, 0U) != 0) closed = 0;
    if (next == UINT_MAX) break;
    lo = next + 1;
  }
  if (!closed) {
    /* No close_range (before Linux 5.9): close-on-exec for what is left,
     * and the parent waits on its barrier pipe instead. */
    for (int fd = 3; fd < 1024; fd++) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  a->closed = closed;
  for (size_t i = 0; i < o->n_inherit; i++)
    if (o->inherit_fds[i] > 2 && fcntl(o->inherit_fds[i], F_SETFD, 0) != 0) goto fail;
  execve(a->path, o->argv, o->envp);
fail:
  a->err = errno ? errno : ECHILD;
  /* Not _exit: a sanitizer intercepts it and would run its exit hooks on
   * the parent's memory. */
  syscall(SYS_exit, 127);
  return 127;
}

/* The child's stack, made once per spawning thread and reused: once a
 * CLONE_VFORK clone returns, the child has exec'd (or exited) and no longer
 * runs on it. Mapping and unmapping one per spawn cost page faults and a
 * TLB flush each, the largest part of a spawn's CPU in the parent. */
static __thread char *spawn_stack;

/* Returns the child's pid, or -1 with errno set (the exec's or the clone's). */
static pid_t spawn_child(struct child_args *a) {
  /* Enough for child() and the libc calls it makes, sanitized or not; pages
   * never touched cost nothing. One guard page below catches an overflow. */
  size_t page = (size_t)sysconf(_SC_PAGESIZE), size = 256 * 1024;
  if (!spawn_stack) {
    char *m = mmap(NULL, size + page, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (m == MAP_FAILED) return -1;
    mprotect(m, page, PROT_NONE);
    spawn_stack = m;
  }
  char *stack = spawn_stack;
  /* The vfork wake-up comes when exec replaces the memory, before the
   * kernel closes the CLOEXEC descriptors: a lock the parent closes right
   * after spawn returns could still be held by the child's copy. The child
   * closes them itself before the exec (see child()); only where it could
   * not (no close_range) does spawn wait for this pipe's EOF, which comes
   * after the exec's close. Whether close_range works is learned from the
   * first spawn and does not change (same kernel): a pipe, three closes and
   * a read per spawn saved. The exec's errno comes back through the shared
   * memory (a->err), as in glibc's posix_spawn. */
  static int child_closes;
  int barrier[2] = {-1, -1};
  if (!__atomic_load_n(&child_closes, __ATOMIC_RELAXED) && pipe2(barrier, O_CLOEXEC) != 0) return -1;
  unsigned long all[2] = {~0UL, ~0UL}, old[2] = {0, 0};
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, all, old, KSIGSET_BYTES);
  a->err = 0;
  a->closed = 0;
  pid_t pid = clone(child, stack + page + size, CLONE_VM | CLONE_VFORK | SIGCHLD, a);
  int e = errno;
  syscall(SYS_rt_sigprocmask, SIG_SETMASK, old, NULL, KSIGSET_BYTES);
  if (barrier[0] >= 0) {
    close(barrier[1]);
    if (pid > 0) {
      char c;
      while (read(barrier[0], &c, 1) < 0 && errno == EINTR) {}
    }
    close(barrier[0]);
  }
  if (pid > 0 && a->closed) __atomic_store_n(&child_closes, 1, __ATOMIC_RELAXED);
  if (pid < 0) {
    errno = e;
    return -1;
  }
  /* CLONE_VFORK: the child has exec'd or exited by now. */
  if (a->err) {
    e = a->err;
    /* Caught signals are installed without SA_RESTART. */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
    errno = e;
    return -1;
  }
  return pid;
}

/* /dev/null for the children's stdin, opened once per process (CLOEXEC:
 * the child dup2s it to 0) instead of an open and a close per spawn. Only
 * this file touches it, and nothing closes it, so the number always names
 * /dev/null; a fork child inherits it with the rest. */
static int devnull_fd = -1;

static int devnull(void) {
  int fd = __atomic_load_n(&devnull_fd, __ATOMIC_ACQUIRE);
  if (fd >= 0) return fd;
  fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1; /* tried again by the next spawn */
  int none = -1;
  if (!__atomic_compare_exchange_n(&devnull_fd, &none, fd, 0, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE)) {
    close(fd); /* another thread's won */
    fd = none;
  }
  return fd;
}

int fsn_proc_spawn(fsn_proc *p, const fsn_spawn_opts *o, fsn_err *err) {
  fsn_proc_init(p);
  char path[4096];
  int cached;
  if (!o->argv || !o->argv[0]) return fsn_fail(err, "EINVAL", "spawn: empty argv");
  if (resolve(o->argv[0], o->envp, path, sizeof path, &cached, err) != 0) return -1;
  fsn_ring_init(&p->out, o->capture_limit);
  fsn_ring_init(&p->err, o->capture_limit);
  int in_fd = -1, outp[2] = {-1, -1}, errp[2] = {-1, -1};
  int rc = 0, own_in = 0;
  if (o->stdin_data) {
    in_fd = memfd_create("fleetsnap-stdin", MFD_CLOEXEC);
    own_in = in_fd >= 0;
    if (in_fd < 0 || fsn_write_all(in_fd, o->stdin_data, o->stdin_len) != 0 ||
        lseek(in_fd, 0, SEEK_SET) != 0)
      rc = fsn_fail_errno(err, errno, "spawn '%s': stdin", o->argv[0]);
  } else {
    in_fd = devnull();
    if (in_fd < 0) rc = fsn_fail_errno(err, errno, "spawn '%s': /dev/null", o->argv[0]);
  }
  /* O_NONBLOCK for the parent's reads; the child clears it on its ends. */
  if (rc == 0 && (pipe2(outp, O_CLOEXEC | O_NONBLOCK) || pipe2(errp, O_CLOEXEC | O_NONBLOCK)))
    rc = fsn_fail_errno(err, errno, "spawn '%s': pipe", o->argv[0]);
  pid_t pid = -1;
  if (rc == 0) {
    /* The child has set its group and exec'd (or failed and been reaped)
     * before this returns: no setpgid race for the parent to close. */
    struct child_args a = {o, path, in_fd, outp[1], errp[1], 0, 0};
    pid = spawn_child(&a);
    if (pid < 0 && cached && (errno == ENOENT || errno == EACCES || errno == ENOTDIR)) {
      /* The remembered file is gone (or no longer executable): search the
       * PATH again, as the access() check used to before each spawn. */
      last_prog[0] = 0;
      if (resolve(o->argv[0], o->envp, path, sizeof path, &cached, err) != 0) rc = -1;
      else pid = spawn_child(&a);
    }
    if (rc == 0 && pid < 0) rc = fsn_fail_errno(err, errno, "spawn '%s'", o->argv[0]);
  }
  if (own_in) close(in_fd);
  if (outp[1] >= 0) close(outp[1]);
  if (errp[1] >= 0) close(errp[1]);
  if (rc != 0) {
    if (outp[0] >= 0) close(outp[0]);
    if (errp[0] >= 0) close(errp[0]);
    free(p->out.data);
    free(p->err.data);
    fsn_proc_init(p);
    return -1;
  }
  p->pid = pid;
  p->out_fd = outp[0];
  p->err_fd = errp[0];
  /* pidfd_open(2): the descriptor is always close-on-exec. */
  p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  p->start_ms = fsn_now_ms();
  p->deadline_ms = o->timeout_ms > 0 ? p->start_ms + o->timeout_ms : 0;
  p->grace_ms = o->kill_grace_ms > 0 ? o->kill_grace_ms : 2000;
  return 0;
}

/* {=== progress ===} */

static void drain(int *fd, fsn_ring *r) {
  char chunk[65536];
  while (*fd >= 0) {
    ssize_t n = read(*fd, chunk, sizeof chunk);
    if (n > 0) { fsn_ring_add(r, chunk, (size_t)n); continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(*fd); /* EOF or a read error: this stream is over */
    *fd = -1;
  }
}

static int64_t tv_ns(struct timeval tv) { return (int64_t)tv.tv_sec * 1000000000 + (int64_t)tv.tv_usec * 1000; }

void fsn_cpu_ns(int64_t *self, int64_t *children) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  *self = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
  getrusage(RUSAGE_CHILDREN, &ru);
  *children = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
}

static void reap(fsn_proc *p) {
  if (p->reaped || p->pid <= 0) return;
  int st;
  struct rusage ru;
  pid_t r = wait4(p->pid, &st, WNOHANG, &ru);
  if (r == 0) return;
  p->reaped = 1;
  p->end_ms = fsn_now_ms();
  if (r > 0) {
    p->cpu_ns = tv_ns(ru.ru_utime) + tv_ns(ru.ru_stime);
    p->maxrss_kib = ru.ru_maxrss;
  }
  if (r < 0) { p->status = -1; return; }
  if (WIFEXITED(st)) { p->status = WEXITSTATUS(st); p->signal = 0; }
  else if (WIFSIGNALED(st)) { p->status = -1; p->signal = WTERMSIG(st); }
  if (p->pidfd >= 0) { close(p->pidfd); p->pidfd = -1; }
}

void fsn_proc_step(fsn_proc *p) {
  if (p->finished || p->pid <= 0) return;
  drain(&p->out_fd, &p->out);
  drain(&p->err_fd, &p->err);
  reap(p);
  long long now = fsn_now_ms();
  if (p->deadline_ms && now >= p->deadline_ms && !p->term_sent) {
    p->timed_out = 1;
    p->term_sent = 1;
    kill(-p->pid, SIGTERM);
    if (!p->reaped) kill(p->pid, SIGTERM);
    p->kill_at_ms = now + p->grace_ms;
  }
  if (p->term_sent && !p->kill_sent && now >= p->kill_at_ms) {
    p->kill_sent = 1;
    kill(-p->pid, SIGKILL);
    if (!p->reaped) kill(p->pid, SIGKILL);
    p->kill_at_ms = now + p->grace_ms;
  }
  /* A descendant outside the group may hold the pipes after the kill: give
   * it one more grace period, then stop listening. */
  if (p->kill_sent && p->reaped && now >= p->kill_at_ms) {
    if (p->out_fd >= 0) { close(p->out_fd); p->out_fd = -1; }
    if (p->err_fd >= 0) { close(p->err_fd); p->err_fd = -1; }
  }
  if (p->reaped && p->out_fd < 0 && p->err_fd < 0) p->finished = 1;
}

static int fd_ready(int fd) {
  struct pollfd p = {fd, POLLIN, 0};
  return poll(&p, 1, 0) > 0;
}

static long long next_event(const fsn_proc *p) {
  if (p->finished) return 0;
  if (p->term_sent) return p->kill_at_ms;
  return p->deadline_ms;
}

int fsn_proc_wait_any(fsn_proc *const *ps, size_t n, long timeout_ms, int *sig) {
  return fsn_wait_any(ps, n, NULL, 0, timeout_ms, sig);
}

/* Steps every process and returns the index of a finished one, or -1. */
static int step_all(fsn_proc *const *ps, size_t n) {
  for (size_t i = 0; i < n; i++) {
    fsn_proc_step(ps[i]);
    if (ps[i]->finished) return (int)i;
  }
  return -1;
}

/* One poll over every process's pipes and pidfd (and the task
 * descriptors), then progress only for the processes something happened
 * to: a descriptor fired, a deadline passed, or no pidfd to tell. Stepping
 * all of them on every wakeup made each wakeup cost a read and a waitpid
 * per running command: O(running) system calls per event, which at a few
 * dozen commands in flight was most of the scheduler's CPU. The first poll
 * of a call with a zero timeout does not sleep; any other call sleeps at
 * once for its computed time (a poll returns at once for what already
 * happened, so a first non-sleeping poll only cost a ppoll and two
 * sigprocmask per wait). */
int fsn_wait_any(fsn_proc *const *ps, size_t n, const int *tfds, size_t nt,
                 long timeout_ms, int *sig) {
  long long end = timeout_ms >= 0 ? fsn_now_ms() + timeout_ms : 0;
  struct pollfd stackfds[96];
  int stackowner[96];
  unsigned char stackhot[32];
  size_t want = n * 3 + nt;
  struct pollfd *fds = want <= 96 ? stackfds : malloc(want * sizeof *fds);
  int *owner = want <= 96 ? stackowner : malloc(want * sizeof *owner);
  unsigned char *hot = n <= sizeof stackhot ? stackhot : malloc(n);
  int found = -1;
  if (!fds || !owner || !hot) {
    /* Out of memory: the old way, every process stepped every 10 ms. */
    for (;;) {
      if ((found = step_all(ps, n)) >= 0) break;
      for (size_t j = 0; j < nt && found < 0; j++)
        if (fd_ready(tfds[j])) found = (int)(n + j);
      if (found >= 0 || (timeout_ms >= 0 && fsn_now_ms() >= end)) break;
      struct pollfd none;
      if (!sig) poll(&none, 0, 10);
      else if (fsn_signals_ppoll(&none, 0, 10, sig) < 0 && errno == EINTR) {
        found = step_all(ps, n);
        if (found < 0) found = -2;
        break;
      }
    }
    goto done;
  }
  for (int first = 1;; first = 0) {
    for (size_t i = 0; i < n && found < 0; i++)
      if (ps[i]->finished) found = (int)i;
    if (found >= 0) break;
    long long now = fsn_now_ms();
    long long wake = timeout_ms >= 0 ? end : 0;
    nfds_t k = 0;
    int need_tick = 0;
    for (size_t j = 0; j < nt; j++) {
      owner[k] = -1;
      fds[k++] = (struct pollfd){tfds[j], POLLIN, 0};
    }
    for (size_t i = 0; i < n; i++) {
      const fsn_proc *p = ps[i];
      hot[i] = 0;
      long long ev = next_event(p);
      if (ev && (!wake || ev < wake)) wake = ev;
      if (p->out_fd >= 0) { owner[k] = (int)i; fds[k++] = (struct pollfd){p->out_fd, POLLIN, 0}; }
      if (p->err_fd >= 0) { owner[k] = (int)i; fds[k++] = (struct pollfd){p->err_fd, POLLIN, 0}; }
      if (!p->reaped) {
        if (p->pidfd >= 0) { owner[k] = (int)i; fds[k++] = (struct pollfd){p->pidfd, POLLIN, 0}; }
        else { hot[i] = 1; need_tick = 1; }
      }
    }
    long long wait = first && timeout_ms == 0 ? 0 : (wake ? wake - now : -1);
    if (wait < 0 && wake) wait = 0;
    if (need_tick && (wait < 0 || wait > 10)) wait = 10;
    if (wait > INT_MAX) wait = INT_MAX;
    int r;
    if (!sig) {
      r = poll(fds, k, (int)wait); /* EINTR: look again */
    } else if ((r = fsn_signals_ppoll(fds, k, (int)wait, sig)) < 0 && errno == EINTR) {
      /* A signal: the caller decides (contain, then exit); a process that
       * has finished is still handed over first. */
      found = step_all(ps, n);
      if (found < 0) found = -2;
      break;
    }
    now = fsn_now_ms();
    for (nfds_t q = 0; r > 0 && q < k; q++)
      if (fds[q].revents && owner[q] >= 0) hot[owner[q]] = 1;
    for (size_t i = 0; i < n && found < 0; i++) {
      long long ev = next_event(ps[i]);
      if (hot[i] || (ev && now >= ev)) {
        fsn_proc_step(ps[i]);
        if (ps[i]->finished) found = (int)i;
      }
    }
    for (size_t j = 0; j < nt && found < 0; j++)
      if (r > 0 && fds[j].revents) found = (int)(n + j);
    if (found >= 0) break;
    if (timeout_ms > 0 && now >= end) break;
    if (first && timeout_ms == 0) break;
  }
done:
  if (fds != stackfds) free(fds);
  if (owner != stackowner) free(owner);
  if (hot != stackhot) free(hot);
  return found;
}

int fsn_proc_kill(fsn_proc *p, int sig, fsn_err *err) {
  if (p->pid <= 0 || p->reaped) return 0;
  if (kill(-p->pid, sig) != 0 && kill(p->pid, sig) != 0)
    return fsn_fail_errno(err, errno, "kill process group %ld", (long)p->pid);
  return 0;
}

void fsn_proc_close(fsn_proc *p) {
  if (p->pid > 0 && !p->reaped) {
    kill(-p->pid, SIGKILL);
    kill(p->pid, SIGKILL);
    int st;
    while (waitpid(p->pid, &st, 0) < 0 && errno == EINTR) {}
    p->reaped = 1;
  }
  if (p->out_fd >= 0) close(p->out_fd);
  if (p->err_fd >= 0) close(p->err_fd);
  if (p->pidfd >= 0) close(p->pidfd);
  free(p->out.data);
  free(p->err.data);
  fsn_proc_init(p);
}
