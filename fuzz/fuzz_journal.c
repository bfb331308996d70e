/* Target `journal`: open, recovery and iteration of the write-ahead journal
 * on arbitrary bytes. The input is written as a journal file; then
 *
 *  1. a read-only open and a read-write open (which cuts a torn tail) must
 *     agree: both refuse (with the same code) or both accept, and iterating
 *     gives the same records, as many as the open counted, with no error;
 *  2. after recovery, an append and a reopen must find no torn bytes and
 *     one more record, the new one last;
 *  3. a compaction leaves exactly its checkpoint record.
 * Crashes, leaks and sanitizer reports are findings too. A custom mutator
 * keeps valid frames coming (see seal). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "crc32c.h"
#include "fuzz.h"
#include "journal.h"

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed);

static uint32_t get32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static void put32(uint8_t *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

/* Gives every frame-shaped run (magic, a length that fits) its checksum:
 * random bytes almost never carry a valid CRC-32C, and without valid
 * frames after damaged ones the recovery's search is never reached. */
static void seal(uint8_t *data, size_t size) {
  size_t off = FSN_JOURNAL_HEADER_LEN;
  while (off + FSN_JOURNAL_FRAME_LEN <= size) {
    uint8_t *p = data + off;
    uint32_t len = get32(p + 2);
    if (p[0] == 0xA1 && p[1] == 0xF5 && len > 0 && len <= size - off - FSN_JOURNAL_FRAME_LEN) {
      put32(p + 6, fsn_crc32c_update(fsn_crc32c_update(0, p + 2, 4), p + FSN_JOURNAL_FRAME_LEN, len));
      off += FSN_JOURNAL_FRAME_LEN + len;
    } else {
      off++;
    }
  }
}

/* libFuzzer's own mutations, then one of: nothing (damage stays damage),
 * sealing the frames, or a new valid frame inserted at a random offset. */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
  size = LLVMFuzzerMutate(data, size, max_size);
  switch (seed % 3) {
    case 1:
      seal(data, size);
      break;
    case 2: {
      size_t len = 1 + (seed >> 2) % 24;
      if (size + FSN_JOURNAL_FRAME_LEN + len > max_size) break;
      size_t at = size ? (seed >> 7) % (size + 1) : 0;
      memmove(data + at + FSN_JOURNAL_FRAME_LEN + len, data + at, size - at);
      uint8_t *p = data + at;
      p[0] = 0xA1;
      p[1] = 0xF5;
      put32(p + 2, (uint32_t)len);
      for (size_t i = 0; i < len; i++) p[FSN_JOURNAL_FRAME_LEN + i] = (uint8_t)('a' + (seed + i) % 26);
      put32(p + 6, fsn_crc32c_update(fsn_crc32c_update(0, p + 2, 4), p + FSN_JOURNAL_FRAME_LEN, len));
      size += FSN_JOURNAL_FRAME_LEN + len;
      break;
    }
  }
  return size;
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  return 0;
}

/* The records of an open journal, each as u64 length + bytes, into all. */
static uint64_t read_all(fsn_journal *j, fsn_buf *all, const char *what) {
  fsn_buf rec;
  fsn_buf_init(&rec);
  fsn_err err;
  uint64_t off = 0, n = 0;
  int rc;
  while ((rc = fsn_journal_next(j, &off, &rec, &err)) == 1) {
    uint64_t len = rec.len;
    fsn_buf_add(all, &len, sizeof len);
    fsn_buf_add(all, rec.data, rec.len);
    n++;
  }
  if (rc != 0) fz_die("%s: iteration of an accepted journal failed: %s %s", what, err.code, err.msg);
  if (n != j->records) fz_die("%s: open counted %llu records, iteration found %llu", what,
                              (unsigned long long)j->records, (unsigned long long)n);
  fsn_buf_free(&rec);
  return n;
}

static void close_or_die(fsn_journal *j, const char *what) {
  fsn_err err;
  if (fsn_journal_close(j, &err) != 0) fz_die("%s: close: %s %s", what, err.code, err.msg);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[512];
  snprintf(path, sizeof path, "%s/journal", fz_tmpdir());
  fz_rmtree(path);
  fz_write_file(path, data, size);

  fsn_journal ro, rw;
  fsn_err ero, erw;
  fsn_buf a, b;
  fsn_buf_init(&a);
  fsn_buf_init(&b);
  int rc_ro = fsn_journal_open_readonly(&ro, path, &ero);
  uint64_t n = 0;
  if (rc_ro == 0) {
    n = read_all(&ro, &a, "read-only");
    close_or_die(&ro, "read-only");
  }
  int rc_rw = fsn_journal_open(&rw, path, NULL, &erw);
  if (rc_ro != rc_rw)
    fz_die("read-only open %s, read-write open %s (%s / %s)", rc_ro ? "refused" : "accepted",
           rc_rw ? "refused" : "accepted", rc_ro ? ero.msg : "", rc_rw ? erw.msg : "");
  if (rc_rw != 0) {
    if (strcmp(ero.code, erw.code) != 0) fz_die("refused with %s read-only, %s read-write", ero.code, erw.code);
    if (strcmp(erw.code, "ECORRUPT") != 0) fz_die("refused with %s: %s", erw.code, erw.msg);
    fsn_buf_free(&a);
    return 0;
  }
  if (read_all(&rw, &b, "recovered") != n || a.len != b.len || (a.len && memcmp(a.data, b.data, a.len) != 0))
    fz_die("the read-only and the recovered journal hold different records");

  /* Append one record after recovery: nothing torn may remain. */
  fsn_err err;
  static const char payload[] = "fuzz: appended after recovery";
  if (fsn_journal_write(&rw, payload, sizeof payload - 1, "k", &err) != 0 || fsn_journal_sync(&rw, &err) != 0)
    fz_die("append after recovery: %s %s", err.code, err.msg);
  close_or_die(&rw, "recovered");
  if (fsn_journal_open(&rw, path, NULL, &err) != 0) fz_die("reopen after append: %s %s", err.code, err.msg);
  if (rw.torn_bytes != 0) fz_die("%llu torn bytes after a clean append", (unsigned long long)rw.torn_bytes);
  fsn_buf c;
  fsn_buf_init(&c);
  if (read_all(&rw, &c, "appended") != n + 1) fz_die("the append is not one more record");
  uint64_t len = sizeof payload - 1;
  fsn_buf_add(&b, &len, sizeof len);
  fsn_buf_add(&b, payload, sizeof payload - 1);
  if (c.len != b.len || memcmp(c.data, b.data, b.len) != 0) fz_die("the records changed on append");

  static const char checkpoint[] = "fuzz: checkpoint";
  if (fsn_journal_compact(&rw, checkpoint, sizeof checkpoint - 1, &err) != 0)
    fz_die("compact: %s %s", err.code, err.msg);
  close_or_die(&rw, "compacted");
  if (fsn_journal_open_readonly(&ro, path, &err) != 0) fz_die("reopen after compact: %s %s", err.code, err.msg);
  fsn_buf_reset(&c);
  if (read_all(&ro, &c, "compacted") != 1 || c.len != 8 + sizeof checkpoint - 1 ||
      memcmp(c.data + 8, checkpoint, sizeof checkpoint - 1) != 0)
    fz_die("a compacted journal is not its checkpoint alone");
  close_or_die(&ro, "compacted");
  fsn_buf_free(&a);
  fsn_buf_free(&b);
  fsn_buf_free(&c);
  return 0;
}
