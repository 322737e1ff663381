/* Unit tests of the embedding API (runtime.c, task.c): statuses, errors,
 * results, registration, deadlock detection, reference hygiene and
 * shutdown on an embedder's loop. */
#include "check.h"
#include "cogpipe.h"
#include "lua_offload.h"
#include "lutil.h"
#include "runtime.h"
#include "task.h"

#include <lauxlib.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

static cp_runtime *rt_new(void) {
  cp_runtime *rt = cp_runtime_new(NULL);
  CHECK(rt != NULL);
  return rt;
}

static void test_results(void) {
  cp_runtime *rt = rt_new();
  CHECK_INT(cp_runtime_run_string(rt, "return 1 + 1, 'x'", "=t"), CP_OK);
  CHECK(cp_runtime_error(rt) == NULL);
  lua_State *L = cp_runtime_lua(rt);
  int n = cp_runtime_push_results(rt);
  CHECK_INT(n, 2);
  CHECK_INT(lua_tointeger(L, -2), 2);
  CHECK_STR(lua_tostring(L, -1), "x");
  lua_pop(L, n);
  cp_runtime_free(rt);
}

static void test_syntax_error_is_usage(void) {
  cp_runtime *rt = rt_new();
  CHECK_INT(cp_runtime_run_string(rt, "x = = 1", "=bad"), CP_EUSAGE);
  CHECK(strstr(cp_runtime_error(rt), "bad:1:") != NULL);
  CHECK_INT(cp_runtime_run_file(rt, "/nonexistent/script.lua"), CP_EUSAGE);
  CHECK(strstr(cp_runtime_error(rt), "cannot open") != NULL);
  cp_runtime_free(rt);
}

static void test_bytecode_refused(void) {
  cp_runtime *rt = rt_new();
  const char *code = "return string.dump(function() return 1 end)";
  CHECK_INT(cp_runtime_run_string(rt, code, "=t"), CP_OK);
  lua_State *L = cp_runtime_lua(rt);
  cp_runtime_push_results(rt);
  size_t len;
  const char *bc = lua_tolstring(L, -1, &len);
  char *copy = malloc(len + 1);
  memcpy(copy, bc, len);
  copy[len] = '\0';
  lua_pop(L, 1);
  CHECK_INT(cp_runtime_run_string(rt, copy, "=bc"), CP_EUSAGE);
  CHECK(strstr(cp_runtime_error(rt), "binary") != NULL);
  free(copy);
  cp_runtime_free(rt);
}

static void test_main_error_fails_run_and_cancels(void) {
  cp_runtime *rt = rt_new();
  const char *code =
      "local cp = require 'cogpipe'\n"
      "cp.spawn(function() cp.sleep(30) end)\n"
      "cp.sleep(0.01)\n"
      "error('main broke')\n";
  uint64_t t0 = uv_hrtime();
  CHECK_INT(cp_runtime_run_string(rt, code, "@main.lua"), CP_EFAILED);
  CHECK((uv_hrtime() - t0) < 5000000000ULL); /* did not wait for the sleeper */
  CHECK(strstr(cp_runtime_error(rt), "main.lua:4: main broke") != NULL);
  CHECK(strstr(cp_runtime_error(rt), "stack traceback") != NULL);
  CHECK_INT(cp_runtime_push_results(rt), 0);
  cp_runtime_free(rt);
}

static void test_unwaited_task_failure_fails_run(void) {
  cp_runtime *rt = rt_new();
  CHECK_INT(cp_runtime_run_string(rt,
                                  "local cp = require 'cogpipe'\n"
                                  "cp.spawn(function() error('lost') end)\n",
                                  "=t"),
            CP_EFAILED);
  /* the same failure, waited for and handled, is fine */
  CHECK_INT(cp_runtime_run_string(rt,
                                  "local cp = require 'cogpipe'\n"
                                  "local t = cp.spawn(function() error('seen') end)\n"
                                  "assert(cp.wait(t) == nil)\n",
                                  "=t"),
            CP_OK);
  cp_runtime_free(rt);
}

static void test_deadlock_detected(void) {
  cp_runtime *rt = rt_new();
  const char *code =
      "local cp = require 'cogpipe'\n"
      "local a\n"
      "local b = cp.spawn(function() cp.sleep(0); return cp.wait(a) end)\n"
      "a = cp.spawn(function() return cp.wait(b) end)\n"
      "cp.wait(a)\n";
  CHECK_INT(cp_runtime_run_string(rt, code, "=t"), CP_EFAILED);
  CHECK(cp_runtime_error(rt) && strstr(cp_runtime_error(rt), "deadlock") != NULL);
  cp_runtime_free(rt);
}

