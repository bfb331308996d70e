/* fork/exec with a CLOEXEC error pipe, pidfd-driven waits. */
#define _GNU_SOURCE
#include "proc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
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

/* Resolves a bare program name against PATH, as execvp would. */
static int resolve(const char *prog, char *const *envp, char *out, size_t cap, fsn_err *err) {
  if (!*prog) return fsn_fail(err, "ENOENT", "spawn: empty program name");
  if (strchr(prog, '/')) {
    if (strlen(prog) >= cap) return fsn_fail(err, "ENAMETOOLONG", "spawn '%s': name too long", prog);
    strcpy(out, prog);
    if (access(out, X_OK) != 0) return fsn_fail_errno(err, errno, "spawn '%s'", prog);
    return 0;
  }
  const char *path = env_get(envp, "PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  int saw_eacces = 0;
  while (*path) {
    const char *colon = strchr(path, ':');
    size_t dl = colon ? (size_t)(colon - path) : strlen(path);
    if (dl + strlen(prog) + 2 < cap) {
      if (dl == 0) { out[0] = '.'; dl = 1; } else memcpy(out, path, dl);
      out[dl] = '/';
      strcpy(out + dl + 1, prog);
      if (access(out, X_OK) == 0) return 0;
      if (errno == EACCES) saw_eacces = 1;
    }
    if (!colon) break;
    path = colon + 1;
  }
  if (saw_eacces) return fsn_fail(err, "EACCES", "spawn '%s': permission denied", prog);
  return fsn_fail(err, "ENOENT", "spawn '%s': not found in PATH", prog);
}

static int ring_init(fsn_ring *r, size_t cap) {
  memset(r, 0, sizeof *r);
  r->cap = cap;
  if (cap == 0) return 0;
  r->data = malloc(cap);
  return r->data ? 0 : -1;
}

static void ring_add(fsn_ring *r, const char *p, size_t n) {
  r->total += n;
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
  if (r->len < r->cap) {
    memcpy(out, r->data, r->len);
    return r->len;
  }
  size_t tail = r->cap - r->head;
  memcpy(out, r->data + r->head, tail);
  memcpy(out + tail, r->data, r->head);
  return r->len;
}

static void child(const fsn_spawn_opts *o, const char *path, int in_fd, int out_w,
                  int err_w, int report) __attribute__((noreturn));

static void child(const fsn_spawn_opts *o, const char *path, int in_fd, int out_w,
                  int err_w, int report) {
  /* Only async-signal-safe calls from here on. */
  setpgid(0, 0);
  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++)
    if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (dup2(in_fd, 0) < 0 || dup2(out_w, 1) < 0 || dup2(err_w, 2) < 0) goto fail;
  if (o->cwd && chdir(o->cwd) != 0) goto fail;
  /* Descriptors Lua or the host opened without CLOEXEC must not leak into
   * icp (a leaked lock fd would keep a lock alive). */
  if (syscall(SYS_close_range, 3U, UINT_MAX, CLOSE_RANGE_CLOEXEC) != 0) {
    for (int fd = 3; fd < 1024; fd++)
      if (fd != report) fcntl(fd, F_SETFD, FD_CLOEXEC);
  }
  for (size_t i = 0; i < o->n_inherit; i++)
    if (o->inherit_fds[i] > 2 && fcntl(o->inherit_fds[i], F_SETFD, 0) != 0) goto fail;
  execve(path, o->argv, o->envp);
fail:;
  int e = errno;
  ssize_t w = write(report, &e, sizeof e);
  (void)w;
  _exit(127);
}

