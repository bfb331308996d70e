/* Unit tests of locks: exclusion, owner text, unsafe sidecars, a dead
 * holder, and a lock kept alive by a child that inherited it. */
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

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_lock");
}
