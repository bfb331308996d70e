/* Unit tests of the journal: append/replay, group commit, torn tails,
 * corruption before the tail, compaction, refusal of non-journals; the
 * recovery scan's work on crafted files and its verdicts against a naive
 * reference. */
#include <fcntl.h>
#include <stdint.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "crc32c.h"
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

/* {=== crafted files ===} */

static void put32le(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get32le(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

/* Appends a valid frame (the journal's own framing, rebuilt here). */
static void add_frame(fsn_buf *b, const void *payload, uint32_t len) {
  unsigned char h[FSN_JOURNAL_FRAME_LEN] = {0xA1, 0xF5};
  put32le(h + 2, len);
  put32le(h + 6, fsn_crc32c_update(fsn_crc32c_update(0, h + 2, 4), payload, len));
  fsn_buf_add(b, h, sizeof h);
  fsn_buf_add(b, payload, len);
}

static void write_file(const char *path, const fsn_buf *b) {
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  CHECK(fd >= 0 && write(fd, b->data, b->len) == (ssize_t)b->len);
  close(fd);
}

/* The verdict of the original scan (checksum every candidate in full):
 * 0 and *torn for a torn tail, else the offset of the first valid frame after
 * the first bad one. Quadratic, for small files only. */
static uint64_t reference_scan(const unsigned char *p, uint64_t size, uint64_t *good) {
  uint64_t off = FSN_JOURNAL_HEADER_LEN;
  for (;;) {
    uint64_t q = off;
    int valid = 0;
    if (q + FSN_JOURNAL_FRAME_LEN <= size && p[q] == 0xA1 && p[q + 1] == 0xF5) {
      uint32_t len = get32le(p + q + 2);
      valid = len != 0 && len <= size - q - FSN_JOURNAL_FRAME_LEN &&
              fsn_crc32c_update(fsn_crc32c_update(0, p + q + 2, 4), p + q + 10, len) ==
                  get32le(p + q + 6);
      if (valid) off += FSN_JOURNAL_FRAME_LEN + len;
    }
    if (!valid) break;
  }
  *good = off;
  for (uint64_t q = off + 1; q + FSN_JOURNAL_FRAME_LEN <= size; q++) {
    if (p[q] != 0xA1 || p[q + 1] != 0xF5) continue;
    uint32_t len = get32le(p + q + 2);
    if (len != 0 && len <= size - q - FSN_JOURNAL_FRAME_LEN &&
        fsn_crc32c_update(fsn_crc32c_update(0, p + q + 2, 4), p + q + 10, len) ==
            get32le(p + q + 6))
      return q;
  }
  return 0;
}

/* A journal of 200 records, then a frame with a flipped payload byte. */
static void good_then_corrupt(fsn_buf *b, uint64_t *good) {
  fsn_buf_add(b, FSN_JOURNAL_HEADER, FSN_JOURNAL_HEADER_LEN);
  for (int i = 0; i < 200; i++) {
    char rec[64];
    int n = snprintf(rec, sizeof rec, "{\"op\":\"stop-%03d\",\"t\":\"claim\"}", i);
    add_frame(b, rec, (uint32_t)n);
  }
  *good = b->len;
  add_frame(b, "{\"t\":\"done\"}", 12);
  b->data[b->len - 3] ^= 0x20;
}

/* Recovery after a bad frame examines each byte a bounded number of times,
 * whatever follows: the old scan checksummed every "A1 F5" candidate's whole
 * claimed payload, quadratic on these files (minutes for 1 MiB). */
static void test_recovery_is_linear(const char *tmp) {
  char path[512];
  snprintf(path, sizeof path, "%s/crafted.wal", tmp);
  const size_t flood = 1u << 20;
  for (int variant = 0; variant < 3; variant++) {
    fsn_buf b;
    fsn_buf_init(&b);
    uint64_t good;
    good_then_corrupt(&b, &good);
    size_t base = b.len;
    if (variant == 0) {
      /* A1 F5 A1 F5 ...: every other byte starts a candidate. */
      for (size_t i = 0; i < flood; i += 2) fsn_buf_add(&b, "\xA1\xF5", 2);
    } else {
      /* Headers every 6 bytes (the densest possible), each claiming a
       * payload up to the end of the file (variant 1) or a mid-sized one. */
      size_t end = base + flood - flood % 6;
      for (size_t q = base; q < end; q += 6) {
        unsigned char h[6] = {0xA1, 0xF5};
        uint32_t len = (uint32_t)(end - q - FSN_JOURNAL_FRAME_LEN);
        put32le(h + 2, variant == 1 ? len : (len > 65536 ? 65536 : len));
        fsn_buf_add(&b, h, sizeof h);
      }
    }
    CHECK(!b.oom);
    write_file(path, &b);
    fsn_journal j;
    fsn_err err;
    CHECK(fsn_journal_open(&j, path, NULL, &err) == 0);
    CHECK(j.records == 200 && j.torn_bytes == b.len - good && file_size(path) == (off_t)good);
    printf("crafted tail %d: %zu bytes, scan work %llu\n", variant, b.len,
           (unsigned long long)j.scan_work);
    CHECK(j.scan_work <= 4 * (uint64_t)b.len);
    fsn_journal_close(&j, &err);

    /* The same flood with one valid record inside it is corruption. */
    size_t at = base + flood / 2 + 1; /* odd: not where the flood's headers are */
    memcpy(b.data + at, "\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00", 12);
    fsn_buf tail;
    fsn_buf_init(&tail);
    add_frame(&tail, "{}", 2);
    memcpy(b.data + at, tail.data, tail.len);
    fsn_buf_free(&tail);
    write_file(path, &b);
    CHECK(fsn_journal_open(&j, path, NULL, &err) == -1);
    CHECK_STR(err.code, "ECORRUPT");
    char want[128];
    snprintf(want, sizeof want, "corrupt record at offset %llu (a valid record follows at offset %llu)",
             (unsigned long long)good, (unsigned long long)at);
    CHECK(strstr(err.msg, want) != NULL);
    CHECK(file_size(path) == (off_t)b.len);
    fsn_buf_free(&b);
  }
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;
static uint32_t rnd(uint32_t n) {
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return (uint32_t)(rng_state % n);
}

/* Bytes that make candidates likely: magic, small lengths, zeros. */
static void add_noise(fsn_buf *b, size_t n) {
  static const unsigned char alphabet[] = {0xA1, 0xF5, 0x00, 0x01, 0x02, 0x05, 0x0A, '{', '}'};
  for (size_t i = 0; i < n; i++) fsn_buf_addc(b, (char)alphabet[rnd(sizeof alphabet)]);
}

/* Random tails (valid frames, nested frames, torn frames, fake headers,
 * noise) after a bad frame: the scan's verdict is the reference's. */
static void test_recovery_matches_reference(const char *tmp) {
  char path[512];
  snprintf(path, sizeof path, "%s/random.wal", tmp);
  int torn = 0, corrupt = 0;
  for (int round = 0; round < 2000; round++) {
    fsn_buf b, piece;
    fsn_buf_init(&b);
    fsn_buf_init(&piece);
    fsn_buf_add(&b, FSN_JOURNAL_HEADER, FSN_JOURNAL_HEADER_LEN);
    for (uint32_t i = rnd(4); i > 0; i--) add_frame(&b, "{\"a\":1}", 7);
    /* The bad frame: a damaged record, zeros, or noise. */
    switch (rnd(3)) {
    case 0: add_frame(&b, "{\"b\":2}", 7); b.data[b.len - 1 - rnd(17)] ^= 1; break;
    case 1: fsn_buf_add(&b, "\0\0\0\0\0\0\0\0\0\0\0\0", 1 + rnd(12)); break;
    default: add_noise(&b, 1 + rnd(20)); break;
    }
    for (uint32_t k = rnd(6); k > 0; k--) {
      fsn_buf_reset(&piece);
      switch (rnd(6)) {
      case 0: add_noise(&b, rnd(40)); break;
      case 1: /* a rare valid frame, its payload may hold magic bytes */
        if (rnd(4) == 0) {
          add_noise(&piece, 1 + rnd(30));
          add_frame(&b, piece.data, (uint32_t)piece.len);
        }
        break;
      case 2: /* a valid frame's bytes cut short */
        add_noise(&piece, 1 + rnd(30));
        add_frame(&b, piece.data, (uint32_t)piece.len);
        b.len -= 1 + rnd((uint32_t)piece.len + FSN_JOURNAL_FRAME_LEN - 1);
        break;
      case 3: { /* a header with a wrong checksum */
        unsigned char h[FSN_JOURNAL_FRAME_LEN] = {0xA1, 0xF5};
        put32le(h + 2, 1 + rnd(64));
        put32le(h + 6, (uint32_t)rng_state);
        fsn_buf_add(&b, h, sizeof h);
        break;
      }
      case 4: /* a frame inside a frame, then damaged outside or inside */
        add_noise(&piece, rnd(8));
        add_frame(&piece, "{}", 2);
        add_frame(&b, piece.data, (uint32_t)piece.len);
        if (rnd(2)) b.data[b.len - 1 - rnd((uint32_t)piece.len)] ^= 0x40;
        break;
      default: fsn_buf_add(&b, "\xA1\xF5", 2); break;
      }
    }
    CHECK(!b.oom);
    write_file(path, &b);
    uint64_t good, want = reference_scan((const unsigned char *)b.data, b.len, &good);
    fsn_journal j;
    fsn_err err;
    int rc = fsn_journal_open_readonly(&j, path, &err);
    if (want == 0) {
      torn++;
      CHECK(rc == 0 && j.torn_bytes == b.len - good && j.end == good);
      if (rc == 0) fsn_journal_close(&j, &err);
    } else {
      corrupt++;
      char msg[128];
      snprintf(msg, sizeof msg, "offset %llu (a valid record follows at offset %llu)",
               (unsigned long long)good, (unsigned long long)want);
      CHECK(rc == -1 && strstr(err.msg, msg) != NULL);
      if (rc == 0) fsn_journal_close(&j, &err);
    }
    fsn_buf_free(&piece);
    fsn_buf_free(&b);
  }
  printf("random tails: %d torn, %d corrupt\n", torn, corrupt);
  CHECK(torn > 200 && corrupt > 200);
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

  test_recovery_is_linear(tmp);
  test_recovery_matches_reference(tmp);

  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
  if (system(cmd) != 0) return 2;
  return check_done("test_journal");
}
