/* Unit tests of the journal: append/replay, group commit, torn tails,
 * corruption before the tail, compaction, refusal of non-journals. */
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "journal.h"

static int count(fsn_journal *j) {
  uint64_t off = 0;
  fsn_buf b;
  fsn_err err;
  fsn_buf_init(&b);
  int n = 0, r;
  while ((r = fsn_journal_next(j, &off, &b, &err)) == 1) n++;
  fsn_buf_free(&b);
  return r < 0 ? -1 : n;
}

static off_t file_size(const char *p) {
  struct stat st;
  return stat(p, &st) == 0 ? st.st_size : -1;
}

int main(void) {
  const char *tmp = check_tmpdir();
  char path[512];
  snprintf(path, sizeof path, "%s/j.wal", tmp);
  fsn_journal j;
  fsn_err err;

  CHECK(fsn_journal_open(&j, path, NULL, &err) == 0);
  CHECK(j.created && j.records == 0);
  CHECK(fsn_journal_write(&j, "{\"a\":1}", 7, "k1", &err) == 0);
  CHECK(fsn_journal_write(&j, "{\"b\":2}", 7, "k2", &err) == 0);
  CHECK(count(&j) == 0); /* not durable yet */
  CHECK(fsn_journal_sync(&j, &err) == 0);
  CHECK(j.records == 2 && count(&j) == 2);
  CHECK(fsn_journal_write(&j, "", 0, NULL, &err) == -1);
  CHECK_STR(err.code, "ETOOBIG");
  CHECK(fsn_journal_close(&j, &err) == 0);
  CHECK(fsn_journal_close(&j, &err) == 0);

  /* Reopen replays everything. */
  CHECK(fsn_journal_open(&j, path, NULL, &err) == 0);
  CHECK(!j.created && j.records == 2 && j.torn_bytes == 0);
  uint64_t off = 0;
  fsn_buf b;
  fsn_buf_init(&b);
  CHECK(fsn_journal_next(&j, &off, &b, &err) == 1);
  CHECK(b.len == 7 && memcmp(b.data, "{\"a\":1}", 7) == 0);
  fsn_buf_free(&b);
  fsn_journal_close(&j, &err);

  /* A torn tail (half a frame) is cut and reported. */
  off_t good = file_size(path);
  int fd = open(path, O_WRONLY | O_APPEND);
  CHECK(write(fd, "\xA1\xF5\x20\x00\x00\x00\x01\x02\x03\x04{\"partial", 19) == 19);
  close(fd);
  CHECK(fsn_journal_open(&j, path, NULL, &err) == 0);
  CHECK(j.records == 2 && j.torn_bytes == 19);
  CHECK(file_size(path) == good);
  CHECK(fsn_journal_write(&j, "{\"c\":3}", 7, NULL, &err) == 0 && fsn_journal_sync(&j, &err) == 0);
  CHECK(count(&j) == 3);
  fsn_journal_close(&j, &err);

  /* Zeros after the last record (delayed allocation after a crash). */
  fd = open(path, O_WRONLY | O_APPEND);
  char zeros[100] = {0};
  CHECK(write(fd, zeros, sizeof zeros) == (ssize_t)sizeof zeros);
  close(fd);
  CHECK(fsn_journal_open(&j, path, NULL, &err) == 0);
  CHECK(j.records == 3 && j.torn_bytes == 100);
  fsn_journal_close(&j, &err);

  /* A flipped byte in the first record, with valid records after it, is
   * corruption: refused with the offset, file untouched. */
  good = file_size(path);
  fd = open(path, O_RDWR);
  CHECK(pwrite(fd, "X", 1, FSN_JOURNAL_HEADER_LEN + FSN_JOURNAL_FRAME_LEN + 2) == 1);
  close(fd);
  CHECK(fsn_journal_open(&j, path, NULL, &err) == -1);
  CHECK_STR(err.code, "ECORRUPT");
  CHECK(strstr(err.msg, "offset 16") != NULL);
  CHECK(file_size(path) == good);

  /* Not a journal at all. */
  char other[512];
  snprintf(other, sizeof other, "%s/other.wal", tmp);
  fd = open(other, O_WRONLY | O_CREAT, 0600);
  CHECK(write(fd, "{\"hello\": \"world\"}\n", 19) == 19);
  close(fd);
  CHECK(fsn_journal_open(&j, other, NULL, &err) == -1);
  CHECK_STR(err.code, "ECORRUPT");

  /* A torn header (crash right after creation) starts the journal again. */
  fd = open(other, O_WRONLY | O_TRUNC);
  CHECK(write(fd, "fleetsnap", 9) == 9);
  close(fd);
  CHECK(fsn_journal_open(&j, other, NULL, &err) == 0);
  CHECK(j.records == 0 && j.torn_bytes == 9);

  /* Compaction: one checkpoint record replaces the log atomically. */
  for (int i = 0; i < 10; i++) fsn_journal_write(&j, "{\"x\":1}", 7, NULL, &err);
  CHECK(fsn_journal_sync(&j, &err) == 0 && j.records == 10);
  CHECK(fsn_journal_compact(&j, "{\"checkpoint\":10}", 17, &err) == 0);
  CHECK(j.records == 1 && count(&j) == 1);
  CHECK(fsn_journal_write(&j, "{\"y\":2}", 7, NULL, &err) == 0 && fsn_journal_sync(&j, &err) == 0);
  fsn_journal_close(&j, &err);
  CHECK(fsn_journal_open(&j, other, NULL, &err) == 0);
  CHECK(j.records == 2 && j.torn_bytes == 0);
  fsn_journal_close(&j, &err);

  char link[512];
  snprintf(link, sizeof link, "%s/link.wal", tmp);
  CHECK(symlink(other, link) == 0);
  CHECK(fsn_journal_open(&j, link, NULL, &err) == -1);
  CHECK_STR(err.code, "EUNSAFE");

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_journal");
}
