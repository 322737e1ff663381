/* Unit tests of the embedding API (runtime.c, task.c): statuses, errors,
 * results, registration, deadlock detection and reference hygiene. */
#include "check.h"
#include "cogpipe.h"
#include "lutil.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>

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

static void test_no_refs_leak(void) {
  long before = cp_lua_live_refs();
  cp_runtime *rt = rt_new();
  cp_runtime_run_string(rt,
                        "local cp = require 'cogpipe'\n"
                        "for i = 1, 50 do cp.spawn(function() cp.sleep(0.001 * i) end) end\n"
                        "local t = cp.spawn(function() cp.sleep(10) end)\n"
                        "cp.sleep(0.01); t:cancel()\n",
                        "=t");
  cp_runtime_free(rt);
  CHECK_INT(cp_lua_live_refs(), before);
}

int main(void) {
  RUN(test_results);
  RUN(test_syntax_error_is_usage);
  RUN(test_bytecode_refused);
  RUN(test_main_error_fails_run_and_cancels);
  RUN(test_unwaited_task_failure_fails_run);
  RUN(test_deadlock_detected);
  RUN(test_exit_status_requested);
  RUN(test_register_after_load);
  RUN(test_no_refs_leak);
  DONE();
}
