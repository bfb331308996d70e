/* Failpoints: crash-test hooks. FLEETSNAP_FAILPOINT="<point>[@<key>]:<n>[,...]"
 * makes the process SIGKILL itself the n-th time it reaches <point> with
 * <key> (any key when none is given). Counting per spec keeps crash tests
 * reproducible when operations run concurrently. Compiled in only with
 * FLEETSNAP_FAILPOINTS; otherwise every hit is a no-op. */
#ifndef FSN_FAILPOINT_H
#define FSN_FAILPOINT_H

#include <stddef.h>

#define FSN_FAILPOINT_MAX 16

typedef struct fsn_failpoint_spec {
  char point[64];
  char key[192];
  int any_key;
  long target; /* kill at this hit */
  long hits;
} fsn_failpoint_spec;

typedef struct fsn_failpoints {
  int count;
  fsn_failpoint_spec specs[FSN_FAILPOINT_MAX];
  int trace_fd; /* >= 0: every hit is appended there as "point@key\n" */
} fsn_failpoints;

/* Parse a spec string (NULL or "" gives no failpoints). -1 on a bad spec. */
int fsn_failpoints_parse(fsn_failpoints *fp, const char *spec);
/* Count a hit; kills the process when a spec reaches its target. fp may be
 * NULL. Returns the number of specs that matched (for tests). */
int fsn_failpoint_hit(fsn_failpoints *fp, const char *point, const char *key);
int fsn_failpoints_enabled(void);
/* FLEETSNAP_FAILPOINT_TRACE=<file>: record every hit (crash tests use it to
 * enumerate the points a run reaches). -1 if the file cannot be opened. */
int fsn_failpoints_trace(fsn_failpoints *fp, const char *path);
void fsn_failpoints_close(fsn_failpoints *fp);

#endif