static void test_exit_status_requested(void) {
  cp_runtime *rt = rt_new();
  CHECK_INT(cp_runtime_run_string(rt, "require('cogpipe').exit_status(3)", "=t"),
            CP_EINVALID);
  CHECK_INT(cp_runtime_run_string(rt, "return 1", "=t"), CP_OK);
  cp_runtime_free(rt);
}

static int twice(lua_State *L) {
  lua_pushinteger(L, 2 * luaL_checkinteger(L, 1));
  return 1;
}

static void test_register_after_load(void) {
  cp_runtime *rt = rt_new();
  CHECK_INT(cp_runtime_run_string(rt, "require 'cogpipe'", "=t"), CP_OK);
  cp_runtime_register(rt, "twice", twice);
  CHECK_INT(cp_runtime_run_string(rt, "return require('cogpipe').twice(21)", "=t"),
            CP_OK);
  cp_runtime_push_results(rt);
  CHECK_INT(lua_tointeger(cp_runtime_lua(rt), -1), 42);
  lua_pop(cp_runtime_lua(rt), 1);
  cp_runtime_free(rt);
}

/* A run's tasks, finished or cancelled, hold no registry reference once
 * they are collected. */
static void test_no_refs_leak(void) {
  cp_runtime *rt = rt_new();
  lua_State *L = cp_runtime_lua(rt);
  CHECK_INT(cp_runtime_run_string(rt, "require 'cogpipe'", "=warm"), CP_OK);
  lua_gc(L, LUA_GCCOLLECT, 0);
  long before = cp_lua_live_refs(L);
  CHECK(before > 0);
  cp_runtime_run_string(rt,
                        "local cp = require 'cogpipe'\n"
                        "for i = 1, 50 do cp.spawn(function() cp.sleep(0.001 * i) end) end\n"
                        "local t = cp.spawn(function() cp.sleep(10) end)\n"
                        "cp.sleep(0.01); t:cancel()\n",
                        "=t");
  lua_gc(L, LUA_GCCOLLECT, 0);
  CHECK_INT(cp_lua_live_refs(L), before);
  cp_runtime_free(rt); /* a test build also checks the count there */
}

/* Each runtime counts its own references: one freed while another still
 * holds some is no leak, and another's tasks do not move its count. */
static void test_refs_counted_per_runtime(void) {
  cp_runtime *a = rt_new(), *b = rt_new();
  lua_State *La = cp_runtime_lua(a), *Lb = cp_runtime_lua(b);
  CHECK_INT(cp_runtime_run_string(a, "require 'cogpipe'", "=a"), CP_OK);
  long a_refs = cp_lua_live_refs(La);
  /* b's run waits in a sleep: its task holds references meanwhile */
  CHECK_INT(cp_runtime_start_string(b,
                                    "local cp = require 'cogpipe'\n"
                                    "cp.spawn(function() cp.sleep(30) end)\n",
                                    "=b", NULL, NULL),
            CP_OK);
  long b_refs = cp_lua_live_refs(Lb);
  CHECK(b_refs > 0);
  CHECK_INT(cp_lua_live_refs(La), a_refs);
  cp_runtime_free(a);
  CHECK_INT(cp_lua_live_refs(Lb), b_refs);
  cp_runtime_free(b);
}

/* Runtimes on threads of their own share no count: each thread's runtime
 * spawns and finishes many tasks while the other does, and each ends
 * where it began. */
static void busy_runtime(void *arg) {
  long *drift = arg;
  cp_runtime *rt = cp_runtime_new(NULL);
  if (!rt) {
    *drift = -1;
    return;
  }
  lua_State *L = cp_runtime_lua(rt);
  cp_runtime_run_string(rt, "require 'cogpipe'", "=warm");
  lua_gc(L, LUA_GCCOLLECT, 0);
  long before = cp_lua_live_refs(L);
  cp_runtime_run_string(
      rt,
      "local cp = require 'cogpipe'\n"
      "for round = 1, 20 do\n"
      "  local ts = {}\n"
      "  for i = 1, 50 do ts[i] = cp.spawn(function() cp.sleep(0) end) end\n"
      "  cp.wait(table.unpack(ts))\n"
      "end\n",
      "=busy");
  lua_gc(L, LUA_GCCOLLECT, 0);
  *drift = cp_lua_live_refs(L) - before;
  cp_runtime_free(rt);
}

static void test_refs_counted_per_thread(void) {
  uv_thread_t th[2];
  long drift[2] = {1, 1};
  for (int i = 0; i < 2; i++)
    CHECK_INT(uv_thread_create(&th[i], busy_runtime, &drift[i]), 0);
  for (int i = 0; i < 2; i++)
    uv_thread_join(&th[i]);
  CHECK_INT(drift[0], 0);
  CHECK_INT(drift[1], 0);
}

/* ---- memory and resumes from the loop ------------------------------------ */

