/* Unit tests of child processes: capture, exit status, timeout with group
 * kill, tail capture, stdin, env, exec failure, wait_any over several, a
 * child of a large parent holding an inherited lock. */
#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "lock.h"
#include "proc.h"

extern char **environ;

static volatile sig_atomic_t usr1_seen = 0;
static void on_usr1(int sig) {
  (void)sig;
  usr1_seen = 1;
}

static int run(char **argv, const char *in, size_t cap, long timeout, fsn_proc *p, fsn_err *err) {
  fsn_spawn_opts o;
  memset(&o, 0, sizeof o);
  o.argv = argv;
  o.envp = environ;
  o.stdin_data = in;
  o.stdin_len = in ? strlen(in) : 0;
  o.capture_limit = cap;
  o.timeout_ms = timeout;
  o.kill_grace_ms = 200;
  if (fsn_proc_spawn(p, &o, err) != 0) return -1;
  fsn_proc_wait_any(&p, 1, -1, NULL);
  return 0;
}

static char *tail(const fsn_ring *r) {
  static char out[4096];
  size_t n = fsn_ring_copy(r, out);
  out[n] = 0;
  return out;
}

/* Checks the ring against a plain copy of everything added: the tail of
 * min(limit, total) bytes, the exact count, never more allocated than the
 * limit. */
static void ring_case(size_t limit, const size_t *sizes, size_t nsizes) {
  size_t all = 0;
  for (size_t i = 0; i < nsizes; i++) all += sizes[i];
  char *ref = malloc(all + 1), *out = malloc(all + 1);
  fsn_ring r;
  fsn_ring_init(&r, limit);
  size_t off = 0;
  for (size_t i = 0; i < nsizes; i++) {
    for (size_t k = 0; k < sizes[i]; k++) ref[off + k] = (char)('a' + (off + k) * 7 % 26);
    fsn_ring_add(&r, ref + off, sizes[i]);
    off += sizes[i];
    size_t want = off < limit ? off : limit;
    size_t n = fsn_ring_copy(&r, out);
    CHECK(n == want && r.total == off && r.cap <= limit);
    CHECK(memcmp(out, ref + off - want, want) == 0);
  }
  free(r.data);
  free(ref);
  free(out);
}

static int count_fds(void) {
  int n = 0;
  DIR *d = opendir("/proc/self/fd");
  if (!d) return -1;
  while (readdir(d)) n++;
  closedir(d);
  return n;
}

/* What the spawn machinery itself promises, beyond capture and status:
 * stdin is /dev/null and stdout a blocking pipe in the child, no
 * descriptor is left behind in the parent, a lock the parent holds without
 * handing it over is free again as soon as the parent lets go after a
 * spawn, and a program remembered from an earlier PATH search that has gone
 * is searched for again. */
