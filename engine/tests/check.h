/* A minimal test harness for the engine core: CHECK records a failure and
 * goes on, so one run reports every broken expectation. */
#ifndef FSN_CHECK_H
#define FSN_CHECK_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int check_failures = 0;
static int check_count = 0;

#define CHECK(cond)                                                          \
  do {                                                                       \
    check_count++;                                                           \
    if (!(cond)) {                                                           \
      check_failures++;                                                      \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

#define CHECK_STR(a, b)                                                      \
  do {                                                                       \
    const char *a_ = (a), *b_ = (b);                                         \
    check_count++;                                                           \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                 \
      check_failures++;                                                      \
      fprintf(stderr, "%s:%d: '%s' != '%s'\n", __FILE__, __LINE__,           \
              a_ ? a_ : "(null)", b_ ? b_ : "(null)");                       \
    }                                                                        \
  } while (0)

__attribute__((unused)) static int check_done(const char *name) {
  printf("%s: %d checks, %d failed\n", name, check_count, check_failures);
  return check_failures ? 1 : 0;
}

/* A fresh temporary directory for one test program. */
__attribute__((unused)) static char *check_tmpdir(void) {
  static char dir[] = "/tmp/fsn-test-XXXXXX";
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    exit(2);
  }
  return dir;
}

#endif
