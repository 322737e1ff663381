/*
 * runtime.c -- a cogpipe runtime: one Lua state on one libuv loop. Owns the
 * state, the loop (when it made it), the scheduler, the run's outcome, and
 * the order of shutdown. What tasks do is task.c's; what modules offer is
 * lua_core.c's and the bindings'.
 */
#define _GNU_SOURCE /* dladdr */
#include "runtime.h"

#include <dlfcn.h>
#include <errno.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "buf.h"
#include "lutil.h"
#include "modules.h"
#include "scheduler.h"

#ifndef CP_VERSION_STRING
#define CP_VERSION_STRING "0.0.0"
#endif
#ifndef CP_LUA_INSTALL_DIR
#define CP_LUA_INSTALL_DIR "/usr/local/share/cogpipe/lua"
#endif


typedef struct close_hook {
  int id;
  cp_close_fn fn;
  void *data;
  struct close_hook *next;
} close_hook;

struct cp_runtime {
  lua_State *L;
  uv_loop_t *loop;
  uv_loop_t own_loop;
  int owns_loop;
  char *lua_dir;
  cp_sched *sched;
  long open_handles;
  close_hook *hooks;
  int next_hook_id;
  int natives_ref; /* table of functions registered by the embedder */

  /* the current run */
  int running;
  cp_task *main;
  int main_ref;    /* keeps the main task object (and its results) alive */
  cp_status status;
  cp_status requested; /* the highest status a script asked for */
  int remote_failed;
  char *error;
  cp_done_cb done;
  void *done_data;
};

const char *cp_version(void) { return CP_VERSION_STRING; }

cp_runtime *cp_runtime_from_lua(lua_State *L) {
  return *(cp_runtime **)lua_getextraspace(L);
}

lua_State *cp_runtime_main_lua(cp_runtime *rt) { return rt->L; }
lua_State *cp_runtime_lua(cp_runtime *rt) { return rt->L; }
uv_loop_t *cp_runtime_loop(cp_runtime *rt) { return rt->loop; }
cp_sched *cp_runtime_sched(cp_runtime *rt) { return rt->sched; }
void cp_runtime_handle_inc(cp_runtime *rt) { rt->open_handles++; }
void cp_runtime_handle_dec(cp_runtime *rt) { rt->open_handles--; }
void cp_runtime_note_failure(cp_runtime *rt) { rt->remote_failed = 1; }

void cp_runtime_request_status(cp_runtime *rt, cp_status st) {
  if (st > rt->requested) rt->requested = st;
}

int cp_runtime_on_close(cp_runtime *rt, cp_close_fn fn, void *data) {
  close_hook *h = cp_malloc(sizeof *h);
  h->id = ++rt->next_hook_id;
  h->fn = fn;
  h->data = data;
  h->next = rt->hooks;
  rt->hooks = h;
  return h->id;
}

void cp_runtime_off_close(cp_runtime *rt, int id) {
  for (close_hook **pp = &rt->hooks; *pp; pp = &(*pp)->next) {
    if ((*pp)->id == id) {
      close_hook *dead = *pp;
      *pp = dead->next;
      free(dead);
      return;
    }
  }
}

/* ---- finding the Lua half ----------------------------------------------- */

static int has_init(const char *dir) {
  cp_buf p = CP_BUF_INIT;
  cp_buf_printf(&p, "%s/cogpipe/init.lua", dir);
  int ok = access(p.data, R_OK) == 0;
  cp_buf_free(&p);
  return ok;
}

/* Looks for the Lua half beside a binary at path: an installed tree
 * (bin/../share, lib/../share) or a build tree, which mirrors it. Returns a
 * malloc'd directory, or NULL. */
static char *beside(const char *path) {
  static const char *const rel[] = {"/../share/cogpipe/lua", "/share/cogpipe/lua"};
  const char *slash = strrchr(path, '/');
  if (!slash) return NULL;
  for (size_t i = 0; i < sizeof rel / sizeof *rel; i++) {
    cp_buf d = CP_BUF_INIT;
    cp_buf_printf(&d, "%.*s%s", (int)(slash - path), path, rel[i]);
    if (has_init(d.data)) return cp_buf_steal(&d, NULL);
    cp_buf_free(&d);
  }
  return NULL;
}