static void spawn_promises(void) {
  fsn_proc p;
  fsn_err err;
  for (int i = 0; i < 2; i++) { /* the second spawn reuses what the first opened */
    char *stdin_argv[] = {"readlink", "/proc/self/fd/0", NULL};
    CHECK(run(stdin_argv, NULL, 1024, 0, &p, &err) == 0);
    CHECK_STR(tail(&p.out), "/dev/null\n");
    fsn_proc_close(&p);
  }
  /* Octal flags of the child's stdout: O_NONBLOCK (04000) must be clear,
   * though the parent's read end has it. */
  char *flags_argv[] = {"sh", "-c", "sed -n 's/^flags:[[:space:]]*//p' /proc/self/fdinfo/1", NULL};
  CHECK(run(flags_argv, NULL, 1024, 0, &p, &err) == 0);
  long flags = strtol(tail(&p.out), NULL, 8);
  CHECK(p.status == 0 && p.out.total > 0 && !(flags & O_NONBLOCK));
  CHECK(p.out_fd < 0 || (fcntl(p.out_fd, F_GETFL) & O_NONBLOCK));
  fsn_proc_close(&p);

  int before = count_fds();
  char dir[] = "/tmp/fsn-spawn-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char lock_path[64];
  snprintf(lock_path, sizeof lock_path, "%s/own.lock", dir);
  char *true_argv[] = {"true", NULL};
  fsn_spawn_opts to;
  memset(&to, 0, sizeof to);
  to.argv = true_argv;
  to.envp = environ;
  to.capture_limit = 64;
  int busy = 0;
  for (int i = 0; i < 100; i++) {
    fsn_lock lk, probe;
    CHECK(fsn_lock_acquire(&lk, lock_path, -1, NULL, &err) == 0);
    CHECK(fsn_proc_spawn(&p, &to, &err) == 0);
    /* Not inherited: the child must not hold it once spawn has returned
     * (the exec itself may still be under way). */
    fsn_lock_release(&lk);
    if (fsn_lock_acquire(&probe, lock_path, -1, NULL, &err) != 0) busy++;
    else fsn_lock_release(&probe);
    fsn_proc *pp = &p;
    fsn_proc_wait_any(&pp, 1, -1, NULL);
    fsn_proc_close(&p);
  }
  CHECK(busy == 0);
  char *missing_argv[] = {"fleetsnap-no-such-program", NULL};
  CHECK(run(missing_argv, NULL, 64, 0, &p, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  CHECK(strstr(err.msg, "fleetsnap-no-such-program") != NULL);
  CHECK(count_fds() == before);

  /* A program found in PATH, then removed: found again in a later entry,
   * then reported missing by name. */
  char d1[128], d2[128], prog1[160], prog2[160], path[300];
  snprintf(d1, sizeof d1, "%s/a", dir);
  snprintf(d2, sizeof d2, "%s/b", dir);
  mkdir(d1, 0700);
  mkdir(d2, 0700);
  snprintf(prog1, sizeof prog1, "%s/fsn-prog", d1);
  snprintf(prog2, sizeof prog2, "%s/fsn-prog", d2);
  FILE *f = fopen(prog1, "w");
  fputs("#!/bin/sh\necho one\n", f);
  fclose(f);
  f = fopen(prog2, "w");
  fputs("#!/bin/sh\necho two\n", f);
  fclose(f);
  chmod(prog1, 0700);
  chmod(prog2, 0700);
  snprintf(path, sizeof path, "PATH=%s:%s:/usr/bin:/bin", d1, d2);
  char *envp[] = {path, NULL};
  char *prog_argv[] = {"fsn-prog", NULL};
  fsn_spawn_opts o;
  memset(&o, 0, sizeof o);
  o.argv = prog_argv;
  o.envp = envp;
  o.capture_limit = 64;
  fsn_proc *one = &p;
  CHECK(fsn_proc_spawn(&p, &o, &err) == 0);
  fsn_proc_wait_any(&one, 1, -1, NULL);
  CHECK_STR(tail(&p.out), "one\n");
  fsn_proc_close(&p);
  unlink(prog1);
  CHECK(fsn_proc_spawn(&p, &o, &err) == 0);
  fsn_proc_wait_any(&one, 1, -1, NULL);
  CHECK_STR(tail(&p.out), "two\n");
  fsn_proc_close(&p);
  unlink(prog2);
  CHECK(fsn_proc_spawn(&p, &o, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  CHECK(strstr(err.msg, "fsn-prog") != NULL);
  rmdir(d1);
  rmdir(d2);
  unlink(lock_path);
  rmdir(dir);
}

int main(void) {
  fsn_proc p;
  fsn_err err;
  spawn_promises();
  char *echo_argv[] = {"sh", "-c", "printf out; printf err >&2; exit 7", NULL};
  CHECK(run(echo_argv, NULL, 1024, 0, &p, &err) == 0);
  CHECK(p.status == 7 && p.signal == 0 && !p.timed_out);
  CHECK_STR(tail(&p.out), "out");
  CHECK_STR(tail(&p.err), "err");
  fsn_proc_close(&p);

  /* Only the tail is kept, every byte is counted. */
  char *big_argv[] = {"sh", "-c", "seq 1 10000", NULL};
  CHECK(run(big_argv, NULL, 6, 0, &p, &err) == 0);
  CHECK_STR(tail(&p.out), "10000\n");
  CHECK(p.out.total == 48894);
  fsn_proc_close(&p);

  char *cat_argv[] = {"cat", NULL};
  CHECK(run(cat_argv, "from stdin", 1024, 0, &p, &err) == 0);
  CHECK_STR(tail(&p.out), "from stdin");
  fsn_proc_close(&p);

  /* Capture buffers grow with the output: below, at and over the limit,
   * across each doubling and with chunks that end exactly on one. */
  size_t exact[] = {4096, 1, 4095, 4097, 8192, 3};
  size_t small[] = {1, 2, 3};
  size_t huge[] = {70000, 5, 65536, 1};
  size_t limits[] = {0, 1, 6, 4095, 4096, 4097, 8192, 10000, 16384, 65536, 1 << 20};
  for (size_t i = 0; i < sizeof limits / sizeof *limits; i++) {
    ring_case(limits[i], exact, sizeof exact / sizeof *exact);
    ring_case(limits[i], small, sizeof small / sizeof *small);
    ring_case(limits[i], huge, sizeof huge / sizeof *huge);
  }
  fsn_ring few;
  fsn_ring_init(&few, 1 << 20);
  fsn_ring_add(&few, "ok", 2);
  CHECK(few.cap == 4096); /* sized to what was printed, not to the limit */
  free(few.data);
  /* seq 1 1000 prints 3893 bytes: a limit over, equal to and under that. */
  char *seq_argv[] = {"seq", "1", "1000", NULL};
  char *whole = malloc(8192);
  size_t seq_limits[] = {10000, 3893, 100};
  for (size_t i = 0; i < 3; i++) {
    CHECK(run(seq_argv, NULL, seq_limits[i], 0, &p, &err) == 0);
    CHECK(p.status == 0 && p.out.total == 3893);
    size_t n = fsn_ring_copy(&p.out, whole);
    size_t want = seq_limits[i] < 3893 ? seq_limits[i] : 3893;
    CHECK(n == want);
    CHECK(n >= 4 && memcmp(whole + n - 4, "000\n", 4) == 0);
    if (i == 0) CHECK(memcmp(whole, "1\n2\n3\n", 6) == 0 && p.out.cap == 4096);
    if (i == 1) CHECK(memcmp(whole, "1\n2\n3\n", 6) == 0 && p.out.cap == 3893);
    if (i == 2) CHECK(memcmp(whole, "76\n977\n978\n", 11) == 0 && p.out.cap == 100);
    fsn_proc_close(&p);
  }
  free(whole);

  /* Timeout: SIGTERM to the whole group, including a grandchild. */
  char *hang_argv[] = {"sh", "-c", "sleep 30 & sleep 30", NULL};
  long long t0 = fsn_now_ms();
  CHECK(run(hang_argv, NULL, 1024, 100, &p, &err) == 0);
  CHECK(p.timed_out && p.signal == SIGTERM);
  CHECK(fsn_now_ms() - t0 < 5000);
  fsn_proc_close(&p);

  /* A program that ignores SIGTERM gets SIGKILL after the grace period. */
  char *stubborn_argv[] = {"sh", "-c", "trap '' TERM; sleep 30", NULL};
  CHECK(run(stubborn_argv, NULL, 1024, 100, &p, &err) == 0);
  CHECK(p.timed_out && (p.signal == SIGKILL || p.signal == SIGTERM));
  fsn_proc_close(&p);

  char *missing_argv[] = {"fleetsnap-no-such-program", NULL};
  CHECK(run(missing_argv, NULL, 1024, 0, &p, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  /* Executable bit but not a program: the exec error reaches the parent. */
  char junk[] = "/tmp/fsn-junk-XXXXXX";
  int jfd = mkstemp(junk);
  CHECK(write(jfd, "\x7f\x01garbage", 9) == 9);
  close(jfd);
  chmod(junk, 0700);
  char *noexec_argv[] = {junk, NULL};
  CHECK(run(noexec_argv, NULL, 1024, 0, &p, &err) == -1);
  CHECK_STR(err.code, "ENOEXEC");
  unlink(junk);

  /* Environment building. */
  char *base[] = {"A=1", "B=2", "FLEETSNAP_FAILPOINT=x:1", NULL};
  char *set[] = {"B=3", "C=4", "FLEETSNAP_FAILPOINT=y:2"};
  char *unset[] = {"FLEETSNAP_FAILPOINT"};
  char **env = fsn_env_build(base, set, 2, unset, 1);
  CHECK_STR(env[0], "A=1");
  CHECK_STR(env[1], "B=3");
  CHECK_STR(env[2], "C=4");
  CHECK(env[3] == NULL);
  free(env);
  env = fsn_env_build(base, set, 3, unset, 1); /* an explicit set wins */
  CHECK_STR(env[3], "FLEETSNAP_FAILPOINT=y:2");
  free(env);

  /* wait_any returns the first to finish. */
  fsn_proc a, b;
  char *slow_argv[] = {"sleep", "1", NULL};
  char *fast_argv[] = {"true", NULL};
  fsn_spawn_opts o;
  memset(&o, 0, sizeof o);
  o.envp = environ;
  o.capture_limit = 64;
  o.argv = slow_argv;
  CHECK(fsn_proc_spawn(&a, &o, &err) == 0);
  o.argv = fast_argv;
  CHECK(fsn_proc_spawn(&b, &o, &err) == 0);
  fsn_proc *both[] = {&a, &b};
  CHECK(fsn_proc_wait_any(both, 2, -1, NULL) == 1);
  CHECK(fsn_proc_wait_any(both, 1, 10, NULL) == -1); /* still sleeping */
  /* A descriptor that turns readable (a hash task's eventfd) ends the wait
   * as index n + j, even with a zero timeout; a finished process wins. */
  int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
  CHECK(efd >= 0);
  CHECK(fsn_wait_any(both, 1, &efd, 1, 0, NULL) == -1);
  uint64_t one = 1;
  CHECK(write(efd, &one, sizeof one) == sizeof one);
  CHECK(fsn_wait_any(both, 1, &efd, 1, 0, NULL) == 1);
  CHECK(fsn_wait_any(both, 1, &efd, 1, -1, NULL) == 1); /* stays readable */
  CHECK(fsn_wait_any(both, 2, &efd, 1, -1, NULL) == 1);  /* b is finished */
  CHECK(fsn_wait_any(NULL, 0, &efd, 1, -1, NULL) == 0);
  close(efd);
  /* A signal interrupts an interruptible wait (the runner's Ctrl-C). */
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_usr1; /* no SA_RESTART: poll returns EINTR */
  sigaction(SIGUSR1, &sa, NULL);
  pid_t me = getpid();
  pid_t killer = fork();
  if (killer == 0) {
    usleep(100 * 1000);
    kill(me, SIGUSR1);
    _exit(0);
  }
  int sig = -1;
  CHECK(fsn_proc_wait_any(both, 1, 5000, &sig) == -2);
  CHECK(usr1_seen == 1 && sig == 0); /* not one of engine.signals' */
  waitpid(killer, NULL, 0);
  fsn_proc_close(&a); /* kills and reaps */
  fsn_proc_close(&b);
  fsn_proc_close(&b); /* idempotent */
  /* A parent with a large, touched heap still starts children (they share
   * its memory until the exec instead of copying it), and a lock handed to
   * the child survives the exec: once the parent lets go of its own
   * descriptor, only the child holds it. */
  size_t big = (size_t)256 << 20;
  char *heap = malloc(big);
  CHECK(heap != NULL);
  if (heap) memset(heap, 0x5a, big);
  char dir[] = "/tmp/fsn-proc-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char lock_path[64];
  snprintf(lock_path, sizeof lock_path, "%s/cmd.lock", dir);
  fsn_lock lk;
  CHECK(fsn_lock_acquire(&lk, lock_path, -1, NULL, &err) == 0);
  char *holder_argv[] = {"sh", "-c", "exec sleep 30", NULL};
  memset(&o, 0, sizeof o);
  o.envp = environ;
  o.capture_limit = 64;
  o.argv = holder_argv;
  o.inherit_fds = &lk.fd;
  o.n_inherit = 1;
  CHECK(fsn_proc_spawn(&a, &o, &err) == 0);
  fsn_lock_release(&lk);
  fsn_lock probe;
  CHECK(fsn_lock_acquire(&probe, lock_path, -1, NULL, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  fsn_proc_close(&a); /* the holder dies: the kernel drops its lock */
  CHECK(fsn_lock_acquire(&probe, lock_path, -1, NULL, &err) == 0);
  fsn_lock_release(&probe);
  CHECK(run(echo_argv, NULL, 1024, 0, &p, &err) == 0);
  CHECK(p.status == 7);
  CHECK_STR(tail(&p.out), "out");
  fsn_proc_close(&p);
  if (heap) CHECK(heap[0] == 0x5a && heap[big - 1] == 0x5a); /* the child wrote nothing here */
  free(heap);
  unlink(lock_path);
  rmdir(dir);
  return check_done("test_proc");
}
