/*
 * embed_example.c -- a program that embeds cogpipe in its own libuv loop:
 * it owns the loop and a timer of its own, registers a native function into
 * the cogpipe module, runs a script that calls it from several tasks, and
 * reads the script's result. Only include/cogpipe.h is used.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "cogpipe.h"

static int host_calls;
static int host_ticks;

/* cp.host_add(a, b) -> a + b, counting calls */
static int host_add(lua_State *L) {
  lua_Integer a = luaL_checkinteger(L, 1), b = luaL_checkinteger(L, 2);
  host_calls++;
  lua_pushinteger(L, a + b);
  return 1;
}

static void on_tick(uv_timer_t *t) {
  host_ticks++;
  (void)t;
}

static int run_done;
static cp_status run_status = CP_EFAILED;

static void on_done(cp_runtime *rt, cp_status st, void *data) {
  uv_timer_t *tick = data;
  run_done = 1;
  run_status = st;
  (void)rt;
  /* The host decides when its own handles go away. */
  uv_timer_stop(tick);
  uv_close((uv_handle_t *)tick, NULL);
}

static const char script[] =
    "local cp = require 'cogpipe'\n"
    "local tasks = {}\n"
    "for i = 1, 10 do\n"
    "  tasks[i] = cp.spawn(function() cp.sleep(0.01 * i); return cp.host_add(i, 100) end)\n"
    "end\n"
    "local sum = 0\n"
    "for i = 1, 10 do sum = sum + cp.wait(tasks[i]) end\n"
    "return sum, cp.json.encode({sum = sum})\n";

int main(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 5, 5);

  cp_runtime_options opts = {.loop = &loop};
  cp_runtime *rt = cp_runtime_new(&opts);
  if (!rt || cp_runtime_loop(rt) != &loop) {
    fprintf(stderr, "runtime not on the given loop\n");
    return 1;
  }
  cp_runtime_register(rt, "host_add", host_add);
  if (cp_runtime_start_string(rt, script, "=embedded", on_done, &tick) != CP_OK) {
    fprintf(stderr, "start failed: %s\n", cp_runtime_error(rt));
    return 1;
  }
  uv_run(&loop, UV_RUN_DEFAULT);

  int failures = 0;
  lua_State *L = cp_runtime_lua(rt);
  int n = cp_runtime_push_results(rt);
  /* sum of i + 100 for i = 1..10 */
  if (!run_done || run_status != CP_OK) {
    fprintf(stderr, "run did not finish well: %d %s\n", run_status,
            cp_runtime_error(rt) ? cp_runtime_error(rt) : "");
    failures++;
  }
  if (n != 2 || lua_tointeger(L, -2) != 1055 ||
      strcmp(lua_tostring(L, -1), "{\"sum\":1055}") != 0) {
    fprintf(stderr, "unexpected results (%d values)\n", n);
    failures++;
  }
  lua_pop(L, n);
  if (host_calls != 10) {
    fprintf(stderr, "host function called %d times, expected 10\n", host_calls);
    failures++;
  }
  if (host_ticks < 2) {
    fprintf(stderr, "the host's own timer did not run alongside (%d)\n", host_ticks);
    failures++;
  }
  cp_runtime_free(rt);
  if (uv_loop_close(&loop) != 0) {
    fprintf(stderr, "runtime left handles open on the host's loop\n");
    failures++;
  }
  printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
  return failures ? 1 : 0;
}
