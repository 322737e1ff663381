/*
 * embed_oom.c -- a program that hosts runtimes on its own libuv loop and
 * carries on after one of them runs out of memory: the runtime is bounded
 * through cp_runtime_options.memory_limit, a script allocates without end
 * (in its main chunk and in tasks the loop resumes), and the host gets an
 * error status and message back, frees the runtime, and runs another
 * script to success on the same loop. Only include/cogpipe.h is used.
 */
#include <lauxlib.h>
#include <stdio.h>
#include <string.h>

#include "cogpipe.h"

static int failures;

#define EXPECT(cond, ...)                                                     \
  do {                                                                        \
    if (!(cond)) {                                                            \
      fprintf(stderr, "embed_oom: " __VA_ARGS__);                             \
      fprintf(stderr, "\n");                                                  \
      failures++;                                                             \
    }                                                                         \
  } while (0)

static int host_ticks;
static void on_tick(uv_timer_t *t) {
  (void)t;
  host_ticks++;
}

typedef struct outcome {
  int done;
  cp_status status;
} outcome;

static void on_done(cp_runtime *rt, cp_status st, void *data) {
  (void)rt;
  outcome *o = data;
  o->done = 1;
  o->status = st;
}

/* Runs code in a runtime on loop with the given memory limit until done;
 * the caller frees the runtime. */
static cp_runtime *run_on(uv_loop_t *loop, size_t limit, const char *code,
                          outcome *o) {
  cp_runtime_options opts = {.loop = loop, .memory_limit = limit};
  cp_runtime *rt = cp_runtime_new(&opts);
  if (!rt) return NULL;
  memset(o, 0, sizeof *o);
  cp_status st = cp_runtime_start_string(rt, code, "=embedded", on_done, o);
  if (st != CP_OK) {
    o->done = 1;
    o->status = st;
    return rt;
  }
  while (!o->done && uv_run(loop, UV_RUN_ONCE)) {
  }
  return rt;
}

/* The main chunk keeps everything it makes: only the limit stops it. */
static const char hog_main[] =
    "local keep = {}\n"
    "for i = 1, math.huge do keep[i] = string.rep('x', 1000) .. i end\n";

/* Tasks the loop resumes again and again, each keeping what it makes; the
 * main chunk waits for them. Memory runs out in a task, between loop
 * turns, while others sleep. */
static const char hog_tasks[] =
    "local cp = require 'cogpipe'\n"
    "local keep = {}\n"
    "local tasks = {}\n"
    "for t = 1, 4 do\n"
    "  tasks[t] = cp.spawn(function()\n"
    "    for i = 1, math.huge do\n"
    "      cp.sleep(0)\n"
    "      keep[#keep + 1] = {string.rep('y', 4096), i, t}\n"
    "    end\n"
    "  end)\n"
    "end\n"
    "local results = {cp.wait(table.unpack(tasks))}\n"
    "error(results[#tasks + 1][1])\n";

static const char fine[] =
    "local cp = require 'cogpipe'\n"
    "local tasks = {}\n"
    "for i = 1, 5 do\n"
    "  tasks[i] = cp.spawn(function() cp.sleep(0.001 * i); return i * i end)\n"
    "end\n"
    "local sum = 0\n"
    "for i = 1, 5 do sum = sum + cp.wait(tasks[i]) end\n"
    "return sum, cp.json.encode({sum = sum})\n";

static void expect_oom(cp_runtime *rt, const outcome *o, const char *what) {
  EXPECT(rt != NULL, "%s: no runtime", what);
  if (!rt) return;
  EXPECT(o->done, "%s: the run never finished", what);
  EXPECT(o->status == CP_EFAILED, "%s: status %d, expected CP_EFAILED", what,
         (int)o->status);
  EXPECT(cp_runtime_out_of_memory(rt), "%s: out of memory not reported", what);
  const char *err = cp_runtime_error(rt);
  EXPECT(err && (strstr(err, "out of memory") || strstr(err, "not enough memory")),
         "%s: the error does not say memory ran out: %s", what,
         err ? err : "(none)");
}

int main(void) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  uv_timer_t tick;
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 1, 1);

  outcome o;
  cp_runtime *rt = run_on(&loop, (size_t)8 << 20, hog_main, &o);
  expect_oom(rt, &o, "main chunk");
  cp_runtime_free(rt);

  rt = run_on(&loop, (size_t)8 << 20, hog_tasks, &o);
  expect_oom(rt, &o, "tasks");
  cp_runtime_free(rt);

  /* The host goes on: its own timer still runs, and a new runtime on the
   * same loop runs a script to the end. */
  int ticks = host_ticks;
  rt = run_on(&loop, 0, fine, &o);
  EXPECT(rt && o.done && o.status == CP_OK, "after out of memory: status %d (%s)",
         (int)o.status, rt && cp_runtime_error(rt) ? cp_runtime_error(rt) : "");
  EXPECT(rt && !cp_runtime_out_of_memory(rt), "a run with memory to spare reports none missing");
  if (rt) {
    lua_State *L = cp_runtime_lua(rt);
    int n = cp_runtime_push_results(rt);
    EXPECT(n == 2 && lua_tointeger(L, -2) == 55 &&
               strcmp(lua_tostring(L, -1), "{\"sum\":55}") == 0,
           "unexpected results (%d values)", n);
    lua_pop(L, n);
    cp_runtime_free(rt);
  }
  uv_run(&loop, UV_RUN_NOWAIT);
  EXPECT(host_ticks > ticks, "the host's own timer stopped running");

  uv_timer_stop(&tick);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  EXPECT(uv_loop_close(&loop) == 0, "runtimes left handles open on the host's loop");
  printf("%d passed, %d failed\n", failures ? 0 : 1, failures ? 1 : 0);
  return failures ? 1 : 0;
}
