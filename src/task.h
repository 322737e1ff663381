/*
 * task.h -- tasks: Lua coroutines driven by the libuv loop. An async native
 * primitive (sleep, HTTP, ...) suspends the running task and a loop callback
 * resumes it with the results; scripts read top to bottom.
 *
 * How a primitive uses it (see lua_core.c's sleep):
 *
 *   static int l_thing(lua_State *L) {
 *     cp_task *t = cp_task_current(L);          // raises outside a task
 *     struct op *op = start_op(...);            // op->task = t
 *     return cp_task_suspend(L, t, cancel_op, op);
 *   }
 *   // later, in a loop callback:
 *   static int push_thing(lua_State *L, void *data) {  // may raise
 *     lua_pushinteger(L, ((struct op *)data)->result);
 *     return 1;                                 // the values l_thing returns
 *   }
 *   cp_task_resume(op->task, push_thing, op);
 *
 * cancel_op is called instead, exactly once, when the task is abandoned
 * (runtime shutdown, main chunk failed) before the operation completed; it
 * must stop the operation so that its callback never resumes the task, and
 * release what it owns (closing handles is fine; their close callbacks run
 * later). After resume or cancel the task forgets the operation.
 *
 * Nothing a loop callback does here can end the process: the values are
 * built under a protected call, and when that fails (a Lua error, out of
 * memory) the task's pending call raises the error instead of returning.
 */
#ifndef CP_TASK_H
#define CP_TASK_H

#include <lua.h>

typedef struct cp_task cp_task;
typedef void (*cp_cancel_fn)(void *op);

/* The task whose coroutine is L; raises a Lua error when L is not a task
 * (the main state, or a plain coroutine created inside a task). */
cp_task *cp_task_current(lua_State *L);

/* Records the pending operation and yields. Use as `return cp_task_suspend`.
 * The values later pushed by the resumer become the C function's results. */
int cp_task_suspend(lua_State *L, cp_task *t, cp_cancel_fn cancel, void *op);

/* Builds the values a suspended task resumes with, on the runtime's main
 * state L inside a protected call: it may raise (a Lua error, memory) and
 * should luaL_checkstack beyond a few values. Returns how many it pushed. */
typedef int (*cp_task_push_fn)(lua_State *L, void *data);

/* Resumes a suspended task with the values push builds (push NULL: none).
 * When they cannot be built or handed over, the task's pending call raises
 * instead: push's error, or a memory error made up front so that reporting
 * one needs no memory. Runs the task until it suspends again or ends;
 * never raises. */
void cp_task_resume(cp_task *t, cp_task_push_fn push, void *data);

#endif
