/* engine.fs: durable writes, publication, staging dirs, path checks. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "aux.h"
#include "fs.h"
#include "pathwalk.h"

static const char *const write_opts[] = {"mode", "key", NULL};

static mode_t mode_option(lua_State *L, int idx) {
  lua_Integer mode = fsn_lua_opt_integer(L, idx, "mode", 0600);
  if (mode < 0 || mode > 07777) luaL_error(L, "option 'mode' must be a permission mode");
  return (mode_t)mode;
}

static int l_write_replace(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  fsn_lua_check_options(L, 3, write_opts);
  mode_t mode = mode_option(L, 3);
  const char *key = fsn_lua_opt_string(L, 3, "key", NULL);
  fsn_err err;
  if (fsn_write_replace(path, data, len, mode, &fsn_lua_state(L)->fp, key, &err) != 0)
    return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write_create(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  fsn_lua_check_options(L, 3, write_opts);
  mode_t mode = mode_option(L, 3);
  const char *key = fsn_lua_opt_string(L, 3, "key", NULL);
  int adopted = 0;
  fsn_err err;
  if (fsn_write_create(path, data, len, mode, &adopted, &fsn_lua_state(L)->fp, key, &err) != 0)
    return fsn_lua_fail(L, &err);
  lua_pushstring(L, adopted ? "adopted" : "created");
  return 1;
}

static int l_publish_dir(lua_State *L) {
  const char *src = luaL_checkstring(L, 1);
  const char *dst = luaL_checkstring(L, 2);
  static const char *const allowed[] = {"key", "private", "synced", NULL};
  fsn_lua_check_options(L, 3, allowed);
  const char *key = fsn_lua_opt_string(L, 3, "key", NULL);
  int flags = (fsn_lua_opt_boolean(L, 3, "private", 0) ? FSN_PUBLISH_PRIVATE : 0) |
              (fsn_lua_opt_boolean(L, 3, "synced", 0) ? FSN_PUBLISH_SYNCED : 0);
  fsn_err err;
  if (fsn_publish_dir(src, dst, flags, &fsn_lua_state(L)->fp, key, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

/* fs.sync_tree(path [, {private, start}]): every file and directory of
 * path on disk (and private), without publishing it. start: only start
 * the files' writeback, without waiting (before reading the tree whole). */
static int l_sync_tree(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  static const char *const allowed[] = {"private", "start", NULL};
  fsn_lua_check_options(L, 2, allowed);
  int private_modes = fsn_lua_opt_boolean(L, 2, "private", 0);
  int start = fsn_lua_opt_boolean(L, 2, "start", 0);
  if (start && private_modes) return luaL_error(L, "options 'start' and 'private' exclude each other");
  fsn_err err;
  if ((start ? fsn_start_writeback_tree(path, &err) : fsn_sync_dir_tree(path, private_modes, &err)) != 0)
    return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_mkdir_private(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int created = 0;
  fsn_err err;
  if (fsn_mkdir_private(path, &created, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  lua_pushboolean(L, created);
  return 2;
}

static int l_remove_tree(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int removed = 0;
  fsn_err err;
  if (fsn_remove_tree(path, &removed, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  lua_pushboolean(L, removed);
  return 2;
}

static int l_safe_relative(lua_State *L) {
  size_t len;
  const char *path = luaL_checklstring(L, 1, &len);
  fsn_err err;
  if (fsn_safe_relative(path, len, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_free_space(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  uint64_t avail, total;
  fsn_err err;
  if (fsn_free_space(path, &avail, &total, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushinteger(L, (lua_Integer)avail);
  lua_pushinteger(L, (lua_Integer)total);
  return 2;
}

static int l_read(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer max = luaL_optinteger(L, 2, (lua_Integer)256 << 20);
  luaL_argcheck(L, max >= 0, 2, "limit must not be negative");
  fsn_buf *b = fsn_lua_newbuf(L);
  fsn_err err;
  if (fsn_read_file(path, (size_t)max, b, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

static const char *type_name(mode_t m) {
  if (S_ISREG(m)) return "file";
  if (S_ISDIR(m)) return "directory";
  if (S_ISLNK(m)) return "symlink";
  if (S_ISFIFO(m)) return "fifo";
  if (S_ISSOCK(m)) return "socket";
  if (S_ISCHR(m)) return "char";
  if (S_ISBLK(m)) return "block";
  return "unknown";
}

static int l_lstat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (lstat(path, &st) != 0) {
    fsn_err err;
    fsn_fail_errno(&err, errno, "stat '%s'", path);
    return fsn_lua_fail(L, &err);
  }
  lua_createtable(L, 0, 5);
  lua_pushstring(L, type_name(st.st_mode));
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, (lua_Integer)st.st_size);
  lua_setfield(L, -2, "size");
  lua_pushinteger(L, (lua_Integer)(st.st_mode & 07777));
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)st.st_uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, (lua_Integer)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
  lua_setfield(L, -2, "mtime_ns");
  return 1;
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

static int l_list(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fsn_err err;
  DIR *d = opendir(path);
  if (!d) {
    fsn_fail_errno(&err, errno, "list '%s'", path);
    return fsn_lua_fail(L, &err);
  }
  /* Names are gathered into a buffer first: nothing may raise while the
   * DIR is open. */
  fsn_buf *names = fsn_lua_newbuf(L);
  size_t count = 0;
  struct dirent *de;
  /* errno is reset before every readdir: only its own failure may be read
   * from it, not something the buffer's realloc left there on success. */
  while ((errno = 0, de = readdir(d)) != NULL) {
    if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
    fsn_buf_add(names, de->d_name, strlen(de->d_name) + 1);
    count++;
  }
  int e = errno;
  closedir(d);
  if (e) {
    fsn_fail_errno(&err, e, "list '%s'", path);
    return fsn_lua_fail(L, &err);
  }
  if (names->oom) return luaL_error(L, "out of memory");
  char **ptrs = lua_newuserdatauv(L, (count ? count : 1) * sizeof *ptrs, 0);
  char *p = names->data;
  for (size_t i = 0; i < count; i++) {
    ptrs[i] = p;
    p += strlen(p) + 1;
  }
  qsort(ptrs, count, sizeof *ptrs, cmp_str);
  lua_createtable(L, (int)count, 0);
  for (size_t i = 0; i < count; i++) {
    lua_pushstring(L, ptrs[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static int l_fsync_dir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  fsn_err err;
  if (fsn_fsync_dir(path, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg funcs[] = {
  {"write_replace", l_write_replace},
  {"write_create", l_write_create},
  {"publish_dir", l_publish_dir},
  {"sync_tree", l_sync_tree},
  {"mkdir_private", l_mkdir_private},
  {"remove_tree", l_remove_tree},
  {"safe_relative", l_safe_relative},
  {"free_space", l_free_space},
  {"read", l_read},
  {"lstat", l_lstat},
  {"list", l_list},
  {"fsync_dir", l_fsync_dir},
  {NULL, NULL},
};

void fsn_open_fs(lua_State *L, int state_idx) { fsn_lua_register(L, state_idx, "fs", funcs); }
