/* Shared pieces of the libFuzzer targets (docs/fuzzing.md). */
#ifndef FSN_FUZZ_H
#define FSN_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include <lua.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* Aborts with the message (a finding): libFuzzer saves the input. */
__attribute__((noreturn, format(printf, 1, 2))) void fz_die(const char *fmt, ...);

/* A fresh private directory for this process, made once: on /dev/shm when
 * there is one, since the journal and copy targets fsync on every input and
 * a disk would make each execution take milliseconds. */
const char *fz_tmpdir(void);
/* rm -rf path (never follows a symlink); dies when it cannot. */
void fz_rmtree(const char *path);
/* Writes data to path (created or truncated); dies when it cannot. */
void fz_write_file(const char *path, const void *data, size_t size);

/* A Lua 5.4 state with the standard libraries, package.path on the source
 * tree's lua/ (FLEETSNAP_SOURCE overrides the compiled-in path) and
 * fleetsnap.engine preloaded from the statically linked binding. */
lua_State *fz_lua_new(void);
/* Reports the Lua lines run (as line pairs) to libFuzzer as coverage. */
void fz_lua_coverage(lua_State *L);
/* Runs a chunk that must succeed (harness set-up); dies otherwise. */
void fz_lua_do(lua_State *L, const char *chunk, const char *name);

#endif
