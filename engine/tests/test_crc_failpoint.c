/* Unit tests of CRC-32C and failpoint parsing/matching. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crc32c.h"
#include "failpoint.h"

static void test_crc(void) {
  CHECK(fsn_crc32c_update(0, "123456789", 9) == 0xE3069283u);
  CHECK(fsn_crc32c_update(0, "", 0) == 0);
  uint32_t part = fsn_crc32c_update(0, "12345", 5);
  CHECK(fsn_crc32c_update(part, "6789", 4) == 0xE3069283u);
}

static void test_parse(void) {
  fsn_failpoints fp;
  CHECK(fsn_failpoints_parse(&fp, NULL) == 0 && fp.count == 0);
  CHECK(fsn_failpoints_parse(&fp, "") == 0 && fp.count == 0);
  CHECK(fsn_failpoints_parse(&fp, "after-append@snapshot-abc:2,before-rename:1") == 0);
  CHECK(fp.count == 2);
  CHECK_STR(fp.specs[0].point, "after-append");
  CHECK_STR(fp.specs[0].key, "snapshot-abc");
  CHECK(fp.specs[0].target == 2 && !fp.specs[0].any_key);
  CHECK(fp.specs[1].any_key && fp.specs[1].target == 1);
  CHECK(fsn_failpoints_parse(&fp, "nocount") == -1);
  CHECK(fsn_failpoints_parse(&fp, "p:0") == -1);
  CHECK(fsn_failpoints_parse(&fp, "p:x") == -1);
  CHECK(fsn_failpoints_parse(&fp, ":1") == -1);
}

static void test_hit(void) {
  if (!fsn_failpoints_enabled()) return;
  fsn_failpoints fp;
  fsn_failpoints_parse(&fp, "p@k:2");
  CHECK(fsn_failpoint_hit(&fp, "p", "other") == 0);
  CHECK(fsn_failpoint_hit(&fp, "q", "k") == 0);
  pid_t pid = fork();
  if (pid == 0) {
    fsn_failpoint_hit(&fp, "p", "k"); /* first hit: lives */
    fsn_failpoint_hit(&fp, "p", "k"); /* second: killed */
    _exit(0);
  }
  int st;
  waitpid(pid, &st, 0);
  CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
}

int main(void) {
  test_crc();
  test_parse();
  test_hit();
  return check_done("test_crc_failpoint");
}