/* Returns a malloc'd directory; the caller owns it. */
static char *find_lua_dir(const char *given) {
  if (given) return cp_strdup(given);
  const char *env = getenv("COGPIPE_LUA_DIR");
  if (env && *env) return cp_strdup(env);
  char exe[4096];
  size_t size = sizeof exe;
  char *dir = NULL;
  if (uv_exepath(exe, &size) == 0) dir = beside(exe);
  /* an embedder's program lives anywhere; the shared library does not */
  Dl_info info;
  if (!dir && dladdr((void *)cp_runtime_new, &info) && info.dli_fname)
    dir = beside(info.dli_fname);
  return dir ? dir : cp_strdup(CP_LUA_INSTALL_DIR);
}

/* Lua's file searcher takes a file it cannot open for an absent one,
 * whatever the reason, so a process out of file descriptors is told that
 * a module is "not found" in a list of paths. This searcher runs just
 * before it and names the cause instead; a module file that is really
 * absent is left to it. Upvalue 1: the package table. */
static int open_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  lua_getfield(L, lua_upvalueindex(1), "path");
  const char *path = lua_tostring(L, -1);
  if (!path) return 0;
  const char *file = luaL_gsub(L, name, ".", LUA_DIRSEP);
  while (*path) {
    const char *end = strchr(path, *LUA_PATH_SEP);
    if (!end) end = path + strlen(path);
    lua_pushlstring(L, path, (size_t)(end - path));
    const char *cand = luaL_gsub(L, lua_tostring(L, -1), LUA_PATH_MARK, file);
    FILE *f = fopen(cand, "r");
    int e = errno;
    if (f) {
      fclose(f);
      return 0; /* there: the Lua searcher loads it */
    }
    if (e == EMFILE || e == ENFILE)
      return luaL_error(L,
                        "cannot open module '%s' (%s): too many open files%s",
                        name, cand,
                        e == ENFILE ? " in the system"
                                    : "; raise the limit with ulimit -n");
    if (e != ENOENT && e != ENOTDIR)
      return luaL_error(L, "cannot open module '%s' (%s): %s", name, cand,
                        strerror(e));
    lua_pop(L, 2);
    path = *end ? end + 1 : end;
  }
  return 0;
}

static void set_package_path(lua_State *L, const char *dir) {
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s/?.lua;%s/?/init.lua;%s", dir, dir, lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 1);
  /* open_searcher goes in at 2, before the Lua file searcher. */
  lua_getfield(L, -1, "searchers");
  for (lua_Integer i = (lua_Integer)luaL_len(L, -1); i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushvalue(L, -2);
  lua_pushcclosure(L, open_searcher, 1);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 1);
  lua_getfield(L, -1, "preload");
  lua_pushcfunction(L, luaopen_cogpipe_core);
  lua_setfield(L, -2, "cogpipe.core");
  lua_pushcfunction(L, luaopen_cogpipe_sandbox);
  lua_setfield(L, -2, "cogpipe._sandbox");
  lua_pop(L, 2);
}

/* ---- creation and teardown ---------------------------------------------- */

static void on_task_finish(cp_task *t, void *data);
static void on_idle(void *data);

cp_runtime *cp_runtime_new(const cp_runtime_options *opts) {
  cp_runtime *rt = cp_calloc(1, sizeof *rt);
  if (opts && opts->loop) {
    rt->loop = opts->loop;
  } else {
    if (uv_loop_init(&rt->own_loop) != 0) {
      free(rt);
      return NULL;
    }
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
  }
  rt->L = luaL_newstate();
  if (!rt->L) {
    if (rt->owns_loop) uv_loop_close(&rt->own_loop);
    free(rt);
    return NULL;
  }
  *(cp_runtime **)lua_getextraspace(rt->L) = rt;
  luaL_openlibs(rt->L);
  rt->lua_dir = find_lua_dir(opts ? opts->lua_dir : NULL);
  set_package_path(rt->L, rt->lua_dir);
  lua_newtable(rt->L);
  rt->natives_ref = cp_lua_ref(rt->L);
  rt->main_ref = LUA_NOREF;
  cp_sched_hooks hooks = {on_task_finish, on_idle, rt};
  rt->sched = cp_sched_new(rt->L, &hooks);
  return rt;
}