static cp_runtime *rt_limited(size_t limit) {
  cp_runtime_options o = {NULL, NULL, limit};
  cp_runtime *rt = cp_runtime_new(&o);
  CHECK(rt != NULL);
  return rt;
}

/* A run that runs out of its memory limit fails with a message saying so,
 * even when the script catches the error; the runtime then runs the next
 * script as if nothing happened. */
static void test_memory_limit(void) {
  cp_runtime *rt = rt_limited((size_t)16 << 20);
  CHECK_INT(cp_runtime_run_string(rt,
                                  "local t = {}\n"
                                  "for i = 1, math.huge do t[i] = ('x'):rep(100) .. i end\n",
                                  "=hog"),
            CP_EFAILED);
  CHECK(cp_runtime_out_of_memory(rt));
  CHECK(cp_runtime_error(rt) && strstr(cp_runtime_error(rt), "memory") != NULL);
  /* caught by the script: still no ok */
  CHECK_INT(cp_runtime_run_string(rt,
                                  "local ok = pcall(function()\n"
                                  "  local t = {}\n"
                                  "  for i = 1, math.huge do t[i] = ('y'):rep(100) .. i end\n"
                                  "end)\n"
                                  "return ok\n",
                                  "=caught"),
            CP_EFAILED);
  CHECK(cp_runtime_out_of_memory(rt));
  CHECK(cp_runtime_error(rt) && strstr(cp_runtime_error(rt), "out of memory") != NULL);
  CHECK_INT(cp_runtime_run_string(rt, "return ('z'):rep(1000):len()", "=next"), CP_OK);
  CHECK(!cp_runtime_out_of_memory(rt));
  CHECK(cp_runtime_error(rt) == NULL);
  cp_runtime_free(rt);
}

/* A native that suspends its task until a timer fires; the timer callback
 * resumes the task with what push_mode builds: a value (mode 0), a Lua
 * error (mode 1), or more memory than the runtime may have (mode 2). */
typedef struct pend {
  uv_timer_t timer;
  cp_task *task;
  cp_runtime *rt;
  int mode;
} pend;

static int push_mode(lua_State *L, void *data) {
  pend *p = data;
  if (p->mode == 1) return luaL_error(L, "boom from the loop");
  if (p->mode == 2) lua_newuserdatauv(L, (size_t)256 << 20, 0);
  else lua_pushinteger(L, 42);
  return 1;
}

static void pend_closed(uv_handle_t *h) {
  pend *p = h->data;
  cp_runtime_handle_dec(p->rt);
  free(p);
}

static void pend_fire(uv_timer_t *t) {
  pend *p = t->data;
  uv_close((uv_handle_t *)t, pend_closed); /* p lives until the loop turns */
  cp_task_resume(p->task, push_mode, p);
}

static void pend_cancel(void *data) {
  pend *p = data;
  uv_timer_stop(&p->timer);
  uv_close((uv_handle_t *)&p->timer, pend_closed);
}

static int l_pend(lua_State *L) {
  int mode = (int)luaL_checkinteger(L, 1);
  cp_task *t = cp_task_current(L);
  pend *p = calloc(1, sizeof *p);
  p->task = t;
  p->mode = mode;
  p->rt = cp_runtime_from_lua(L);
  uv_timer_init(cp_runtime_loop(p->rt), &p->timer);
  cp_runtime_handle_inc(p->rt);
  p->timer.data = p;
  uv_timer_start(&p->timer, pend_fire, 1, 0);
  return cp_task_suspend(L, t, pend_cancel, p);
}

/* What a loop callback hands a suspended task is built under a protected
 * call: an error or a lack of memory there is raised in the task, where
 * the script can catch it, and never ends the process. */
static void test_resume_errors_reach_the_task(void) {
  cp_runtime *rt = rt_limited((size_t)32 << 20);
  CHECK_INT(cp_runtime_register(rt, "pend", l_pend), 0);
  const char *code =
      "local cp = require 'cogpipe'\n"
      "assert(cp.pend(0) == 42)\n"
      "local ok, err = pcall(cp.pend, 1)\n"
      "assert(not ok and tostring(err):find('boom from the loop', 1, true), tostring(err))\n"
      "local ok2, err2 = pcall(cp.pend, 2)\n"
      "assert(not ok2 and type(err2) == 'table' and err2.kind == 'memory',\n"
      "       tostring(err2))\n"
      "local t = cp.spawn(function() return cp.pend(2) end)\n"
      "local v, e = cp.wait(t)\n"
      "assert(v == nil and e.kind == 'memory' and e.message:find('out of memory'),\n"
      "       tostring(e and e.message))\n"
      "return cp.pend(0)\n";
  CHECK_INT(cp_runtime_run_string(rt, code, "=resume"), CP_EFAILED);
  CHECK(cp_runtime_out_of_memory(rt));
  lua_State *L = cp_runtime_lua(rt);
  CHECK_INT(cp_runtime_push_results(rt), 1); /* the script itself went on */
  CHECK_INT(lua_tointeger(L, -1), 42);
  lua_pop(L, 1);
  /* a Lua error alone is the task's business, not a failed run */
  CHECK_INT(cp_runtime_run_string(rt,
                                  "local cp = require 'cogpipe'\n"
                                  "local ok = pcall(cp.pend, 1)\n"
                                  "assert(not ok)\n",
                                  "=error-only"),
            CP_OK);
  cp_runtime_free(rt);
}

