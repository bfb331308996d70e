/* engine.proc: spawn, wait_any, run. */
#include <errno.h>
#include <signal.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

#include "aux.h"
#include "proc.h"
#include "signals.h"

#define PROC_TYPE "fleetsnap.Process"
#define DEFAULT_CAPTURE ((lua_Integer)1 << 20)

extern char **environ;

typedef struct proc_ud {
  fsn_proc p;
} proc_ud;

static int proc_close(lua_State *L) {
  proc_ud *u = luaL_checkudata(L, 1, PROC_TYPE);
  fsn_proc_close(&u->p);
  return 0;
}

static proc_ud *check_proc(lua_State *L, int idx) {
  proc_ud *u = luaL_checkudata(L, idx, PROC_TYPE);
  if (u->p.pid <= 0) luaL_error(L, "process handle is closed");
  return u;
}

/* Collects the strings of the array at idx into a userdata-owned char*[]
 * (NULL-terminated); the strings stay anchored by the array. */
static char **string_array(lua_State *L, int idx, const char *what, size_t *n_out) {
  size_t n = lua_rawlen(L, idx);
  char **v = lua_newuserdatauv(L, (n + 1) * sizeof *v, 0);
  for (size_t i = 0; i < n; i++) {
    if (lua_rawgeti(L, idx, (lua_Integer)i + 1) != LUA_TSTRING)
      luaL_error(L, "%s[%d] must be a string", what, (int)i + 1);
    v[i] = (char *)lua_tostring(L, -1);
    lua_pop(L, 1);
  }
  v[n] = NULL;
  if (n_out) *n_out = n;
  return v;
}

static const char *const spawn_opts[] = {
  "argv", "env", "unset_env", "cwd", "stdin", "inherit",
  "capture_limit", "timeout_ms", "kill_grace_ms", NULL,
};

/* Spawns from the options at index 1; pushes the handle or nil,msg,code. */
static int do_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  fsn_lua_check_options(L, 1, spawn_opts);
  fsn_spawn_opts o;
  memset(&o, 0, sizeof o);

  if (lua_getfield(L, 1, "argv") != LUA_TTABLE) luaL_error(L, "option 'argv' must be an array of strings");
  int argv_idx = lua_gettop(L);
  size_t argc;
  o.argv = string_array(L, argv_idx, "argv", &argc);
  if (argc == 0) luaL_error(L, "option 'argv' must not be empty");

  /* env: NAME -> value pairs, rendered "NAME=value" into an anchoring table. */
  lua_newtable(L);
  int set_idx = lua_gettop(L);
  if (lua_getfield(L, 1, "env") == LUA_TTABLE) {
    lua_pushnil(L);
    while (lua_next(L, -2)) {
      if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "option 'env' must map names to strings");
      const char *k = lua_tostring(L, -2);
      if (!*k || strchr(k, '=')) luaL_error(L, "bad environment variable name '%s'", k);
      lua_pushfstring(L, "%s=%s", k, lua_tostring(L, -1));
      lua_rawseti(L, set_idx, (lua_Integer)lua_rawlen(L, set_idx) + 1);
      lua_pop(L, 1);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'env' must be a table");
  }
  lua_pop(L, 1);
  size_t nset;
  char **set = string_array(L, set_idx, "env", &nset);

  /* unset_env, plus the failpoint variable: a child never inherits the
   * parent's crash point (a crash test passes one explicitly in env). */
  lua_newtable(L);
  int unset_idx = lua_gettop(L);
  lua_pushliteral(L, "FLEETSNAP_FAILPOINT");
  lua_rawseti(L, unset_idx, 1);
  lua_pushliteral(L, "FLEETSNAP_FAILPOINT_TRACE");
  lua_rawseti(L, unset_idx, 2);
  if (lua_getfield(L, 1, "unset_env") == LUA_TTABLE) {
    size_t n = lua_rawlen(L, -1);
    for (size_t i = 1; i <= n; i++) {
      if (lua_rawgeti(L, -1, (lua_Integer)i) != LUA_TSTRING) luaL_error(L, "unset_env[%d] must be a string", (int)i);
      lua_rawseti(L, unset_idx, (lua_Integer)i + 2);
    }
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'unset_env' must be an array of names");
  }
  lua_pop(L, 1);
  size_t nunset;
  char **unset = string_array(L, unset_idx, "unset_env", &nunset);

  o.cwd = fsn_lua_opt_string(L, 1, "cwd", NULL);
  if (lua_getfield(L, 1, "stdin") == LUA_TSTRING) {
    o.stdin_data = lua_tolstring(L, -1, &o.stdin_len); /* anchored by opts */
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'stdin' must be a string");
  }
  lua_pop(L, 1);

  int *fds = NULL;
  if (lua_getfield(L, 1, "inherit") == LUA_TTABLE) {
    size_t n = lua_rawlen(L, -1);
    fds = lua_newuserdatauv(L, (n ? n : 1) * sizeof *fds, 0);
    for (size_t i = 0; i < n; i++) {
      lua_rawgeti(L, -2, (lua_Integer)i + 1);
      fds[i] = fsn_lua_lock_fd(L, -1);
      lua_pop(L, 1);
    }
    o.inherit_fds = fds;
    o.n_inherit = n; /* the table and the fds box stay on the stack */
  } else if (!lua_isnil(L, -1)) {
    luaL_error(L, "option 'inherit' must be an array of locks");
  }

  lua_Integer cap = fsn_lua_opt_integer(L, 1, "capture_limit", DEFAULT_CAPTURE);
  if (cap < 0 || cap > ((lua_Integer)1 << 30)) luaL_error(L, "option 'capture_limit' out of range");
  o.capture_limit = (size_t)cap;
  o.timeout_ms = (long)fsn_lua_opt_integer(L, 1, "timeout_ms", 0);
  o.kill_grace_ms = (long)fsn_lua_opt_integer(L, 1, "kill_grace_ms", 2000);

  proc_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  fsn_proc_init(&u->p);
  luaL_setmetatable(L, PROC_TYPE);

  /* The environment array is the one malloc that no userdata owns: it is
   * built and freed with no Lua call in between. */
  char **env = fsn_env_build(environ, set, nset, unset, nunset);
  if (!env) return luaL_error(L, "out of memory");
  fsn_err err;
  o.envp = env;
  int rc = fsn_proc_spawn(&u->p, &o, &err);
  free(env);
  if (rc != 0) return fsn_lua_fail(L, &err);
  return 1;
}

