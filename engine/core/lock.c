/* flock-based locks with human-readable owner info. */
#define _GNU_SOURCE
#include "lock.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pathwalk.h"

static long long now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Returns the descriptor, -1 with err set, or -2 when create is 0 and
 * the file is not there. The lstat keeps a special file from ever being
 * opened (an open can have effects); the file actually opened is checked
 * to be regular by checked_regular, once the lock is held or refused (one
 * fstat serves that check and the holder's size). */
static int open_lock_file(const char *path, int create, fsn_err *err) {
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      const char *kind = S_ISLNK(st.st_mode) ? "a symbolic link"
                         : S_ISDIR(st.st_mode) ? "a directory" : "a special file";
      return fsn_fail(err, "EUNSAFE", "lock '%s': is %s", path, kind);
    }
  } else if (!create && (errno == ENOENT || errno == ENOTDIR)) {
    return -2;
  }
  int fd = open(path, O_RDWR | (create ? O_CREAT : 0) | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC, 0600);
  if (fd < 0) {
    if (!create && (errno == ENOENT || errno == ENOTDIR)) return -2;
    if (errno == ELOOP) return fsn_fail(err, "EUNSAFE", "lock '%s': is a symbolic link", path);
    return fsn_fail_errno(err, errno, "lock '%s'", path);
  }
  return fd;
}

/* The file behind fd is a regular one (it may have been replaced between
 * the lstat and the open); closes fd and fails otherwise. */
static int checked_regular(int fd, const char *path, struct stat *st, fsn_err *err) {
  if (fstat(fd, st) != 0 || !S_ISREG(st->st_mode)) {
    close(fd);
    return fsn_fail(err, "EUNSAFE", "lock '%s': not a regular file", path);
  }
  return 0;
}

/* Reads the owner text into a short one-line description. */
static void describe_owner(int fd, char *out, size_t cap) {
  char text[2048];
  ssize_t n = pread(fd, text, sizeof text - 1, 0);
  if (n <= 0) {
    snprintf(out, cap, "an unknown process (no owner recorded yet)");
    return;
  }
  text[n] = 0;
  char pid[32] = "?", host[256] = "?", started[64] = "?", argv[1024] = "";
  for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
    if (!strncmp(line, "pid=", 4)) snprintf(pid, sizeof pid, "%s", line + 4);
    else if (!strncmp(line, "host=", 5)) snprintf(host, sizeof host, "%s", line + 5);
    else if (!strncmp(line, "started=", 8)) snprintf(started, sizeof started, "%s", line + 8);
    else if (!strncmp(line, "argv=", 5)) snprintf(argv, sizeof argv, "%s", line + 5);
  }
  if (strlen(argv) > 120) strcpy(argv + 117, "...");
  snprintf(out, cap, "pid %s on %s since %s%s%s%s", pid, host, started,
           argv[0] ? " (" : "", argv, argv[0] ? ")" : "");
}

/* One attempt at the lock: the whole file (flock) when range < 0, else an
 * open-file-description lock on the one byte at range. Both belong to the
 * open file description, so a child that inherits the descriptor holds
 * either kind until it exits. 0, or -1 with errno (EWOULDBLOCK when
 * another description holds it). */
static int try_lock(int fd, long long range) {
  if (range < 0) return flock(fd, LOCK_EX | LOCK_NB);
  struct flock fl = {.l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = (off_t)range, .l_len = 1};
  if (fcntl(fd, F_OFD_SETLK, &fl) == 0) return 0;
  if (errno == EACCES || errno == EAGAIN) errno = EWOULDBLOCK;
  return -1;
}

