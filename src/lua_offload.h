/*
 * lua_offload.h -- CPU-heavy native work (semantic products, near-duplicate
 * search) run on the libuv thread pool while the calling task waits, so the
 * loop goes on serving other tasks meanwhile. Owns only the hand-over: what
 * the work is, and how its result becomes Lua values, are the caller's.
 */
#ifndef CP_LUA_OFFLOAD_H
#define CP_LUA_OFFLOAD_H

#include <lua.h>

/* Runs on a pool thread: no Lua, no loop, only memory op owns. */
typedef void (*cp_offload_work_fn)(void *op);
/* Runs on the loop thread after work: pushes the results, returns how many. */
typedef int (*cp_offload_push_fn)(lua_State *L, void *op);
/* Releases op; runs exactly once, after work (or instead of it, when the
 * work never started), whether or not push ran. */
typedef void (*cp_offload_free_fn)(void *op);

/* Use as `return cp_offload_run(L, op, work, push, release);`. In a task
 * that can yield, work runs on the thread pool and the task is suspended
 * until it is done; elsewhere (the main state of an embedder, a plain
 * coroutine, a metamethod) it runs right here. The calling function's
 * results are push's values. If the task is abandoned meanwhile, push
 * never runs and release runs once work has finished. Takes ownership of
 * op in every case. */
int cp_offload_run(lua_State *L, void *op, cp_offload_work_fn work,
                   cp_offload_push_fn push, cp_offload_free_fn release);

#endif