static void push_result(lua_State *L, fsn_proc *p) {
  lua_createtable(L, 0, 8);
  if (p->signal) {
    lua_pushinteger(L, p->signal);
    lua_setfield(L, -2, "signal");
  } else {
    lua_pushinteger(L, p->status);
    lua_setfield(L, -2, "status");
  }
  char *tmp = lua_newuserdatauv(L, p->out.len > p->err.len ? p->out.len + 1 : p->err.len + 1, 0);
  size_t n = fsn_ring_copy(&p->out, tmp);
  lua_pushlstring(L, tmp, n);
  lua_setfield(L, -3, "stdout");
  n = fsn_ring_copy(&p->err, tmp);
  lua_pushlstring(L, tmp, n);
  lua_setfield(L, -3, "stderr");
  lua_pop(L, 1);
  lua_pushinteger(L, (lua_Integer)p->out.total);
  lua_setfield(L, -2, "stdout_bytes");
  lua_pushinteger(L, (lua_Integer)p->err.total);
  lua_setfield(L, -2, "stderr_bytes");
  lua_pushinteger(L, (lua_Integer)(p->end_ms - p->start_ms));
  lua_setfield(L, -2, "elapsed_ms");
  lua_pushboolean(L, p->timed_out);
  lua_setfield(L, -2, "timed_out");
  lua_pushinteger(L, (lua_Integer)p->pid);
  lua_setfield(L, -2, "pid");
  lua_pushinteger(L, (lua_Integer)p->cpu_ns);
  lua_setfield(L, -2, "cpu_ns");
  lua_pushinteger(L, (lua_Integer)p->maxrss_kib);
  lua_setfield(L, -2, "maxrss_kib");
}

static int l_spawn(lua_State *L) {
  lua_settop(L, 1);
  return do_spawn(L);
}

static int l_run(lua_State *L) {
  lua_settop(L, 1);
  int n = do_spawn(L);
  if (n != 1) return n;
  proc_ud *u = lua_touserdata(L, -1);
  fsn_proc *p = &u->p;
  fsn_proc_wait_any(&p, 1, -1, NULL); /* signals stay pending for the caller */
  push_result(L, p);
  lua_insert(L, -2);
  fsn_proc_close(p);
  lua_pop(L, 1);
  return 1;
}

/* wait_any(handles [, timeout_ms]): handles are processes and hash tasks
 * (hash.start_tree); returns the first that finished. */