int fsn_proc_spawn(fsn_proc *p, const fsn_spawn_opts *o, fsn_err *err) {
  fsn_proc_init(p);
  char path[4096];
  if (!o->argv || !o->argv[0]) return fsn_fail(err, "EINVAL", "spawn: empty argv");
  if (resolve(o->argv[0], o->envp, path, sizeof path, err) != 0) return -1;
  if (ring_init(&p->out, o->capture_limit) || ring_init(&p->err, o->capture_limit)) {
    fsn_proc_close(p);
    return fsn_fail(err, "ENOMEM", "out of memory");
  }
  int in_fd = -1, outp[2] = {-1, -1}, errp[2] = {-1, -1}, rep[2] = {-1, -1};
  int rc = 0;
  if (o->stdin_data) {
    in_fd = memfd_create("fleetsnap-stdin", MFD_CLOEXEC);
    if (in_fd < 0 || fsn_write_all(in_fd, o->stdin_data, o->stdin_len) != 0 ||
        lseek(in_fd, 0, SEEK_SET) != 0)
      rc = fsn_fail_errno(err, errno, "spawn '%s': stdin", o->argv[0]);
  } else {
    in_fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (in_fd < 0) rc = fsn_fail_errno(err, errno, "spawn '%s': /dev/null", o->argv[0]);
  }
  if (rc == 0 && (pipe2(outp, O_CLOEXEC) || pipe2(errp, O_CLOEXEC) || pipe2(rep, O_CLOEXEC)))
    rc = fsn_fail_errno(err, errno, "spawn '%s': pipe", o->argv[0]);
  pid_t pid = -1;
  if (rc == 0) {
    pid = fork();
    if (pid < 0) rc = fsn_fail_errno(err, errno, "spawn '%s': fork", o->argv[0]);
    else if (pid == 0) child(o, path, in_fd, outp[1], errp[1], rep[1]);
  }
  if (in_fd >= 0) close(in_fd);
  if (outp[1] >= 0) close(outp[1]);
  if (errp[1] >= 0) close(errp[1]);
  if (rep[1] >= 0) close(rep[1]);
  if (rc == 0) {
    setpgid(pid, pid); /* either side may win the race; both set it */
    int e = 0;
    size_t got = 0;
    fsn_read_all(rep[0], &e, sizeof e, &got);
    if (got == sizeof e) {
      /* Caught signals are installed without SA_RESTART. */
      while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {}
      rc = fsn_fail_errno(err, e, "spawn '%s'", o->argv[0]);
    }
  }
  if (rep[0] >= 0) close(rep[0]);
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
  fcntl(p->out_fd, F_SETFL, O_NONBLOCK);
  fcntl(p->err_fd, F_SETFL, O_NONBLOCK);
  p->pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (p->pidfd >= 0) fcntl(p->pidfd, F_SETFD, FD_CLOEXEC);
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
    if (n > 0) { ring_add(r, chunk, (size_t)n); continue; }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && errno == EAGAIN) return;
    close(*fd); /* EOF or a read error: this stream is over */
    *fd = -1;
  }
}

static void reap(fsn_proc *p) {
  if (p->reaped || p->pid <= 0) return;
  int st;
  pid_t r = waitpid(p->pid, &st, WNOHANG);
  if (r == 0) return;
  p->reaped = 1;
  p->end_ms = fsn_now_ms();
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

static long long next_event(const fsn_proc *p) {
  if (p->finished) return 0;
  if (p->term_sent) return p->kill_at_ms;
  return p->deadline_ms;
}

int fsn_proc_wait_any(fsn_proc *const *ps, size_t n, long timeout_ms, int *sig) {
  long long end = timeout_ms >= 0 ? fsn_now_ms() + timeout_ms : 0;
  struct pollfd stackfds[96];
  struct pollfd *fds = n * 3 <= 96 ? stackfds : malloc(n * 3 * sizeof *fds);
  int found = -1;
  for (;;) {
    for (size_t i = 0; i < n && found < 0; i++) {
      fsn_proc_step(ps[i]);
      if (ps[i]->finished) found = (int)i;
    }
    if (found >= 0) break;
    long long now = fsn_now_ms();
    if (timeout_ms >= 0 && now >= end) break;
    long long wake = timeout_ms >= 0 ? end : 0;
    nfds_t k = 0;
    int need_tick = 0;
    for (size_t i = 0; i < n; i++) {
      const fsn_proc *p = ps[i];
      long long ev = next_event(p);
      if (ev && (!wake || ev < wake)) wake = ev;
      if (!fds) { need_tick = 1; continue; }
      if (p->out_fd >= 0) fds[k++] = (struct pollfd){p->out_fd, POLLIN, 0};
      if (p->err_fd >= 0) fds[k++] = (struct pollfd){p->err_fd, POLLIN, 0};
      if (!p->reaped) {
        if (p->pidfd >= 0) fds[k++] = (struct pollfd){p->pidfd, POLLIN, 0};
        else need_tick = 1;
      }
    }
    long long wait = wake ? wake - now : -1;
    if (wait < 0 && wake) wait = 0;
    if (need_tick && (wait < 0 || wait > 10)) wait = 10;
    if (wait > INT_MAX) wait = INT_MAX;
    if (!sig) {
      poll(fds ? fds : stackfds, fds ? k : 0, (int)wait); /* EINTR: look again */
    } else if (fsn_signals_ppoll(fds ? fds : stackfds, fds ? k : 0, (int)wait, sig) < 0 &&
               errno == EINTR) {
      found = -2; /* a signal: the caller decides (contain, then exit) */
      break;
    }
  }
  if (fds != stackfds) free(fds);
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
