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
 *   lua_State *co = cp_task_thread(op->task);
 *   lua_pushinteger(co, result);                // the values l_thing returns
 *   cp_task_resume(op->task, 1);
 *
 * cancel_op is called instead, exactly once, when the task is abandoned
 * (runtime shutdown, main chunk failed) before the operation completed; it
 * must stop the operation so that its callback never resumes the task, and
 * release what it owns (closing handles is fine; their close callbacks run
 * later). After resume or cancel the task forgets the operation.
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

/* The coroutine to push resume values onto. */
lua_State *cp_task_thread(cp_task *t);

/* Resumes a suspended task with the top nargs values of its thread. Runs the
 * task until it suspends again or ends; never raises. */
void cp_task_resume(cp_task *t, int nargs);

#endif