static void close_walk(uv_handle_t *h, void *arg) {
  (void)arg;
  if (!uv_is_closing(h)) uv_close(h, NULL);
}

void cp_runtime_free(cp_runtime *rt) {
  if (!rt) return;
  /* Tasks first (their cancel functions close what they wait on), then the
   * parts, newest first, then whatever the loop still has to finish. */
  cp_sched_cancel_all(rt->sched, "runtime closed");
  while (rt->hooks) {
    close_hook *h = rt->hooks;
    rt->hooks = h->next;
    h->fn(h->data);
    free(h);
  }
  while (rt->open_handles > 0 && uv_run(rt->loop, UV_RUN_NOWAIT) != 0) {
  }
  if (rt->owns_loop) {
    uv_walk(rt->loop, close_walk, NULL);
    while (uv_run(rt->loop, UV_RUN_NOWAIT) != 0) {
    }
  }
  cp_lua_unref(rt->L, &rt->main_ref);
  cp_lua_unref(rt->L, &rt->natives_ref);
  cp_sched_free(rt->sched);
  lua_close(rt->L);
  if (rt->owns_loop && uv_loop_close(&rt->own_loop) != 0)
    fprintf(stderr, "cogpipe: the event loop still had open handles at exit\n");
  free(rt->lua_dir);
  free(rt->error);
  free(rt);
#ifdef CP_TRACK_REFS
  if (cp_lua_live_refs() != 0) {
    fprintf(stderr, "cogpipe: %ld Lua registry references leaked\n",
            cp_lua_live_refs());
    abort();
  }
#endif
}

/* ---- registration and arguments ----------------------------------------- */

int cp_runtime_register(cp_runtime *rt, const char *name, lua_CFunction fn) {
  lua_State *L = rt->L;
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->natives_ref);
  lua_pushcfunction(L, fn);
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
  /* Already loaded: add it to the live module too. */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "cogpipe.core");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, fn);
    lua_setfield(L, -2, name);
  }
  lua_pop(L, 2);
  return 0;
}

/* Pushes the embedder's registered functions table (for lua_core.c). */
void cp_runtime_push_natives(cp_runtime *rt, lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->natives_ref);
}

void cp_runtime_set_args(cp_runtime *rt, const char *script, int argc,
                         char **argv) {
  lua_State *L = rt->L;
  lua_createtable(L, argc, 1);
  lua_pushstring(L, script ? script : "");
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
}

/* ---- running ------------------------------------------------------------ */

static void set_error(cp_runtime *rt, const char *msg) {
  free(rt->error);
  rt->error = msg ? cp_strdup(msg) : NULL;
}

static void on_task_finish(cp_task *t, void *data) {
  cp_runtime *rt = data;
  if (!cp_task_failed(t)) return;
  lua_State *L = rt->L;
  cp_task_push_results(t, L);
  lua_getfield(L, -1, "kind");
  int cancelled = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "cancelled") == 0;
  lua_getfield(L, -2, "traceback");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, -2, "message");
  }
  const char *what = lua_tostring(L, -1);
  if (t == rt->main) {
    /* The main chunk failed: the run is over; nothing else may go on. */
    set_error(rt, what);
    lua_pop(L, 3);
    cp_sched_cancel_all(rt->sched, "the main chunk failed");
    return;
  }
  /* A task's failure does not stop the run, but is never silent. */
  if (!cancelled) fprintf(stderr, "cogpipe: task failed: %s\n", what);
  lua_pop(L, 3);
}