static int l_wait_any(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer timeout = luaL_optinteger(L, 2, -1);
  size_t n = lua_rawlen(L, 1);
  if (n == 0) luaL_argerror(L, 1, "no handles to wait for");
  /* Processes first, then task descriptors; at[k] is the handle's index. */
  fsn_proc **ps = lua_newuserdatauv(L, n * (sizeof *ps + sizeof(size_t) + sizeof(int)), 0);
  size_t *at = (size_t *)(ps + n);
  int *fds = (int *)(at + n);
  size_t np = 0, nt = 0;
  for (size_t i = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    int fd = fsn_lua_hash_task_fd(L, -1);
    if (fd == -2) {
      at[np] = i;
      ps[np++] = &check_proc(L, -1)->p;
    } else {
      fds[nt++] = fd;
    }
    lua_pop(L, 1);
  }
  for (size_t i = 0, j = 0; i < n; i++) {
    lua_rawgeti(L, 1, (lua_Integer)i + 1);
    if (!luaL_testudata(L, -1, PROC_TYPE)) at[np + j++] = i;
    lua_pop(L, 1);
  }
  int sig = 0;
  int found = fsn_wait_any(ps, np, fds, nt, (long)timeout, &sig);
  if (found == -2) {
    luaL_pushfail(L);
    if (fsn_signal_name(sig)) lua_pushfstring(L, "interrupted by %s", fsn_signal_name(sig));
    else lua_pushliteral(L, "interrupted by a signal");
    lua_pushliteral(L, "EINTR");
    return 3;
  }
  if (found < 0) {
    luaL_pushfail(L);
    return 1;
  }
  lua_rawgeti(L, 1, (lua_Integer)at[found] + 1);
  return 1;
}

static int m_result(lua_State *L) {
  proc_ud *u = check_proc(L, 1);
  fsn_proc *p = &u->p;
  fsn_proc_wait_any(&p, 1, -1, NULL);
  push_result(L, p);
  return 1;
}

static int m_done(lua_State *L) {
  proc_ud *u = check_proc(L, 1);
  fsn_proc_step(&u->p);
  lua_pushboolean(L, u->p.finished);
  return 1;
}

static int m_pid(lua_State *L) {
  proc_ud *u = check_proc(L, 1);
  lua_pushinteger(L, (lua_Integer)u->p.pid);
  return 1;
}

static int m_kill(lua_State *L) {
  proc_ud *u = check_proc(L, 1);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  fsn_err err;
  if (fsn_proc_kill(&u->p, sig, &err) != 0) return fsn_lua_fail(L, &err);
  lua_pushboolean(L, 1);
  return 1;
}

static int m_tostring(lua_State *L) {
  proc_ud *u = luaL_checkudata(L, 1, PROC_TYPE);
  if (u->p.pid <= 0) lua_pushliteral(L, "fleetsnap.Process (closed)");
  else lua_pushfstring(L, "fleetsnap.Process (pid %d%s)", (int)u->p.pid, u->p.finished ? ", finished" : "");
  return 1;
}

static const luaL_Reg methods[] = {
  {"result", m_result},
  {"done", m_done},
  {"pid", m_pid},
  {"kill", m_kill},
  {"close", proc_close},
  {NULL, NULL},
};

static const luaL_Reg meta[] = {
  {"__gc", proc_close},
  {"__close", proc_close},
  {"__tostring", m_tostring},
  {NULL, NULL},
};

static int l_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* Sends sig to a process (or, with a negative pid, a process group). */
static int l_signal(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  int sig = (int)luaL_optinteger(L, 2, SIGTERM);
  luaL_argcheck(L, pid != 0 && pid != -1, 1, "refusing to signal every process");
  if (kill((pid_t)pid, sig) != 0) {
    fsn_err err;
    fsn_fail_errno(&err, errno, "signal %d to %lld", sig, (long long)pid);
    return fsn_lua_fail(L, &err);
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* proc.cpu(): {self_ns, children_ns}, user + system CPU time of this
 * process and of its reaped children (what a benchmark subtracts). */
static int l_cpu(lua_State *L) {
  int64_t self, children;
  fsn_cpu_ns(&self, &children);
  lua_createtable(L, 0, 2);
  lua_pushinteger(L, (lua_Integer)self);
  lua_setfield(L, -2, "self_ns");
  lua_pushinteger(L, (lua_Integer)children);
  lua_setfield(L, -2, "children_ns");
  return 1;
}

static const luaL_Reg funcs[] = {
  {"cpu", l_cpu},
  {"pid", l_pid},
  {"signal", l_signal},
  {"spawn", l_spawn},
  {"run", l_run},
  {"wait_any", l_wait_any},
  {NULL, NULL},
};

void fsn_open_proc(lua_State *L, int state_idx) {
  fsn_lua_class(L, PROC_TYPE, methods, meta);
  fsn_lua_register(L, state_idx, "proc", funcs);
}
