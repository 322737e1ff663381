/*
 * lua_offload.c -- the thread-pool hand-over of lua_offload.h. The request
 * counts as a handle of the runtime while it is queued or running, so a
 * runtime that shuts down waits for the pool thread to let go of op before
 * anything op points to can go away. It also decides whether libuv's pool
 * may be used at all: libuv aborts the process when it cannot start the
 * pool's threads, so the pool is only used once their memory is known to
 * be there; until then the work runs on the calling thread.
 */
#include "lua_offload.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <uv.h>

#include "buf.h"
#include "lutil.h"
#include "runtime.h"
#include "task.h"

/* libuv's pool: UV_THREADPOOL_SIZE threads (default 4, at most 1024), each
 * with a stack of RLIMIT_STACK (8 MiB where it is unlimited; libuv 1.45
 * and later always 8 MiB), started all at once on the first request. */
#define POOL_DEFAULT_THREADS 4
#define POOL_MAX_THREADS 1024
#define POOL_STACK_FLOOR ((size_t)8 << 20)
/* What the work itself needs beside the stacks, so that a pool that just
 * fits does not leave the work without memory. */
#define POOL_HEADROOM ((size_t)16 << 20)

typedef struct offload {
  uv_work_t req;
  cp_task *task; /* NULL once abandoned */
  cp_runtime *rt;
  void *op;
  cp_offload_work_fn work;
  cp_offload_push_fn push;
  cp_offload_free_fn release;
  int released;
} offload;

/* ---- may the pool be used? --------------------------------------------- */

/* Set once a request went to the pool: its threads are running, for good. */
static atomic_int pool_started;

static size_t pool_bytes(void) {
  const char *env = getenv("UV_THREADPOOL_SIZE");
  long n = env && *env ? strtol(env, NULL, 10) : POOL_DEFAULT_THREADS;
  if (n <= 0) n = 1;
  if (n > POOL_MAX_THREADS) n = POOL_MAX_THREADS;
  size_t stack = POOL_STACK_FLOOR;
  struct rlimit rl;
  if (getrlimit(RLIMIT_STACK, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
      rl.rlim_cur > stack)
    stack = (size_t)rl.rlim_cur;
  return (size_t)n * (stack + 65536) + POOL_HEADROOM;
}

/* Whether the pool may take a request now: it has started, or the address
 * space its threads will take can be had (reserved and given back at
 * once; a limit on it, such as ulimit -v, is what makes libuv abort). */
static int pool_usable(void) {
  if (atomic_load(&pool_started)) return 1;
  size_t bytes = pool_bytes();
  void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return 0;
  munmap(p, bytes);
  return 1;
}

/* ---- the hand-over ------------------------------------------------------ */

static void on_work(uv_work_t *req) {
  offload *o = req->data;
  o->work(o->op);
}

/* The values are built from op, which then goes at once: the task must
 * find what op held (a set busy while searched) let go when it goes on. */
static int push_offloaded(lua_State *L, void *data) {
  offload *o = data;
  int n = o->push(L, o->op);
  o->released = 1;
  o->release(o->op);
  return n;
}

static void after_work(uv_work_t *req, int status) {
  offload *o = req->data;
  cp_runtime_handle_dec(o->rt);
  cp_task *task = o->task;
  if (task && status == 0) cp_task_resume(task, push_offloaded, o);
  if (!o->released) o->release(o->op); /* push raised, or nobody waits */
  free(o);
}

/* The task is being abandoned: the pool thread may be running op, so it
 * cannot be freed here; after_work does that, without resuming anyone. */
static void cancel_offload(void *data) {
  offload *o = data;
  o->task = NULL;
  uv_cancel((uv_req_t *)&o->req);
}

static int probe(lua_State *L) {
  lua_pushlightuserdata(L, cp_task_current(L));
  return 1;
}

/* The task L runs, or NULL when L is not a task that may suspend here. */
static cp_task *suspendable_task(lua_State *L) {
  if (!lua_isyieldable(L)) return NULL;
  lua_pushcfunction(L, probe);
  if (lua_pcall(L, 0, 1, 0) != LUA_OK) {
    lua_pop(L, 1);
    return NULL;
  }
  cp_task *t = lua_touserdata(L, -1);
  lua_pop(L, 1);
  return t;
}

typedef struct inline_run {
  void *op;
  cp_offload_push_fn push;
} inline_run;

static int push_inline(lua_State *L) {
  inline_run *r = lua_touserdata(L, 1);
  lua_pop(L, 1);
  return r->push(L, r->op);
}

/* Runs the work here and returns push's values; op is released even when
 * push raises (the error goes on once op is gone). */
static int run_here(lua_State *L, void *op, cp_offload_work_fn work,
                    cp_offload_push_fn push, cp_offload_free_fn release) {
  work(op);
  inline_run r = {op, push};
  int top = lua_gettop(L);
  if (!lua_checkstack(L, 3)) {
    release(op);
    return cp_lua_nomem(L, "handing over the results of native work");
  }
  lua_pushcfunction(L, push_inline);
  lua_pushlightuserdata(L, &r);
  int st = lua_pcall(L, 1, LUA_MULTRET, 0);
  release(op);
  if (st != LUA_OK) return lua_error(L);
  return lua_gettop(L) - top;
}

int cp_offload_run(lua_State *L, void *op, cp_offload_work_fn work,
                   cp_offload_push_fn push, cp_offload_free_fn release) {
  cp_task *task = suspendable_task(L);
  if (!task || !pool_usable())
    return run_here(L, op, work, push, release);
  cp_runtime *rt = cp_runtime_from_lua(L);
  /* owned by the request; freed in after_work */
  offload *o = cp_malloc(sizeof *o);
  if (!o) return run_here(L, op, work, push, release);
  o->task = task;
  o->rt = rt;
  o->op = op;
  o->work = work;
  o->push = push;
  o->release = release;
  o->released = 0;
  o->req.data = o;
  int rc = uv_queue_work(cp_runtime_loop(rt), &o->req, on_work, after_work);
  if (rc != 0) {
    free(o);
    return run_here(L, op, work, push, release);
  }
  atomic_store(&pool_started, 1);
  cp_runtime_handle_inc(rt);
  return cp_task_suspend(L, task, cancel_offload, o);
}
