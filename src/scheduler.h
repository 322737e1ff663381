/*
 * scheduler.h -- the scheduler's side of tasks, used by the runtime: creating the
 * scheduler, spawning the main task, cancelling everything at shutdown.
 * Primitives that suspend tasks only need task.h.
 */
#ifndef CP_SCHEDULER_H
#define CP_SCHEDULER_H

#include <lauxlib.h>

#include "task.h"

typedef struct cp_sched cp_sched;

typedef struct cp_sched_hooks {
  void (*on_finish)(cp_task *t, void *data); /* a task ended (done or failed) */
  void (*on_idle)(void *data);               /* no task is left */
  void *data;
} cp_sched_hooks;

/* A scheduler for the tasks of main state L; NULL when out of memory.
 * cp_sched_init then makes its Lua objects: it may raise, so it runs in
 * protected mode, and cp_sched_free releases whatever it got to make. */
cp_sched *cp_sched_new(lua_State *L, const cp_sched_hooks *hooks);
void cp_sched_init(cp_sched *s);
void cp_sched_free(cp_sched *s); /* cancels what is left */

/* Spawns the function below nargs arguments at the top of L; pops them and
 * pushes the task object. The task starts when the run queue is drained.
 * Raises on a memory error: call it in protected mode. */
cp_task *cp_sched_spawn(cp_sched *s, lua_State *L, int nargs);
void cp_sched_run_pending(cp_sched *s);
void cp_sched_cancel_all(cp_sched *s, const char *why);
long cp_sched_live(const cp_sched *s);
long cp_sched_unobserved_failures(const cp_sched *s);
void cp_sched_clear_failures(cp_sched *s); /* a new run starts clean */

/* Adds spawn and wait to the table at the top of L's stack. */
void cp_sched_open(cp_sched *s, lua_State *L);

int cp_task_finished(const cp_task *t);
int cp_task_failed(const cp_task *t);
/* Pushes a finished task's results, or its error table when it failed;
 * unlike cp.wait this does not count as handling a failure. Raises when
 * `to` has no room for them: call it in protected mode. */
int cp_task_push_results(cp_task *t, lua_State *to);

#endif