static int acquire(fsn_lock *l, const char *path, long long range, long wait_ms, int create,
                   const char *owner_text, fsn_err *err) {
  l->fd = -1;
  int fd = open_lock_file(path, create, err);
  if (fd < 0) return fd;
  struct stat st;
  int checked = 0;
  long long deadline = now_ms() + (wait_ms > 0 ? wait_ms : 0);
  long step = 1;
  for (;;) {
    if (try_lock(fd, range) == 0) break;
    int e = errno;
    if (e == EINTR) continue;
    if (e != EWOULDBLOCK) {
      close(fd);
      return fsn_fail_errno(err, e, "lock '%s'", path);
    }
    /* Refused: no owner text is read from, and no wait spent on, a file
     * that is not a regular one. */
    if (!checked && checked_regular(fd, path, &st, err) != 0) return -1;
    checked = 1;
    long long left = deadline - now_ms();
    if (wait_ms < 0 || left <= 0) {
      /* A byte of a shared file has no owner text of its own. */
      char who[1600] = "a process that inherited it";
      if (range < 0) describe_owner(fd, who, sizeof who);
      close(fd);
      if (range >= 0) return fsn_fail(err, "ELOCKED", "'%s' (byte %lld) is locked by %s", path, range, who);
      return fsn_fail(err, "ELOCKED", "'%s' is locked by %s", path, who);
    }
    long sleep_ms = step < left ? step : (long)left;
    struct timespec ts = {sleep_ms / 1000, (sleep_ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
    /* Short steps: a lock held for milliseconds by each of many processes
     * in turn (icp-sim's home under 64 concurrent calls) made waiters that
     * had backed off to half a second miss one free moment after another,
     * and a round of calls took seconds. */
    if (step < 16) step *= 2;
  }
  /* Held: the size read now is final (only a holder writes), and the same
   * fstat is the regular-file check. */
  if (checked_regular(fd, path, &st, err) != 0) return -1;
  /* Only the holder touches the content, so a refused attempt never erases
   * the real owner's description. */
  if (owner_text) {
    size_t n = strlen(owner_text);
    /* The text is written over the old one, and the file cut only where an
     * earlier owner's text was longer: a new file (a command lock per
     * operation) or a reused one with text of the same length (the next
     * command of the operation) costs one write, no metadata update. */
    if (pwrite(fd, owner_text, n, 0) != (ssize_t)n || (st.st_size > (off_t)n && ftruncate(fd, (off_t)n) != 0)) {
      int e = errno;
      close(fd);
      return fsn_fail_errno(err, e, "lock '%s': write owner", path);
    }
  }
  l->fd = fd;
  return 0;
}

int fsn_lock_acquire(fsn_lock *l, const char *path, long wait_ms,
                     const char *owner_text, fsn_err *err) {
  return acquire(l, path, -1, wait_ms, 1, owner_text, err);
}

int fsn_lock_acquire_range(fsn_lock *l, const char *path, long long range, long wait_ms, fsn_err *err) {
  if (range < 0) return fsn_fail(err, "EINVAL", "lock '%s': negative byte %lld", path, range);
  return acquire(l, path, range, wait_ms, 1, NULL, err);
}

int fsn_lock_probe(const char *path, long wait_ms, int create, fsn_err *err) {
  return fsn_lock_probe_range(path, -1, wait_ms, create, err);
}

int fsn_lock_probe_range(const char *path, long long range, long wait_ms, int create, fsn_err *err) {
  fsn_lock l;
  int r = acquire(&l, path, range, wait_ms, create, NULL, err);
  if (r == -2) return 0;
  if (r != 0) return -1;
  fsn_lock_release(&l);
  return 0;
}

void fsn_lock_release(fsn_lock *l) {
  if (l->fd < 0) return;
  /* Closing our descriptor releases our hold; a child that inherited the
   * same open file description keeps the lock alive until it exits. */
  close(l->fd);
  l->fd = -1;
}

int fsn_lock_owner(const char *path, fsn_buf *out, fsn_err *err) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ELOOP) return fsn_fail(err, "EUNSAFE", "lock '%s': is a symbolic link", path);
    return fsn_fail_errno(err, errno, "lock '%s'", path);
  }
  char chunk[4096];
  ssize_t n;
  while ((n = read(fd, chunk, sizeof chunk)) > 0) fsn_buf_add(out, chunk, (size_t)n);
  close(fd);
  return 0;
}

/* This process's pid, read once and again only after a fork (the child
 * handler forgets it): the owner text is built for every command lock. A
 * CLONE_VM child (proc.c's spawn) never builds one before it execs. */
static pid_t self_pid;
static pthread_once_t self_pid_once = PTHREAD_ONCE_INIT;

static void forget_pid(void) { __atomic_store_n(&self_pid, 0, __ATOMIC_RELAXED); }
static void watch_forks(void) { pthread_atfork(NULL, NULL, forget_pid); }

static pid_t my_pid(void) {
  pthread_once(&self_pid_once, watch_forks);
  pid_t pid = __atomic_load_n(&self_pid, __ATOMIC_RELAXED);
  if (!pid) {
    pid = getpid();
    __atomic_store_n(&self_pid, pid, __ATOMIC_RELAXED);
  }
  return pid;
}

void fsn_lock_default_owner(fsn_buf *out) {
  pid_t pid = my_pid();
  /* The host name, like argv, is read once per thread and process: the
   * text is a description for messages, and a host renamed during a run
   * would describe the same process either way. */
  static __thread char host[256], cmd[1024];
  static __thread pid_t cmd_pid;
  int fresh = cmd_pid != pid;
  if (fresh) {
    strcpy(host, "?");
    gethostname(host, sizeof host - 1);
    host[sizeof host - 1] = 0;
  }
  time_t t = time(NULL);
  struct tm tm;
  char when[32];
  gmtime_r(&t, &tm);
  strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
  fsn_buf_addf(out, "pid=%ld\nhost=%s\nstarted=%s\nargv=", (long)pid, host, when);
  /* A process's argv does not change: read once per thread (a run takes a
   * command lock per operation) and again only after a fork (another pid). */
  if (fresh) {
    cmd[0] = 0;
    int fd = open("/proc/self/cmdline", O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
      ssize_t n = read(fd, cmd, sizeof cmd - 1);
      close(fd);
      for (ssize_t i = 0; i < n; i++) {
        if (cmd[i] == '\n') cmd[i] = ' ';
        if (cmd[i] == 0) cmd[i] = (i == n - 1) ? 0 : ' ';
      }
      cmd[n > 0 ? n : 0] = 0;
    }
    cmd_pid = pid;
  }
  fsn_buf_adds(out, cmd);
  fsn_buf_addc(out, '\n');
}
