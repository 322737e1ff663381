/*
 * lua_offload.c -- the thread-pool hand-over of lua_offload.h. The request
 * counts as a handle of the runtime while it is queued or running, so a
 * runtime that shuts down waits for the pool thread to let go of op before
 * anything op points to can go away.
 */
#include "lua_offload.h"

#include <stdlib.h>
#include <uv.h>

#include "buf.h"
#include "runtime.h"
#include "task.h"

typedef struct offload {
  uv_work_t req;
  cp_task *task; /* NULL once abandoned */
  cp_runtime *rt;
  void *op;
  cp_offload_work_fn work;
  cp_offload_push_fn push;
  cp_offload_free_fn release;
} offload;

static void on_work(uv_work_t *req) {
  offload *o = req->data;
  o->work(o->op);
}

static void after_work(uv_work_t *req, int status) {
  offload *o = req->data;
  cp_runtime_handle_dec(o->rt);
  cp_task *task = o->task;
  if (task && status == 0) {
    lua_State *co = cp_task_thread(task);
    int n = o->push(co, o->op);
    o->release(o->op);
    free(o);
    cp_task_resume(task, n);
    return;
  }
  o->release(o->op);
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

int cp_offload_run(lua_State *L, void *op, cp_offload_work_fn work,
                   cp_offload_push_fn push, cp_offload_free_fn release) {
  cp_task *task = suspendable_task(L);
  if (!task) {
    work(op);
    int n = push(L, op);
    release(op);
    return n;
  }
  cp_runtime *rt = cp_runtime_from_lua(L);
  /* owned by the request; freed in after_work */
  offload *o = cp_malloc(sizeof *o);
  o->task = task;
  o->rt = rt;
  o->op = op;
  o->work = work;
  o->push = push;
  o->release = release;
  o->req.data = o;
  int rc = uv_queue_work(cp_runtime_loop(rt), &o->req, on_work, after_work);
  if (rc != 0) {
    free(o);
    work(op);
    int n = push(L, op);
    release(op);
    return n;
  }
  cp_runtime_handle_inc(rt);
  return cp_task_suspend(L, task, cancel_offload, o);
}
