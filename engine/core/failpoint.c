/* Failpoint parsing and hits. */
#include "failpoint.h"

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int fsn_failpoints_enabled(void) {
#ifdef FLEETSNAP_FAILPOINTS
  return 1;
#else
  return 0;
#endif
}

static int parse_one(fsn_failpoint_spec *s, const char *item, size_t len) {
  const char *colon = NULL;
  for (size_t i = len; i > 0; i--)
    if (item[i - 1] == ':') { colon = item + i - 1; break; }
  if (!colon || colon == item) return -1;
  char num[32];
  size_t nlen = len - (size_t)(colon + 1 - item);
  if (nlen == 0 || nlen >= sizeof num) return -1;
  memcpy(num, colon + 1, nlen);
  num[nlen] = 0;
  char *end;
  long n = strtol(num, &end, 10);
  if (*end || n < 1) return -1;
  const char *at = memchr(item, '@', (size_t)(colon - item));
  size_t plen = (size_t)((at ? at : colon) - item);
  if (plen == 0 || plen >= sizeof s->point) return -1;
  memset(s, 0, sizeof *s);
  memcpy(s->point, item, plen);
  if (at) {
    size_t klen = (size_t)(colon - at - 1);
    if (klen >= sizeof s->key) return -1;
    memcpy(s->key, at + 1, klen);
  } else {
    s->any_key = 1;
  }
  s->target = n;
  return 0;
}

int fsn_failpoints_trace(fsn_failpoints *fp, const char *path) {
  if (!path || !*path) return 0;
  fp->trace_fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  return fp->trace_fd >= 0 ? 0 : -1;
}

void fsn_failpoints_close(fsn_failpoints *fp) {
  if (fp->trace_fd >= 0) close(fp->trace_fd);
  fp->trace_fd = -1;
}

int fsn_failpoints_parse(fsn_failpoints *fp, const char *spec) {
  memset(fp, 0, sizeof *fp);
  fp->trace_fd = -1;
  if (!spec) return 0;
  const char *p = spec;
  while (*p) {
    const char *comma = strchr(p, ',');
    size_t len = comma ? (size_t)(comma - p) : strlen(p);
    if (len > 0) {
      if (fp->count == FSN_FAILPOINT_MAX) return -1;
      if (parse_one(&fp->specs[fp->count], p, len) != 0) return -1;
      fp->count++;
    }
    if (!comma) break;
    p = comma + 1;
  }
  return 0;
}

int fsn_failpoint_hit(fsn_failpoints *fp, const char *point, const char *key) {
#ifdef FLEETSNAP_FAILPOINTS
  if (!fp) return 0;
  if (fp->trace_fd >= 0) {
    char line[320];
    int n = snprintf(line, sizeof line, "%s@%s\n", point, key ? key : "");
    if (n > 0 && (size_t)n < sizeof line) {
      ssize_t w = write(fp->trace_fd, line, (size_t)n);
      (void)w;
    }
  }
  int matched = 0;
  for (int i = 0; i < fp->count; i++) {
    fsn_failpoint_spec *s = &fp->specs[i];
    if (strcmp(s->point, point) != 0) continue;
    if (!s->any_key && strcmp(s->key, key ? key : "") != 0) continue;
    matched++;
    if (++s->hits == s->target) {
      /* The message lets a crash test confirm where the process died. */
      char line[320];
      int n = snprintf(line, sizeof line, "fleetsnap failpoint %s@%s: kill\n",
                       point, key ? key : "");
      if (n > 0) {
        ssize_t w = write(2, line, (size_t)n < sizeof line ? (size_t)n : sizeof line - 1);
        (void)w;
      }
      kill(getpid(), SIGKILL);
      pause();
    }
  }
  return matched;
#else
  (void)fp;
  (void)point;
  (void)key;
  return 0;
#endif
}