/* ---- shutdown -------------------------------------------------------- */

/* cp.nap(ms): pool work that takes ms of wall time and no CPU, so the CPU
 * the process burns while it runs is the waiting side's alone. */
static atomic_int nap_started, nap_done;

static void nap_work(void *op) {
  atomic_store(&nap_started, 1);
  uv_sleep(*(unsigned *)op);
  atomic_store(&nap_done, 1);
}

static int nap_push(lua_State *L, void *op) {
  (void)op;
  lua_pushboolean(L, 1);
  return 1;
}

static int l_nap(lua_State *L) {
  unsigned ms = (unsigned)luaL_checkinteger(L, 1);
  unsigned *op = malloc(sizeof *op);
  *op = ms;
  return cp_offload_run(L, op, nap_work, nap_push, free);
}

static double cpu_seconds(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static int ticks;
static void tick(uv_timer_t *t) {
  (void)t;
  ticks++;
}

/* Frees a runtime on loop while its task waits for 500 ms of pool work;
 * checks that the free waited for the work, and slept meanwhile. */
static void free_during_nap(uv_loop_t *loop) {
  atomic_store(&nap_started, 0);
  atomic_store(&nap_done, 0);
  cp_runtime_options o = {loop, NULL, 0};
  cp_runtime *rt = cp_runtime_new(&o);
  CHECK(rt != NULL);
  CHECK_INT(cp_runtime_register(rt, "nap", l_nap), 0);
  CHECK_INT(cp_runtime_start_string(rt, "require('cogpipe').nap(500)", "=nap",
                                    NULL, NULL),
            CP_OK);
  /* not the loop: a turn of it could sleep until the work is done */
  while (!atomic_load(&nap_started))
    uv_sleep(1);
  CHECK(!atomic_load(&nap_done)); /* on the pool, not run inline */
  uint64_t t0 = uv_hrtime();
  double c0 = cpu_seconds();
  cp_runtime_free(rt);
  double wall = (double)(uv_hrtime() - t0) / 1e9, cpu = cpu_seconds() - c0;
  CHECK(atomic_load(&nap_done)); /* it let go of the work only once done */
  CHECK(wall > 0.3);
  if (!(cpu < wall / 4))
    fprintf(stderr, "free burnt %.3f s of CPU in %.3f s\n", cpu, wall);
  CHECK(cpu < wall / 4);
}

/* A runtime freed while its pool work runs, on a loop whose embedder has
 * handles of its own: the free returns once the work is done -- waiting
 * for it, not spinning -- whether the embedder's handles fire often or
 * not for an hour, and leaves them as they were. */
static void test_free_waits_for_pool_work(void) {
  uv_loop_t loop;
  CHECK_INT(uv_loop_init(&loop), 0);
  uv_timer_t later, often;
  uv_timer_init(&loop, &later);
  uv_timer_start(&later, tick, 3600 * 1000, 0);
  free_during_nap(&loop); /* nothing else wakes the loop */
  uv_timer_init(&loop, &often);
  uv_timer_start(&often, tick, 10, 10);
  free_during_nap(&loop);
  CHECK(uv_is_active((uv_handle_t *)&later) &&
        !uv_is_closing((uv_handle_t *)&later));
  CHECK(uv_is_active((uv_handle_t *)&often) &&
        !uv_is_closing((uv_handle_t *)&often));
  int before = ticks;
  while (ticks < before + 3)
    uv_run(&loop, UV_RUN_ONCE);
  uv_close((uv_handle_t *)&later, NULL);
  uv_close((uv_handle_t *)&often, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_INT(uv_loop_close(&loop), 0);
}

int main(void) {
  RUN(test_memory_limit);
  RUN(test_resume_errors_reach_the_task);
  RUN(test_results);
  RUN(test_syntax_error_is_usage);
  RUN(test_bytecode_refused);
  RUN(test_main_error_fails_run_and_cancels);
  RUN(test_unwaited_task_failure_fails_run);
  RUN(test_deadlock_detected);
  RUN(test_exit_status_requested);
  RUN(test_register_after_load);
  RUN(test_no_refs_leak);
  RUN(test_refs_counted_per_runtime);
  RUN(test_refs_counted_per_thread);
  RUN(test_free_waits_for_pool_work);
  DONE();
}
