/* Unit tests of locks: exclusion, owner text, unsafe sidecars, a dead
 * holder, and a lock kept alive by a child that inherited it. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "lock.h"

int main(void) {
  const char *tmp = check_tmpdir();
  char path[512], link[512];
  snprintf(path, sizeof path, "%s/j.lock", tmp);
  snprintf(link, sizeof link, "%s/l.lock", tmp);
  fsn_lock a, b;
  fsn_err err;
  int st_child;

  CHECK(fsn_lock_acquire(&a, path, -1, "pid=1\nhost=h\nstarted=t\nargv=fleetsnap backup\n", &err) == 0);
  CHECK(fsn_lock_acquire(&b, path, -1, "pid=2\n", &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  CHECK(strstr(err.msg, "pid 1 on h since t (fleetsnap backup)") != NULL);
  /* The refused attempt left the holder's text alone. */
  fsn_buf owner;
  fsn_buf_init(&owner);
  CHECK(fsn_lock_owner(path, &owner, &err) == 0);
  CHECK(owner.len > 5 && strncmp(owner.data, "pid=1\n", 6) == 0);
  fsn_buf_free(&owner);
  /* Waiting gives up after the wait time. */
  CHECK(fsn_lock_acquire(&b, path, 50, NULL, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  fsn_lock_release(&a);
  fsn_lock_release(&a); /* idempotent */
  CHECK(fsn_lock_acquire(&b, path, -1, NULL, &err) == 0);
  fsn_lock_release(&b);

  /* A SIGKILLed holder never blocks. */
  pid_t pid = fork();
  if (pid == 0) {
    fsn_lock c;
    if (fsn_lock_acquire(&c, path, -1, "pid=child\n", NULL) != 0) _exit(1);
    kill(getpid(), SIGKILL);
  }
  int st;
  waitpid(pid, &st, 0);
  CHECK(fsn_lock_acquire(&a, path, -1, NULL, &err) == 0);

  /* A child sharing the open file description keeps the lock after we let
   * go, until it exits: the command-lifetime lock. */
  pid = fork();
  if (pid == 0) {
    usleep(300 * 1000);
    _exit(0);
  }
  fsn_lock_release(&a);
  CHECK(fsn_lock_acquire(&b, path, -1, NULL, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  waitpid(pid, &st, 0);
  CHECK(fsn_lock_acquire(&b, path, -1, NULL, &err) == 0);
  fsn_lock_release(&b);

  /* Unsafe sidecars. */
  CHECK(symlink(path, link) == 0);
  CHECK(fsn_lock_acquire(&a, link, -1, NULL, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(fsn_lock_acquire(&a, tmp, -1, NULL, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  snprintf(link, sizeof link, "%s/no/such/x.lock", tmp);
  CHECK(fsn_lock_acquire(&a, link, -1, NULL, &err) == -1);
  CHECK_STR(err.code, "ENOENT");

  /* The holder's text replaces an earlier owner's whole: cut where the old
   * one was longer, written over where it was as long or shorter. */
  const char *texts[] = {"pid=1\nhost=a-long-host-name\n", "pid=2\n", "pid=3\n", "pid=44\nhost=b\n"};
  for (size_t i = 0; i < sizeof texts / sizeof *texts; i++) {
    CHECK(fsn_lock_acquire(&a, path, -1, texts[i], &err) == 0);
    fsn_buf_init(&owner);
    CHECK(fsn_lock_owner(path, &owner, &err) == 0);
    CHECK(owner.len == strlen(texts[i]) && memcmp(owner.data, texts[i], owner.len) == 0);
    fsn_buf_free(&owner);
    fsn_lock_release(&a);
  }

  /* Probing: free, held, and (create 0) missing without making it. */
  CHECK(fsn_lock_probe(path, -1, 1, &err) == 0);
  CHECK(fsn_lock_acquire(&a, path, -1, NULL, &err) == 0);
  CHECK(fsn_lock_probe(path, -1, 0, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  fsn_lock_release(&a);
  CHECK(fsn_lock_probe(path, -1, 0, &err) == 0);
  char missing[512];
  snprintf(missing, sizeof missing, "%s/m.lock", tmp);
  struct stat sb;
  CHECK(fsn_lock_probe(missing, -1, 0, &err) == 0);
  CHECK(lstat(missing, &sb) == -1 && errno == ENOENT);
  snprintf(missing, sizeof missing, "%s/no/such/m.lock", tmp);
  CHECK(fsn_lock_probe(missing, -1, 0, &err) == 0);
  CHECK(fsn_lock_probe(missing, -1, 1, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  snprintf(link, sizeof link, "%s/l.lock", tmp);
  CHECK(fsn_lock_probe(link, -1, 0, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(fsn_lock_probe(tmp, -1, 0, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  char fifo[512];
  snprintf(fifo, sizeof fifo, "%s/f.lock", tmp);
  CHECK(mkfifo(fifo, 0600) == 0);
  CHECK(fsn_lock_probe(fifo, -1, 0, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");

  /* The default owner text names this process, and a forked child (the
   * pid is remembered between texts) names itself. */
  char want[64];
  fsn_buf_init(&owner);
  fsn_lock_default_owner(&owner);
  fsn_lock_default_owner(&owner);
  snprintf(want, sizeof want, "pid=%ld\n", (long)getpid());
  CHECK(owner.len > strlen(want) && strncmp(owner.data, want, strlen(want)) == 0);
  fsn_buf_free(&owner);
  pid = fork();
  if (pid == 0) {
    fsn_buf o;
    fsn_buf_init(&o);
    fsn_lock_default_owner(&o);
    char w[64];
    snprintf(w, sizeof w, "pid=%ld\n", (long)getpid());
    _exit(o.len > strlen(w) && strncmp(o.data, w, strlen(w)) == 0 ? 0 : 1);
  }
  CHECK(waitpid(pid, &st_child, 0) == pid && WIFEXITED(st_child) && WEXITSTATUS(st_child) == 0);

  /* Byte-range locks of one shared file: bytes are independent of each
   * other, exclusive between open file descriptions, kept by a child that
   * inherited the descriptor, free again when a holder dies, and probed
   * without creating the file. */
  char shared[512];
  snprintf(shared, sizeof shared, "%s/commands.lock", tmp);
  CHECK(fsn_lock_probe_range(shared, 7, -1, 0, &err) == 0);
  CHECK(lstat(shared, &sb) == -1 && errno == ENOENT);
  CHECK(fsn_lock_acquire_range(&a, shared, 7, -1, &err) == 0);
  CHECK(fsn_lock_acquire_range(&b, shared, 8, -1, &err) == 0);
  fsn_lock c2;
  CHECK(fsn_lock_acquire_range(&c2, shared, 7, 30, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  CHECK(strstr(err.msg, "byte 7") != NULL);
  CHECK(fsn_lock_probe_range(shared, 7, -1, 0, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  /* A byte far past the end (a hash of an operation's id) is lockable and
   * leaves the file empty. */
  CHECK(fsn_lock_acquire_range(&c2, shared, (1LL << 62) - 1, -1, &err) == 0);
  CHECK(lstat(shared, &sb) == 0 && sb.st_size == 0);
  fsn_lock_release(&c2);
  fsn_lock_release(&b);
  CHECK(fsn_lock_probe_range(shared, 8, -1, 0, &err) == 0);
  /* Inherited: held after we let go, until the child exits. */
  pid = fork();
  if (pid == 0) {
    usleep(300 * 1000);
    _exit(0);
  }
  fsn_lock_release(&a);
  CHECK(fsn_lock_probe_range(shared, 7, -1, 0, &err) == -1);
  CHECK_STR(err.code, "ELOCKED");
  /* The whole-file lock of the same file is another lock altogether. */
  CHECK(fsn_lock_probe(shared, -1, 0, &err) == 0);
  waitpid(pid, &st, 0);
  CHECK(fsn_lock_probe_range(shared, 7, 100, 0, &err) == 0);
  /* A SIGKILLed holder never blocks. */
  pid = fork();
  if (pid == 0) {
    fsn_lock c;
    if (fsn_lock_acquire_range(&c, shared, 9, -1, NULL) != 0) _exit(1);
    kill(getpid(), SIGKILL);
  }
  waitpid(pid, &st, 0);
  CHECK(WIFSIGNALED(st));
  CHECK(fsn_lock_acquire_range(&a, shared, 9, -1, &err) == 0);
  fsn_lock_release(&a);
  CHECK(fsn_lock_acquire_range(&a, shared, -1, -1, &err) == -1);
  CHECK_STR(err.code, "EINVAL");
  CHECK(fsn_lock_acquire_range(&a, link, 1, -1, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_lock");
}
