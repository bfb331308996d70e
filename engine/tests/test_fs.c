/* Unit tests of durable writes, create-only publication, directory
 * publication, private dirs, no-follow removal and path checks. */
#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "fs.h"
#include "pathwalk.h"

static char P[4][512];
static const char *at(int slot, const char *dir, const char *rel) {
  snprintf(P[slot], sizeof P[slot], "%s/%s", dir, rel);
  return P[slot];
}

static void read_back(const char *path, char *out, size_t cap) {
  fsn_buf b;
  fsn_err err;
  fsn_buf_init(&b);
  out[0] = 0;
  if (fsn_read_file(path, 1 << 20, &b, &err) == 0) snprintf(out, cap, "%.*s", (int)b.len, b.data);
  fsn_buf_free(&b);
}

static void test_replace(const char *tmp) {
  fsn_err err;
  char got[64];
  CHECK(fsn_write_replace(at(0, tmp, "doc.json"), "one", 3, 0600, NULL, NULL, &err) == 0);
  CHECK(fsn_write_replace(at(0, tmp, "doc.json"), "two", 3, 0600, NULL, NULL, &err) == 0);
  read_back(at(0, tmp, "doc.json"), got, sizeof got);
  CHECK_STR(got, "two");
  struct stat st;
  CHECK(stat(at(0, tmp, "doc.json"), &st) == 0 && (st.st_mode & 0777) == 0600);
  /* A directory in the way: error, nothing replaced, no temp left. */
  mkdir(at(1, tmp, "adir"), 0700);
  CHECK(fsn_write_replace(at(1, tmp, "adir"), "x", 1, 0600, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "EISDIR");
  CHECK(fsn_write_replace(at(2, tmp, "no/such/dir/f"), "x", 1, 0600, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

static void test_create(const char *tmp) {
  fsn_err err;
  int adopted = -1;
  CHECK(fsn_write_create(at(0, tmp, "m.json"), "abc", 3, 0600, &adopted, NULL, NULL, &err) == 0);
  CHECK(adopted == 0);
  CHECK(fsn_write_create(at(0, tmp, "m.json"), "abc", 3, 0600, &adopted, NULL, NULL, &err) == 0);
  CHECK(adopted == 1);
  CHECK(fsn_write_create(at(0, tmp, "m.json"), "abd", 3, 0600, &adopted, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "ECONFLICT");
  char got[64];
  read_back(at(0, tmp, "m.json"), got, sizeof got);
  CHECK_STR(got, "abc");
  CHECK(symlink("m.json", at(1, tmp, "ln.json")) == 0);
  CHECK(fsn_write_create(at(1, tmp, "ln.json"), "abc", 3, 0600, &adopted, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
}

static void test_publish(const char *tmp) {
  fsn_err err;
  mkdir(at(0, tmp, "stage"), 0700);
  mkdir(at(0, tmp, "stage/sub"), 0700);
  FILE *f = fopen(at(0, tmp, "stage/sub/x.bin"), "w");
  fputs("x", f);
  fclose(f);
  CHECK(fsn_publish_dir(at(0, tmp, "stage"), at(1, tmp, "final"), 1, NULL, NULL, &err) == 0);
  struct stat st;
  CHECK(stat(at(0, tmp, "final/sub/x.bin"), &st) == 0 && (st.st_mode & 0777) == 0600);
  CHECK(stat(at(0, tmp, "final/sub"), &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK(stat(at(0, tmp, "final"), &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK(lstat(at(0, tmp, "stage"), &st) != 0);
  /* An existing (even empty) target is never replaced. */
  mkdir(at(0, tmp, "stage2"), 0700);
  mkdir(at(1, tmp, "taken"), 0700);
  CHECK(fsn_publish_dir(at(0, tmp, "stage2"), at(1, tmp, "taken"), 0, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "EEXIST");
  CHECK(lstat(at(0, tmp, "stage2"), &st) == 0);
  /* A symlink inside a staged tree is refused before anything moves. */
  CHECK(symlink("/etc/passwd", at(0, tmp, "stage2/evil")) == 0);
  CHECK(fsn_publish_dir(at(0, tmp, "stage2"), at(1, tmp, "final2"), 0, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(fsn_publish_dir(at(0, tmp, "missing"), at(1, tmp, "final3"), 0, NULL, NULL, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

/* Both parents of a publication, a shared one once: the same directory
 * spelled two ways, two directories, and a parent that is gone. */
static void test_fsync_parents(const char *tmp) {
  fsn_err err;
  mkdir(at(0, tmp, "pa"), 0700);
  mkdir(at(0, tmp, "pb"), 0700);
  CHECK(fsn_fsync_parents(at(0, tmp, "pa/x"), at(1, tmp, "pa/y"), &err) == 0);
  CHECK(fsn_fsync_parents(at(0, tmp, "pa/x"), at(1, tmp, "pa/../pa/y"), &err) == 0);
  CHECK(fsn_fsync_parents(at(0, tmp, "pa/x"), at(1, tmp, "pb/y"), &err) == 0);
  CHECK(fsn_fsync_parents(at(0, tmp, "pa/x"), at(1, tmp, "gone/y"), &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  CHECK(fsn_fsync_parents(at(0, tmp, "gone/x"), at(1, tmp, "pa/y"), &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

static void test_private_and_remove(const char *tmp) {
  fsn_err err;
  int created = -1, removed = -1;
  CHECK(fsn_mkdir_private(at(0, tmp, "priv"), &created, &err) == 0 && created == 1);
  chmod(at(0, tmp, "priv"), 0755);
  CHECK(fsn_mkdir_private(at(0, tmp, "priv"), &created, &err) == 0 && created == 0);
  struct stat st;
  CHECK(stat(at(0, tmp, "priv"), &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK(symlink("priv", at(1, tmp, "privlink")) == 0);
  CHECK(fsn_mkdir_private(at(1, tmp, "privlink"), &created, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  fclose(fopen(at(2, tmp, "plainfile"), "w"));
  CHECK(fsn_mkdir_private(at(2, tmp, "plainfile"), &created, &err) == -1);
  CHECK_STR(err.code, "ENOTDIR");

  /* Removal unlinks a symlink inside the tree but never what it points to. */
  mkdir(at(0, tmp, "victim"), 0700);
  fclose(fopen(at(0, tmp, "victim/keep.txt"), "w"));
  mkdir(at(0, tmp, "priv/sub"), 0700);
  CHECK(symlink(at(1, tmp, "victim"), at(2, tmp, "priv/sub/link")) == 0);
  CHECK(fsn_remove_tree(at(0, tmp, "priv"), &removed, &err) == 0 && removed == 1);
  CHECK(lstat(at(0, tmp, "priv"), &st) != 0);
  CHECK(stat(at(0, tmp, "victim/keep.txt"), &st) == 0);
  CHECK(fsn_remove_tree(at(0, tmp, "priv"), &removed, &err) == 0 && removed == 0);
  CHECK(fsn_remove_tree(at(1, tmp, "privlink"), &removed, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
}

static void test_paths(void) {
  fsn_err err;
  CHECK(fsn_safe_relative("a/b.bin", 7, &err) == 0);
  const char *bad[] = {"", "/abs", "a//b", "a/./b", "../x", "a/..", "a/"};
  for (int i = 0; i < 7; i++) {
    CHECK(fsn_safe_relative(bad[i], strlen(bad[i]), &err) == -1);
    CHECK_STR(err.code, "EUNSAFE");
  }
  CHECK(fsn_safe_relative("a\0b", 3, &err) == -1);
  uint64_t avail = 0, total = 0;
  CHECK(fsn_free_space("/tmp", &avail, &total, &err) == 0 && total > 0 && avail <= total);
  CHECK(fsn_free_space("/no/such/dir", &avail, &total, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

static void test_read(const char *tmp) {
  fsn_buf b;
  fsn_err err;
  fsn_buf_init(&b);
  CHECK(fsn_read_file(at(0, tmp, "doc.json"), 2, &b, &err) == -1);
  CHECK_STR(err.code, "ETOOBIG");
  fsn_buf_free(&b);
}

/* Directory entries read straight from the descriptor: every name once,
 * across several reads, never "." or "..", the descriptor left open and
 * no other one made; a descriptor that is no directory fails. */
static void test_dir_entries(const char *tmp) {
  char dir[600], name[700];
  snprintf(dir, sizeof dir, "%s/entries", tmp);
  CHECK(mkdir(dir, 0700) == 0);
  enum { N = 1500 }; /* some 90 KiB of entries: three reads of 32 KiB */
  for (int i = 0; i < N; i++) {
    snprintf(name, sizeof name, "%s/entry-%04d-with-a-name-long-enough-to-fill", dir, i);
    int fd = open(name, O_CREAT | O_WRONLY | O_CLOEXEC, 0600);
    CHECK(fd >= 0);
    close(fd);
  }
  static unsigned char seen[N];
  memset(seen, 0, sizeof seen);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  int next_fd = dup(0);
  close(next_fd); /* the lowest free number, before the walk */
  fsn_dir *d = fsn_dir_open(fd);
  CHECK(d != NULL);
  int total = 0, bad = 0;
  const char *n;
  while ((n = fsn_dir_next(d)) != NULL) {
    int i;
    total++;
    if (sscanf(n, "entry-%d-", &i) == 1 && i >= 0 && i < N) seen[i]++;
    else bad++;
  }
  CHECK(errno == 0);
  fsn_dir_close(d);
  CHECK(total == N && bad == 0);
  int once = 1;
  for (int i = 0; i < N; i++) once &= seen[i] == 1;
  CHECK(once);
  CHECK(fcntl(fd, F_GETFD) >= 0); /* still the caller's */
  int probe = dup(0);
  CHECK(probe == next_fd);        /* nothing left open */
  close(probe);
  close(fd);
  snprintf(name, sizeof name, "%s/entry-0000-with-a-name-long-enough-to-fill", dir);
  fd = open(name, O_RDONLY | O_CLOEXEC);
  d = fsn_dir_open(fd);
  CHECK(d != NULL && fsn_dir_next(d) == NULL && errno == ENOTDIR);
  fsn_dir_close(d);
  close(fd);
}

int main(void) {
  const char *tmp = check_tmpdir();
  test_dir_entries(tmp);
  test_replace(tmp);
  test_create(tmp);
  test_publish(tmp);
  test_fsync_parents(tmp);
  test_private_and_remove(tmp);
  test_paths();
  test_read(tmp);
  /* No temp sibling survives any of the above. */
  char cmd[600];
  snprintf(cmd, sizeof cmd, "! ls -A '%s' | grep -q fsn-tmp", tmp);
  CHECK(system(cmd) == 0);
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_fs");
}
