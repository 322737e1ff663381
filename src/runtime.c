/*
 * runtime.c -- a cogpipe runtime: one Lua state on one libuv loop. Owns the
 * state (its memory is counted against the embedder's limit by lhost.c),
 * the loop (when it made it), the scheduler, the run's outcome, and the
 * order of shutdown. What tasks do is task.c's; what modules offer is
 * lua_core.c's and the bindings'. Nothing here ends the process: every entry into Lua
 * from the embedding API is a protected call.
 */
#include "runtime.h"

#include <errno.h>

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lhost.h"
#include "lutil.h"
#include "require.h"
#include "scheduler.h"

#ifndef CP_VERSION_STRING
#define CP_VERSION_STRING "0.0.0"
#endif


typedef struct close_hook {
  int id;
  cp_close_fn fn;
  void *data;
  struct close_hook *next;
} close_hook;

struct cp_runtime {
  cp_lhost host; /* the Lua state's memory, out-of-memory note and refs */
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
  close_hook *h = cp_malloc(sizeof *h); /* the runtime's list owns it */
  if (!h) return -1;
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

/* The directory the Lua half is read from instead of the copy compiled in
 * (require.c): the embedder's, else COGPIPE_LUA_DIR, a developer's source
 * tree (empty is none). Sets *dir to a malloc'd copy the caller owns, or to
 * NULL when none is named. Returns 0, or -1 when out of memory. */
static int find_lua_dir(const char *given, char **dir) {
  if (!given || !*given) given = getenv("COGPIPE_LUA_DIR");
  if (given && !*given) given = NULL;
  *dir = given ? cp_strdup(given) : NULL;
  return given && !*dir ? -1 : 0;
}

/* ---- memory ------------------------------------------------------------- */

/* What the state may hold is lhost.c's to decide; a run in which memory ran
 * out, in Lua or in a binding, fails (finish_run). */
int cp_runtime_out_of_memory(const cp_runtime *rt) { return rt->host.oom; }

/* ---- creation and teardown ---------------------------------------------- */

static void on_task_finish(cp_task *t, void *data);
static void on_idle(void *data);

/* In protected mode: everything the state needs before a script runs. */
static int init_state(lua_State *L) {
  cp_runtime *rt = lua_touserdata(L, 1);
  luaL_openlibs(L);
  cp_require_init(L, rt->lua_dir);
  lua_newtable(L);
  rt->natives_ref = cp_lua_ref(L);
  cp_sched_init(rt->sched);
  return 0;
}

/* Frees what cp_runtime_new got to make; for its failures. */
static void discard(cp_runtime *rt, int err) {
  if (rt->L) {
    cp_lua_unref(rt->L, &rt->natives_ref);
    if (rt->sched) cp_sched_free(rt->sched);
    lua_close(rt->L);
  }
  if (rt->owns_loop) uv_loop_close(&rt->own_loop);
  free(rt->lua_dir);
  free(rt);
  errno = err;
}

cp_runtime *cp_runtime_new(const cp_runtime_options *opts) {
  cp_runtime *rt = cp_calloc(1, sizeof *rt); /* the caller's: cp_runtime_free */
  if (!rt) {
    errno = ENOMEM;
    return NULL;
  }
  rt->natives_ref = LUA_NOREF;
  rt->main_ref = LUA_NOREF;
  if (opts && opts->loop) {
    rt->loop = opts->loop;
  } else {
    int rc = uv_loop_init(&rt->own_loop);
    if (rc != 0) {
      discard(rt, -rc);
      return NULL;
    }
    rt->loop = &rt->own_loop;
    rt->owns_loop = 1;
  }
  int found = find_lua_dir(opts ? opts->lua_dir : NULL, &rt->lua_dir);
  rt->L = found == 0
              ? cp_lhost_newstate(&rt->host, opts ? opts->memory_limit : 0)
              : NULL;
  if (!rt->L) {
    discard(rt, ENOMEM);
    return NULL;
  }
  *(cp_runtime **)lua_getextraspace(rt->L) = rt;
  cp_sched_hooks hooks = {on_task_finish, on_idle, rt};
  rt->sched = cp_sched_new(rt->L, &hooks);
  if (!rt->sched || cp_lua_protect(rt->L, init_state, rt, 0) != LUA_OK) {
    discard(rt, ENOMEM);
    return NULL;
  }
  cp_lhost_clear_oom(&rt->host); /* a refusal it got over is no failed run */
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
  /* What is still in flight ends on the loop: close callbacks, and pool
   * work, which cannot be called off once a thread runs it. Each turn
   * sleeps until an event comes, and the wait ends when the runtime's own
   * count does: an embedder's handles on a borrowed loop may keep it alive
   * for ever, and they are neither waited for nor touched (their callbacks
   * run meanwhile, as they would in the embedder's own turns). A loop that
   * has nothing left while the count is not zero ends the wait too. */
  while (rt->open_handles > 0 && uv_run(rt->loop, UV_RUN_ONCE) != 0) {
  }
  if (rt->owns_loop) {
    /* all ours: closed, and run until nothing is left (a stop asked for
     * earlier ends one run early, hence the loop) */
    uv_walk(rt->loop, close_walk, NULL);
    while (uv_run(rt->loop, UV_RUN_DEFAULT) != 0) {
    }
  }
  cp_lua_unref(rt->L, &rt->main_ref);
  cp_lua_unref(rt->L, &rt->natives_ref);
  cp_sched_free(rt->sched);
  lua_close(rt->L); /* finalizers release what they hold */
  if (rt->owns_loop && uv_loop_close(&rt->own_loop) != 0)
    fprintf(stderr, "cogpipe: the event loop still had open handles at exit\n");
#ifdef CP_TRACK_REFS
  /* test builds: a reference never released fails the test that made it */
  if (rt->host.live_refs != 0) {
    fprintf(stderr, "cogpipe: %ld Lua registry references leaked\n",
            rt->host.live_refs);
    abort();
  }
#endif
  free(rt->lua_dir);
  free(rt->error);
  free(rt);
}

/* ---- registration and arguments ----------------------------------------- */

typedef struct native {
  const char *name;
  lua_CFunction fn;
} native;

static int do_register(lua_State *L) {
  native *n = lua_touserdata(L, 1);
  cp_runtime *rt = cp_runtime_from_lua(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->natives_ref);
  lua_pushcfunction(L, n->fn);
  lua_setfield(L, -2, n->name);
  lua_pop(L, 1);
  /* Already loaded: add it to the live module too. */
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_getfield(L, -1, "cogpipe.core");
  if (lua_istable(L, -1)) {
    lua_pushcfunction(L, n->fn);
    lua_setfield(L, -2, n->name);
  }
  lua_pop(L, 2);
  return 0;
}

int cp_runtime_register(cp_runtime *rt, const char *name, lua_CFunction fn) {
  native n = {name, fn};
  return cp_lua_protect(rt->L, do_register, &n, 0) == LUA_OK ? 0 : -1;
}

/* Pushes the embedder's registered functions table (for lua_core.c). */
void cp_runtime_push_natives(cp_runtime *rt, lua_State *L) {
  lua_rawgeti(L, LUA_REGISTRYINDEX, rt->natives_ref);
}

typedef struct args {
  const char *script;
  int argc;
  char **argv;
} args;

static int do_set_args(lua_State *L) {
  args *a = lua_touserdata(L, 1);
  lua_createtable(L, a->argc, 1);
  lua_pushstring(L, a->script ? a->script : "");
  lua_rawseti(L, -2, 0);
  for (int i = 0; i < a->argc; i++) {
    lua_pushstring(L, a->argv[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setglobal(L, "arg");
  return 0;
}

int cp_runtime_set_args(cp_runtime *rt, const char *script, int argc,
                        char **argv) {
  args a = {script, argc, argv};
  return cp_lua_protect(rt->L, do_set_args, &a, 0) == LUA_OK ? 0 : -1;
}

/* ---- running ------------------------------------------------------------ */

static void set_error(cp_runtime *rt, const char *msg) {
  free(rt->error);
  rt->error = msg ? cp_strdup(msg) : NULL;
  if (msg && !rt->error)
    cp_lhost_note_oom(&rt->host, "keeping the error message");
}

typedef struct finished {
  cp_task *t;
  int cancelled;
  const char *what; /* valid until the protected call's values are popped */
} finished;

/* In protected mode: what a failed task says, left on the stack. */
static int read_failure(lua_State *L) {
  finished *f = lua_touserdata(L, 1);
  cp_task_push_results(f->t, L);
  lua_getfield(L, -1, "kind");
  f->cancelled = lua_isstring(L, -1) && strcmp(lua_tostring(L, -1), "cancelled") == 0;
  lua_getfield(L, -2, "traceback");
  if (!lua_isstring(L, -1)) {
    lua_pop(L, 1);
    lua_getfield(L, -2, "message");
  }
  f->what = lua_tostring(L, -1);
  return 3;
}

static void on_task_finish(cp_task *t, void *data) {
  cp_runtime *rt = data;
  if (!cp_task_failed(t)) return;
  lua_State *L = rt->L;
  finished f = {t, 0, NULL};
  int read = cp_lua_protect(L, read_failure, &f, 3) == LUA_OK;
  const char *what = f.what ? f.what : "(a task failed; its error cannot be read)";
  if (!read) what = rt->host.oom_msg[0] ? rt->host.oom_msg : "out of memory";
  if (t == rt->main) {
    /* The main chunk failed: the run is over; nothing else may go on. */
    set_error(rt, what);
    if (read) lua_pop(L, 3);
    cp_sched_cancel_all(rt->sched, "the main chunk failed");
    return;
  }
  /* A task's failure does not stop the run, but is never silent. */
  if (!f.cancelled) fprintf(stderr, "cogpipe: task failed: %s\n", what);
  if (read) lua_pop(L, 3);
}

static void finish_run(cp_runtime *rt) {
  if (!rt->running) return;
  rt->running = 0;
  cp_status st = CP_OK;
  if (rt->main && cp_task_failed(rt->main)) st = CP_EFAILED;
  else if (cp_sched_unobserved_failures(rt->sched) > 0 || rt->remote_failed)
    st = CP_EFAILED;
  if (rt->requested > st) st = rt->requested;
  /* A run that ran out of memory may have lost anything: never ok, and
   * never a lesser failure that would hide it. */
  if (rt->host.oom) st = CP_EFAILED;
  rt->status = st;
  if (rt->owns_loop) uv_stop(rt->loop);
  if (rt->done) rt->done(rt, st, rt->done_data);
}

static void on_idle(void *data) { finish_run(data); }

static int spawn_main(lua_State *L) {
  cp_runtime *rt = lua_touserdata(L, 1);
  lua_pushvalue(L, 2); /* the loaded chunk */
  rt->main = cp_sched_spawn(rt->sched, L, 0);
  rt->main_ref = cp_lua_ref(L);
  return 0;
}

/* Starts the chunk at the top of the stack (or the load error there) as
 * the main task; pops it. */
static cp_status start_loaded(cp_runtime *rt, int load_status, cp_done_cb done,
                              void *data) {
  lua_State *L = rt->L;
  set_error(rt, NULL);
  if (!rt->running) cp_lhost_clear_oom(&rt->host);
  if (load_status == LUA_ERRMEM) {
    lua_pop(L, 1);
    cp_lhost_note_oom(&rt->host, "loading the script");
    rt->status = CP_EFAILED;
    return CP_EFAILED;
  }
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
  rt->main = NULL;
  rt->status = CP_OK;
  rt->requested = CP_OK;
  rt->remote_failed = 0;
  cp_sched_clear_failures(rt->sched);
  /* the chunk is the protected call's second argument */
  int st = LUA_ERRMEM;
  if (lua_checkstack(L, 4)) {
    lua_pushcfunction(L, spawn_main);
    lua_insert(L, -2);
    lua_pushlightuserdata(L, rt);
    lua_insert(L, -2);
    st = cp_lua_pcall(L, 2, 0);
    if (st != LUA_OK) lua_pop(L, 1);
  } else {
    lua_pop(L, 1);
  }
  if (st != LUA_OK) {
    /* a task half started must not run with the next one */
    rt->main = NULL;
    cp_lua_unref(L, &rt->main_ref);
    cp_sched_cancel_all(rt->sched, "out of memory");
    cp_lhost_note_oom(&rt->host, "starting the script");
    rt->status = CP_EFAILED;
    return CP_EFAILED;
  }
  rt->running = 1;
  rt->done = done;
  rt->done_data = data;
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
      char m[96];
      snprintf(m, sizeof m, "deadlock: %ld task(s) wait for each other forever",
               cp_sched_live(rt->sched));
      set_error(rt, m);
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

const char *cp_runtime_error(const cp_runtime *rt) {
  if (rt->error) return rt->error;
  return rt->host.oom ? rt->host.oom_msg : NULL;
}

static int push_main_results(lua_State *L) {
  cp_runtime *rt = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return cp_task_push_results(rt->main, L);
}

int cp_runtime_push_results(cp_runtime *rt) {
  if (!rt->main || rt->running || cp_task_failed(rt->main)) return 0;
  int top = lua_gettop(rt->L);
  if (cp_lua_protect(rt->L, push_main_results, rt, LUA_MULTRET) != LUA_OK)
    return 0;
  return lua_gettop(rt->L) - top;
}