static void finish_run(cp_runtime *rt) {
  if (!rt->running) return;
  rt->running = 0;
  cp_status st = CP_OK;
  if (rt->main && cp_task_failed(rt->main)) st = CP_EFAILED;
  else if (cp_sched_unobserved_failures(rt->sched) > 0 || rt->remote_failed)
    st = CP_EFAILED;
  if (rt->requested > st) st = rt->requested;
  rt->status = st;
  if (rt->owns_loop) uv_stop(rt->loop);
  if (rt->done) rt->done(rt, st, rt->done_data);
}

static void on_idle(void *data) { finish_run(data); }

static cp_status start_loaded(cp_runtime *rt, int load_status, cp_done_cb done,
                              void *data) {
  lua_State *L = rt->L;
  set_error(rt, NULL);
  if (load_status != LUA_OK) {
    set_error(rt, lua_tostring(L, -1));
    lua_pop(L, 1);
    rt->status = CP_EUSAGE;
    return CP_EUSAGE;
  }
  if (rt->running) {
    lua_pop(L, 1);
    set_error(rt, "a run is already in progress");
    rt->status = CP_EUSAGE;
    return CP_EUSAGE;
  }
  cp_lua_unref(L, &rt->main_ref);
  rt->running = 1;
  rt->status = CP_OK;
  rt->requested = CP_OK;
  rt->remote_failed = 0;
  cp_sched_clear_failures(rt->sched);
  rt->done = done;
  rt->done_data = data;
  rt->main = cp_sched_spawn(rt->sched, L, 0);
  rt->main_ref = cp_lua_ref(L);
  cp_sched_run_pending(rt->sched);
  return CP_OK;
}

cp_status cp_runtime_start_file(cp_runtime *rt, const char *path,
                                cp_done_cb done, void *data) {
  /* "t": scripts are text; precompiled chunks could bypass the sandbox */
  return start_loaded(rt, luaL_loadfilex(rt->L, path, "t"), done, data);
}

cp_status cp_runtime_start_string(cp_runtime *rt, const char *code,
                                  const char *chunkname, cp_done_cb done,
                                  void *data) {
  int st = luaL_loadbufferx(rt->L, code, strlen(code),
                            chunkname ? chunkname : "=(string)", "t");
  return start_loaded(rt, st, done, data);
}

static cp_status run_to_end(cp_runtime *rt, cp_status started) {
  if (started != CP_OK) return started;
  while (rt->running) {
    uv_run(rt->loop, UV_RUN_DEFAULT);
    /* someone else's uv_stop on a borrowed loop: go on */
    if (rt->running && uv_loop_alive(rt->loop)) continue;
    if (rt->running) {
      /* The loop ran dry with tasks still waiting: they wait on each other. */
      cp_buf m = CP_BUF_INIT;
      cp_buf_printf(&m, "deadlock: %ld task(s) wait for each other forever",
                    cp_sched_live(rt->sched));
      set_error(rt, m.data);
      cp_buf_free(&m);
      cp_sched_cancel_all(rt->sched, "deadlock");
      cp_runtime_request_status(rt, CP_EFAILED);
      finish_run(rt);
    }
  }
  return rt->status;
}

cp_status cp_runtime_run_file(cp_runtime *rt, const char *path) {
  return run_to_end(rt, cp_runtime_start_file(rt, path, NULL, NULL));
}

cp_status cp_runtime_run_string(cp_runtime *rt, const char *code,
                                const char *chunkname) {
  return run_to_end(rt, cp_runtime_start_string(rt, code, chunkname, NULL, NULL));
}

cp_status cp_runtime_status(const cp_runtime *rt) { return rt->status; }
const char *cp_runtime_error(const cp_runtime *rt) { return rt->error; }

int cp_runtime_push_results(cp_runtime *rt) {
  if (!rt->main || rt->running || cp_task_failed(rt->main)) return 0;
  return cp_task_push_results(rt->main, rt->L);
}
