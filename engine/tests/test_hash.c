/* Unit tests of hashing: strings, files, trees (the manifest contract's
 * examples), refusal of unsafe entries, copy_tree, fingerprints, background
 * tasks. */
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "hash.h"

static void put(const char *path, const char *data) {
  FILE *f = fopen(path, "wb");
  fputs(data, f);
  fclose(f);
}

static char P[4][512];
static const char *at(int slot, const char *dir, const char *rel) {
  snprintf(P[slot], sizeof P[slot], "%s/%s", dir, rel);
  return P[slot];
}

static void test_strings_and_files(fsn_hasher *h, const char *tmp) {
  char hex[65];
  uint64_t size = 0;
  fsn_err err;
  CHECK(fsn_sha256_hex(h, "", 0, hex, &err) == 0);
  CHECK_STR(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(fsn_sha256_hex(h, "app snapshot", 12, hex, &err) == 0);
  CHECK_STR(hex, "e2cac2614be96c3c77c67a808947928422533f173d2806ef749c42265c8ca08a");
  put(at(0, tmp, "f.bin"), "app snapshot");
  CHECK(fsn_hash_file(h, at(0, tmp, "f.bin"), hex, &size, &err) == 0);
  CHECK_STR(hex, "e2cac2614be96c3c77c67a808947928422533f173d2806ef749c42265c8ca08a");
  CHECK(size == 12);
  CHECK(fsn_hash_file(h, at(0, tmp, "missing"), hex, &size, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
  CHECK(symlink("f.bin", at(1, tmp, "link")) == 0);
  CHECK(fsn_hash_file(h, at(1, tmp, "link"), hex, &size, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  mkfifo(at(2, tmp, "fifo"), 0600);
  CHECK(fsn_hash_file(h, at(2, tmp, "fifo"), hex, &size, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(fsn_hash_file(h, tmp, hex, &size, &err) == -1);
  CHECK_STR(err.code, "EISDIR");
}

static void test_tree(fsn_hasher *h, const char *tmp) {
  fsn_tree t;
  fsn_err err;
  mkdir(at(0, tmp, "one"), 0700);
  put(at(0, tmp, "one/snapshot.bin"), "app snapshot");
  CHECK(fsn_hash_tree(h, at(0, tmp, "one"), 0, &t, &err) == 0);
  CHECK_STR(t.digest, "e25f06e07b6815cc3e23d409f84b71affebc05dbfb5f81f55634c6bea5976c87");
  fsn_tree_free(&t);

  /* Created in reverse order: the digest must not depend on it. */
  mkdir(at(0, tmp, "two"), 0700);
  mkdir(at(0, tmp, "two/nested"), 0700);
  put(at(0, tmp, "two/nested/b.txt"), "b");
  put(at(0, tmp, "two/a.txt"), "a");
  mkdir(at(0, tmp, "two/empty"), 0700);
  for (int threads = 1; threads <= 3; threads++) {
    CHECK(fsn_hash_tree(h, at(0, tmp, "two"), threads, &t, &err) == 0);
    CHECK_STR(t.digest, "e4d330f138b8f1b3044e84b5dcbe4fd1cb7e043d0c20810c083d791b6de01266");
    CHECK(t.count == 2 && t.bytes == 2);
    CHECK_STR(t.files[0].path, "a.txt");
    CHECK_STR(t.files[1].path, "nested/b.txt");
    fsn_tree_free(&t);
  }

  /* No files at all (files stays NULL: nothing may be sorted or hashed from
   * it), also when there are directories. */
  mkdir(at(0, tmp, "empty"), 0700);
  for (int threads = 0; threads <= 2; threads++) {
    CHECK(fsn_hash_tree(h, at(0, tmp, "empty"), threads, &t, &err) == 0);
    CHECK_STR(t.digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(t.count == 0 && t.bytes == 0);
    fsn_tree_free(&t);
  }
  mkdir(at(0, tmp, "hollow"), 0700);
  mkdir(at(0, tmp, "hollow/a"), 0700);
  mkdir(at(0, tmp, "hollow/a/b"), 0700);
  CHECK(fsn_hash_tree(h, at(0, tmp, "hollow"), 0, &t, &err) == 0);
  CHECK_STR(t.digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(t.count == 0);
  fsn_tree_free(&t);

  /* A symlink anywhere inside is refused with its path. */
  CHECK(symlink("../one/snapshot.bin", at(0, tmp, "two/nested/evil")) == 0);
  CHECK(fsn_hash_tree(h, at(0, tmp, "two"), 0, &t, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(strstr(err.msg, "nested/evil") != NULL);
  unlink(at(0, tmp, "two/nested/evil"));
  /* The root itself as a symlink is refused too. */
  CHECK(symlink("two", at(0, tmp, "tworef")) == 0);
  CHECK(fsn_hash_tree(h, at(0, tmp, "tworef"), 0, &t, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");
  CHECK(fsn_hash_tree(h, at(0, tmp, "nothere"), 0, &t, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

static void test_order(void) {
  CHECK(fsn_path_component_cmp("a/b", "a-b/x") < 0);
  CHECK(fsn_path_component_cmp("a", "a/b") < 0);
  CHECK(fsn_path_component_cmp("a/b", "a/b") == 0);
  CHECK(fsn_path_component_cmp("b", "a/z") > 0);
}

static void test_copy(fsn_hasher *h, const char *tmp) {
  fsn_tree t;
  fsn_err err;
  CHECK(fsn_copy_tree(h, at(0, tmp, "two"), at(1, tmp, "copy"), 2, 1, &t, &err) == 0);
  CHECK_STR(t.digest, "e4d330f138b8f1b3044e84b5dcbe4fd1cb7e043d0c20810c083d791b6de01266");
  fsn_tree_free(&t);
  struct stat st;
  CHECK(stat(at(1, tmp, "copy"), &st) == 0 && (st.st_mode & 0777) == 0700);
  CHECK(stat(at(1, tmp, "copy/nested/b.txt"), &st) == 0 && (st.st_mode & 0777) == 0600);
  CHECK(stat(at(1, tmp, "copy/empty"), &st) == 0 && S_ISDIR(st.st_mode));
  CHECK(fsn_copy_tree(h, at(0, tmp, "two"), at(1, tmp, "copy"), 2, 0, &t, &err) == -1);
  CHECK_STR(err.code, "EEXIST");

  /* Copies of trees without files: the directories are made, nothing else. */
  for (int sync = 0; sync <= 1; sync++) {
    CHECK(fsn_copy_tree(h, at(0, tmp, "empty"), at(1, tmp, sync ? "ecopy-sync" : "ecopy"), 0,
                        sync, &t, &err) == 0);
    CHECK_STR(t.digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    CHECK(t.count == 0 && t.bytes == 0);
    fsn_tree_free(&t);
    CHECK(stat(at(1, tmp, sync ? "ecopy-sync" : "ecopy"), &st) == 0 && S_ISDIR(st.st_mode));
  }
  CHECK(fsn_copy_tree(h, at(0, tmp, "hollow"), at(1, tmp, "hcopy"), 0, 1, &t, &err) == 0);
  CHECK_STR(t.digest, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  fsn_tree_free(&t);
  CHECK(stat(at(1, tmp, "hcopy/a/b"), &st) == 0 && S_ISDIR(st.st_mode));
}

/* The stat fingerprint: recorded by a hash, equal from a stat walk, moved
 * by a write in place or a replaced inode, kept by a rename. */
static void test_fingerprint(fsn_hasher *h, const char *tmp) {
  fsn_tree a, b;
  fsn_err err;
  mkdir(at(0, tmp, "fp"), 0700);
  put(at(0, tmp, "fp/x"), "xxxx");
  CHECK(fsn_hash_tree(h, at(0, tmp, "fp"), 1, &a, &err) == 0);
  CHECK(strlen(a.fingerprint) == 64);
  uint64_t bytes0, files0, bytes1, files1;
  fsn_hash_stats(&bytes0, &files0);
  CHECK(fsn_stat_tree(h, at(0, tmp, "fp"), &b, &err) == 0);
  fsn_hash_stats(&bytes1, &files1);
  CHECK(bytes1 == bytes0 && files1 == files0); /* no content read */
  CHECK_STR(a.fingerprint, b.fingerprint);
  CHECK(b.digest[0] == 0 && b.bytes == 4 && b.count == 1);
  fsn_tree_free(&b);
  CHECK(rename(at(0, tmp, "fp"), at(1, tmp, "fp2")) == 0);
  CHECK(fsn_stat_tree(h, at(1, tmp, "fp2"), &b, &err) == 0);
  CHECK_STR(a.fingerprint, b.fingerprint);
  fsn_tree_free(&b);
  int fd = open(at(0, tmp, "fp2/x"), O_WRONLY);
  CHECK(fd >= 0 && pwrite(fd, "y", 1, 0) == 1);
  close(fd);
  CHECK(fsn_stat_tree(h, at(1, tmp, "fp2"), &b, &err) == 0);
  CHECK(strcmp(a.fingerprint, b.fingerprint) != 0);
  fsn_tree_free(&b);
  fsn_tree_free(&a);
  CHECK(fsn_stat_tree(h, at(0, tmp, "none"), &b, &err) == -1);
  CHECK_STR(err.code, "ENOENT");
}

/* A background task: the same tree as fsn_hash_tree, its descriptor
 * readable when done, the result handed over once, cancel on free. */
static void test_task(fsn_hasher *h, const char *tmp) {
  fsn_err err;
  fsn_tree want, got;
  mkdir(at(0, tmp, "bg"), 0700);
  FILE *f = fopen(at(0, tmp, "bg/big"), "wb");
  for (int i = 0; i < 3 << 10; i++) fputs("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
                                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
                                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n"
                                         "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\n", f);
  fclose(f);
  put(at(0, tmp, "bg/small"), "s");
  CHECK(fsn_hash_tree(h, at(0, tmp, "bg"), 1, &want, &err) == 0);
  fsn_hash_task *t = fsn_hash_task_start(at(0, tmp, "bg"), 1, &err);
  CHECK(t != NULL);
  if (t) {
    struct pollfd p = {fsn_hash_task_fd(t), POLLIN, 0};
    CHECK(poll(&p, 1, 10000) == 1);
    CHECK(fsn_hash_task_finished(t));
    CHECK(fsn_hash_task_result(t, &got, &err) == 0);
    CHECK_STR(got.digest, want.digest);
    CHECK_STR(got.fingerprint, want.fingerprint);
    CHECK(got.count == 2 && got.bytes == want.bytes);
    fsn_tree_free(&got);
    CHECK(fsn_hash_task_result(t, &got, &err) == -1);
    CHECK_STR(err.code, "EINVAL");
    fsn_hash_task_free(t);
  }
  fsn_tree_free(&want);
  t = fsn_hash_task_start(at(0, tmp, "missing"), 0, &err);
  CHECK(t != NULL);
  if (t) {
    CHECK(fsn_hash_task_result(t, &got, &err) == -1);
    CHECK_STR(err.code, "ENOENT");
    fsn_hash_task_free(t);
  }
  /* Freed while it may still run: cancelled and joined, nothing leaks
   * (the sanitizer build checks). */
  t = fsn_hash_task_start(at(0, tmp, "bg"), 2, &err);
  CHECK(t != NULL);
  fsn_hash_task_free(t);
  fsn_hash_task_free(NULL);
}

/* Jobs one after the other reuse the read buffers of the earlier ones:
 * mapping (and zeroing) a fresh 2 MiB buffer per member's tree cost more
 * than hashing its bytes. */
static void test_buffers_reused(fsn_hasher *h, const char *tmp) {
  fsn_tree t;
  fsn_err err;
  char hex[65];
  uint64_t size;
  mkdir(at(0, tmp, "reuse"), 0700);
  put(at(0, tmp, "reuse/a"), "a");
  put(at(0, tmp, "reuse/b"), "b");
  CHECK(fsn_hash_tree(h, at(0, tmp, "reuse"), 1, &t, &err) == 0);
  fsn_tree_free(&t);
  CHECK(fsn_hash_file(h, at(0, tmp, "reuse/a"), hex, &size, &err) == 0);
  uint64_t before = fsn_hash_buffers_mapped();
  CHECK(before >= 1);
  for (int i = 0; i < 5; i++) {
    CHECK(fsn_hash_tree(h, at(0, tmp, "reuse"), 1, &t, &err) == 0);
    fsn_tree_free(&t);
    fsn_hash_task *task = fsn_hash_task_start(at(0, tmp, "reuse"), 1, &err);
    CHECK(task != NULL);
    CHECK(fsn_hash_task_result(task, &t, &err) == 0);
    fsn_tree_free(&t);
    fsn_hash_task_free(task);
  }
  CHECK(fsn_hash_buffers_mapped() == before);
}

int main(void) {
  const char *tmp = check_tmpdir();
  fsn_err err;
  fsn_hasher *h = fsn_hasher_new(&err);
  CHECK(h != NULL);
  test_strings_and_files(h, tmp);
  test_tree(h, tmp);
  test_order();
  test_copy(h, tmp);
  test_fingerprint(h, tmp);
  test_task(h, tmp);
  test_buffers_reused(h, tmp);
  fsn_hasher_free(h);
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_hash");
}
