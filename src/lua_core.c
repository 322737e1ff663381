/*
 * lua_core.c -- the native half of `require "cogpipe"` (module cogpipe.core):
 * tasks (spawn, wait, sleep), the clock, the run's exit status, and the
 * submodules each binding file provides. The Lua half (lua/cogpipe/init.lua)
 * builds the public module on top of it.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <xxhash.h>

#include "buf.h"
#include "lua_json.h"
#include "lutil.h"
#include "modules.h"
#include "runtime.h"
#include "scheduler.h"

/* ---- sleep ------------------------------------------------------------- */

typedef struct sleep_op {
  uv_timer_t timer;
  cp_task *task;
  cp_runtime *rt;
} sleep_op;

static void sleep_closed(uv_handle_t *h) {
  sleep_op *op = h->data;
  cp_runtime_handle_dec(op->rt);
  free(op);
}

static void sleep_fired(uv_timer_t *t) {
  sleep_op *op = t->data;
  cp_task *task = op->task;
  uv_close((uv_handle_t *)&op->timer, sleep_closed);
  cp_task_resume(task, NULL, NULL);
}

static void sleep_cancel(void *data) {
  sleep_op *op = data;
  uv_timer_stop(&op->timer);
  uv_close((uv_handle_t *)&op->timer, sleep_closed);
}

static int l_sleep(lua_State *L) {
  lua_Number secs = luaL_checknumber(L, 1);
  luaL_argcheck(L, secs >= 0 && secs < 1e9, 1, "seconds out of range");
  cp_task *task = cp_task_current(L);
  cp_runtime *rt = cp_runtime_from_lua(L);
  /* owned by the timer handle; freed in sleep_closed */
  sleep_op *op = cp_malloc(sizeof *op);
  if (!op) return cp_lua_nomem(L, "starting a sleep");
  op->task = task;
  op->rt = rt;
  uv_timer_init(cp_runtime_loop(rt), &op->timer);
  cp_runtime_handle_inc(rt);
  op->timer.data = op;
  /* The loop's clock is cached from its last turn, which may be long ago
   * when the task ran a while: from that stale time a timer would fire
   * early by as much. */
  uv_update_time(cp_runtime_loop(rt));
  uv_timer_start(&op->timer, sleep_fired, (uint64_t)ceil(secs * 1000.0), 0);
  return cp_task_suspend(L, task, sleep_cancel, op);
}

/* ---- clock and status ------------------------------------------------------ */

static int l_now(lua_State *L) {
  lua_pushnumber(L, (lua_Number)uv_hrtime() / 1e9);
  return 1;
}

static int l_exit_status(lua_State *L) {
  lua_Integer st = luaL_checkinteger(L, 1);
  luaL_argcheck(L, st >= CP_OK && st <= CP_EINVALID, 1,
                "exit status must be 0..3");
  cp_runtime_request_status(cp_runtime_from_lua(L), (cp_status)st);
  return 0;
}

/* cp.hash(s) -> 16 hex digits of XXH3-64: a compact, stable key for texts
 * in journals and caches (not a cryptographic digest). */
static int l_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(s, len));
  lua_pushlstring(L, hex, 16);
  return 1;
}

/* ---- the module ------------------------------------------------------------ */

typedef struct submodule {
  const char *name;
  lua_CFunction open;
} submodule;

static const submodule submodules[] = {
    {"json", luaopen_cogpipe_json},
    {"secrets", luaopen_cogpipe_secrets},
    {"audit", luaopen_cogpipe_audit},
    {"_webhook", luaopen_cogpipe_webhook_native},
    {"fs", luaopen_cogpipe_fs},
    {"http", luaopen_cogpipe_http},
    {"validate", luaopen_cogpipe_validate},
    {"dedupe", luaopen_cogpipe_dedupe},
    {"near", luaopen_cogpipe_near},
    {"semantic", luaopen_cogpipe_semantic},
    {"base64", luaopen_cogpipe_base64},
};

static const luaL_Reg core_fns[] = {
    {"sleep", l_sleep}, {"now", l_now}, {"exit_status", l_exit_status},
    {"hash", l_hash}, {NULL, NULL}};

int luaopen_cogpipe_core(lua_State *L) {
  cp_runtime *rt = cp_runtime_from_lua(L);
  luaL_newlib(L, core_fns);
  cp_sched_open(cp_runtime_sched(rt), L);
  lua_pushstring(L, cp_version());
  lua_setfield(L, -2, "version");
  for (size_t i = 0; i < sizeof submodules / sizeof *submodules; i++) {
    luaL_requiref(L, lua_pushfstring(L, "cogpipe.%s", submodules[i].name),
                  submodules[i].open, 0);
    lua_setfield(L, -3, submodules[i].name);
    lua_pop(L, 1); /* the name */
  }
  /* what the embedder registered */
  cp_runtime_push_natives(rt, L);
  lua_pushnil(L);
  while (lua_next(L, -2)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_settable(L, -5);
  }
  lua_pop(L, 1);
  return 1;
}
