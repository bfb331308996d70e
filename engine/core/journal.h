/* The write-ahead journal: an append-only file of framed records.
 *
 *   header  "fleetsnap-wal 1\n"                        (16 bytes)
 *   frame   A1 F5 | u32le length | u32le crc32c(length bytes, payload) | payload
 *
 * Records are synced in groups (write, write, ..., sync = one fdatasync). On
 * open, an invalid frame with no valid frame after it is a torn tail from a
 * crash and is cut; an invalid frame followed by a valid one (at any
 * offset) is corruption and the journal is refused with the offset; that
 * search is linear in the file size. Failpoints: before-append and
 * after-append once per record (key = the record's key) around the sync,
 * before-compact and after-compact (key = file name). */
#ifndef FSN_JOURNAL_H
#define FSN_JOURNAL_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "err.h"
#include "failpoint.h"

#define FSN_JOURNAL_HEADER "fleetsnap-wal 1\n"
#define FSN_JOURNAL_HEADER_LEN 16
#define FSN_JOURNAL_FRAME_LEN 10
#define FSN_JOURNAL_MAX_RECORD (64u << 20)

typedef struct fsn_journal {
  int fd; /* -1 when closed */
  char *path;
  uint64_t end;     /* durable length of the file */
  uint64_t records; /* durable records */
  uint64_t torn_bytes;
  /* Bytes examined by open's recovery scan (each checksummed or searched
   * byte, each candidate frame header): tests hold it linear in the size. */
  uint64_t scan_work;
  int created;
  int readonly; /* opened for reading while a runner may be writing */
  int broken;   /* a write or sync failed: nothing more is accepted */
  fsn_buf pending;
  fsn_buf pending_keys; /* NUL-terminated keys, one per pending record */
  size_t npending;
  fsn_failpoints *fp;
} fsn_journal;

void fsn_journal_init(fsn_journal *j);
int fsn_journal_open(fsn_journal *j, const char *path, fsn_failpoints *fp, fsn_err *err);
/* Opens for reading only: nothing is created, repaired or written; a torn
 * tail (perhaps a record being appended right now) is only left out. */
int fsn_journal_open_readonly(fsn_journal *j, const char *path, fsn_err *err);
int fsn_journal_write(fsn_journal *j, const void *payload, size_t len, const char *key,
                      fsn_err *err);
int fsn_journal_sync(fsn_journal *j, fsn_err *err);
/* Reads the record at *offset (start with 0) into out; 1 = a record, 0 = end. */
int fsn_journal_next(fsn_journal *j, uint64_t *offset, fsn_buf *out, fsn_err *err);
/* Atomically replaces the whole journal by one checkpoint record. */
int fsn_journal_compact(fsn_journal *j, const void *payload, size_t len, fsn_err *err);
/* Syncs what is pending, then closes. Idempotent. */
int fsn_journal_close(fsn_journal *j, fsn_err *err);

#endif
