/*
 * task.c -- the scheduler: tasks are Lua coroutines, resumed from a run
 * queue that loop callbacks feed. Owns task lifetimes, joining (wait) and
 * cancellation; knows nothing of what the operations a task waits on are,
 * nor of the runtime: a primitive reaches the scheduler through its task,
 * and the runtime hears of tasks through the hooks it gave (scheduler.h).
 */
#include "task.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lutil.h"
#include "scheduler.h"

#define TASK_MT "cogpipe.task"

/* The registry key of the state's weak table thread -> task: a primitive
 * finds its task, and through it the scheduler, from its own thread. */
static const char tasks_key;

typedef enum { T_NEW, T_READY, T_RUNNING, T_SUSPENDED, T_DONE, T_FAILED } tstate;

typedef struct waitlink {
  cp_task *waiter;
  struct waitlink *next;
} waitlink;

struct cp_task {
  cp_sched *sched;
  lua_State *co;
  int co_ref;   /* the coroutine, for as long as the task object lives */
  int self_ref; /* the task object, while it is unfinished */
  tstate state;
  int nres; /* results (or the one error) left on co's stack when finished */
  cp_cancel_fn cancel;
  void *op;
  waitlink *waiters; /* tasks joined on this one */
  cp_task **joined;  /* what this task waits on, while in cp.wait */
  int njoined, remaining;
  int observed; /* someone has read the outcome */
  cp_task *prev, *next; /* live (unfinished) tasks */
  cp_task *qnext;       /* run queue */
  int qnargs;
  int raise; /* the pending call raises the value on top instead of returning */
};

struct cp_sched {
  lua_State *L; /* the main state; tasks are resumed from it */
  cp_task *live;
  long nlive;
  cp_task *qhead, *qtail;
  int draining;
  cp_task *current;
  long unobserved_failures;
  /* The error of a task that ran out of memory, made up front: reporting
   * one must not need any. */
  int nomem_ref;
  cp_sched_hooks hooks;
};

/* ---- scheduler ---------------------------------------------------------- */

cp_sched *cp_sched_new(lua_State *L, const cp_sched_hooks *hooks) {
  cp_sched *s = cp_calloc(1, sizeof *s); /* the runtime's; cp_sched_free */
  if (!s) return NULL;
  s->L = L;
  if (hooks) s->hooks = *hooks;
  s->nomem_ref = LUA_NOREF;
  return s;
}

void cp_sched_init(cp_sched *s) {
  lua_State *L = s->L;
  lua_newtable(L);
  lua_createtable(L, 0, 1);
  lua_pushliteral(L, "k");
  lua_setfield(L, -2, "__mode");
  lua_setmetatable(L, -2);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &tasks_key);
  cp_lua_push_error(L, "memory", "out of memory");
  s->nomem_ref = cp_lua_ref(L);
}

long cp_sched_live(const cp_sched *s) { return s->nlive; }
long cp_sched_unobserved_failures(const cp_sched *s) {
  return s->unobserved_failures;
}
void cp_sched_clear_failures(cp_sched *s) { s->unobserved_failures = 0; }

static void live_add(cp_sched *s, cp_task *t) {
  t->next = s->live;
  t->prev = NULL;
  if (s->live) s->live->prev = t;
  s->live = t;
  s->nlive++;
}

static void live_remove(cp_sched *s, cp_task *t) {
  if (t->prev) t->prev->next = t->next;
  else s->live = t->next;
  if (t->next) t->next->prev = t->prev;
  t->prev = t->next = NULL;
  s->nlive--;
}

static void enqueue(cp_task *t, int nargs) {
  cp_sched *s = t->sched;
  t->state = T_READY;
  t->qnargs = nargs;
  t->qnext = NULL;
  if (s->qtail) s->qtail->qnext = t;
  else s->qhead = t;
  s->qtail = t;
}

static void run(cp_task *t);

static void drain(cp_sched *s) {
  if (s->draining) return;
  s->draining = 1;
  while (s->qhead) {
    cp_task *t = s->qhead;
    s->qhead = t->qnext;
    if (!s->qhead) s->qtail = NULL;
    run(t);
  }
  s->draining = 0;
  if (s->nlive == 0 && s->hooks.on_idle) s->hooks.on_idle(s->hooks.data);
}

/* ---- handing values over ------------------------------------------------- */

static void finish(cp_task *t, tstate how);

/* Gives a task that could not be resumed or reported normally the memory
 * error made up front: after lua_resetthread the thread has room for it. */
static void fail_nomem(cp_task *t) {
  cp_sched *s = t->sched;
  lua_resetthread(t->co);
  lua_rawgeti(t->co, LUA_REGISTRYINDEX, s->nomem_ref);
  t->nres = 1;
  finish(t, T_FAILED);
}

/* Fails t with the value at the top of the main state, which it pops. */
static void fail_with_top(cp_task *t) {
  lua_resetthread(t->co);
  lua_xmove(t->sched->L, t->co, 1);
  t->nres = 1;
  finish(t, T_FAILED);
}

typedef struct handover {
  cp_task_push_fn push;
  void *data;
} handover;

static int call_push(lua_State *L) {
  handover *h = lua_touserdata(L, 1);
  lua_settop(L, 0);
  return h->push(L, h->data);
}

/* Readies a suspended task to go on with the values push builds. They are
 * made on the main state under a protected call -- never on the suspended
 * thread, where an error would have no handler -- and moved over; when
 * that fails the task is readied to raise the error instead (see
 * resumed). Never raises. */
static void hand_over(cp_task *t, cp_task_push_fn push, void *data) {
  cp_sched *s = t->sched;
  lua_State *L = s->L, *co = t->co;
  int top = lua_gettop(L);
  int n = 0, raise = 0;
  if (push) {
    handover h = {push, data};
    int st = LUA_ERRMEM;
    if (lua_checkstack(L, 3)) {
      lua_pushcfunction(L, call_push);
      lua_pushlightuserdata(L, &h);
      st = cp_lua_pcall(L, 1, LUA_MULTRET);
    } else {
      cp_lua_note_oom(L, "resuming a task");
    }
    if (st == LUA_OK) {
      n = lua_gettop(L) - top;
    } else {
      raise = 1;
      n = st == LUA_ERRMEM ? 0 : lua_gettop(L) - top; /* push's own error */
    }
    if (n > 0 && !lua_checkstack(co, n)) {
      cp_lua_note_oom(L, "resuming a task");
      raise = 1;
      n = 0;
    }
    if (n > 0) lua_xmove(L, co, n);
    lua_settop(L, top);
  }
  if (raise && n == 0) {
    if (!lua_checkstack(co, 1)) { /* not even room to raise: it fails here */
      fail_nomem(t);
      return;
    }
    lua_rawgeti(co, LUA_REGISTRYINDEX, s->nomem_ref);
    n = 1;
  }
  t->raise = raise;
  enqueue(t, n);
}

/* ---- finishing ---------------------------------------------------------- */

/* A failure someone reads is handled; one nobody reads fails the run. */
static void mark_observed(cp_task *t) {
  if (!t->observed && t->state == T_FAILED) t->sched->unobserved_failures--;
  t->observed = 1;
}

/* Copies a finished task's results (all, or the first or nil) to `to`.
 * Raises when there is no room: runs in protected mode. */
static void push_outcome(cp_task *t, lua_State *to, int all) {
  mark_observed(t);
  if (t->state == T_FAILED) {
    luaL_checkstack(to, 2, "too many results");
    lua_pushnil(to);
    if (!lua_checkstack(t->co, 1)) cp_lua_nomem(to, "reading a task's error");
    lua_pushvalue(t->co, -1);
    lua_xmove(t->co, to, 1);
    return;
  }
  int n = all ? t->nres : (t->nres > 0 ? 1 : 0);
  int base = lua_gettop(t->co) - t->nres;
  luaL_checkstack(to, n + 1, "too many results");
  if (!lua_checkstack(t->co, n)) cp_lua_nomem(to, "reading a task's results");
  for (int i = 1; i <= n; i++) lua_pushvalue(t->co, base + i);
  lua_xmove(t->co, to, n);
  if (!all && n == 0) lua_pushnil(to);
}

/* What cp.wait returns: one task's results, or one value per task followed
 * by a table of errors by position when any of them failed. Raises on a
 * memory error: runs in protected mode. */
static int push_wait_results(cp_task **ts, int n, lua_State *to) {
  if (n == 1) {
    int before = lua_gettop(to);
    push_outcome(ts[0], to, 1);
    return lua_gettop(to) - before;
  }
  int failed = 0;
  luaL_checkstack(to, n + 2, "too many tasks");
  for (int i = 0; i < n; i++) {
    if (ts[i]->state == T_FAILED) {
      failed = 1;
      mark_observed(ts[i]);
      lua_pushnil(to);
    } else {
      push_outcome(ts[i], to, 0);
    }
  }
  if (!failed) return n;
  lua_newtable(to);
  for (int i = 0; i < n; i++) {
    if (ts[i]->state != T_FAILED) continue;
    if (!lua_checkstack(ts[i]->co, 1)) cp_lua_nomem(to, "reading a task's error");
    lua_pushvalue(ts[i]->co, -1);
    lua_xmove(ts[i]->co, to, 1);
    lua_rawseti(to, -2, i + 1);
  }
  return n + 1;
}

typedef struct joined {
  cp_task **ts;
  int n;
} joined;

static int push_joined(lua_State *L, void *data) {
  joined *j = data;
  return push_wait_results(j->ts, j->n, L);
}

static void finish(cp_task *t, tstate how) {
  cp_sched *s = t->sched;
  t->state = how;
  live_remove(s, t);
  if (how == T_FAILED && !t->observed) s->unobserved_failures++;
  for (waitlink *w = t->waiters, *next; w; w = next) {
    next = w->next;
    cp_task *waiter = w->waiter;
    free(w);
    if (--waiter->remaining == 0) {
      joined j = {waiter->joined, waiter->njoined};
      waiter->joined = NULL;
      waiter->cancel = NULL;
      waiter->op = NULL;
      hand_over(waiter, push_joined, &j);
      free(j.ts);
    }
  }
  t->waiters = NULL;
  if (s->hooks.on_finish) s->hooks.on_finish(t, s->hooks.data);
  /* Unanchor: from now on the task lives as long as Lua refers to it. */
  cp_lua_unref(s->L, &t->self_ref);
}

typedef struct failure {
  cp_task *t;
  int status; /* of lua_resume, for a task whose code raised */
  const char *kind, *msg;
} failure;

static const char *error_text(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  if (msg) return msg;
  if (luaL_callmeta(L, -1, "__tostring") && lua_isstring(L, -1))
    return lua_tostring(L, -1);
  return lua_pushfstring(L, "(error object is a %s value)",
                         luaL_typename(L, -1));
}

/* In protected mode on the main state: the error table {kind, message}. */
static int build_error(lua_State *L) {
  failure *f = lua_touserdata(L, 1);
  cp_lua_push_error(L, f->kind, "%s", f->msg);
  return 1;
}

/* In protected mode on the main state: the error table of a task whose
 * code raised, from the error object it left (taken off the dead thread,
 * whose frames stay for the traceback). The kind is "memory" when memory
 * ran out there, whether Lua's own allocation or a binding's. */
static int build_failure(lua_State *L) {
  failure *f = lua_touserdata(L, 1);
  lua_State *co = f->t->co;
  lua_xmove(co, L, 1);
  const char *kind = "task";
  if (f->status == LUA_ERRMEM) {
    kind = "memory";
  } else if (lua_istable(L, -1)) {
    lua_getfield(L, -1, "kind");
    if (lua_type(L, -1) == LUA_TSTRING && strcmp(lua_tostring(L, -1), "memory") == 0)
      kind = "memory";
    lua_pop(L, 1);
  }
  const char *msg = error_text(L);
  luaL_traceback(L, co, msg, 0);
  /* The message keeps its file:line; the whole traceback rides along. */
  cp_lua_push_error(L, kind, "%s", msg);
  lua_pushvalue(L, -2);
  lua_setfield(L, -2, "traceback");
  return 1;
}

/* Replaces whatever the failed coroutine holds with one error table; when
 * even that cannot be made, with the memory error made up front. */
static void fail_task(cp_task *t, const char *kind, const char *msg) {
  failure f = {t, LUA_OK, kind, msg};
  if (cp_lua_protect(t->sched->L, build_error, &f, 1) == LUA_OK)
    fail_with_top(t);
  else
    fail_nomem(t);
}

static void report_failure(cp_task *t, int status) {
  lua_State *L = t->sched->L;
  if (status == LUA_ERRMEM) cp_lua_note_oom(L, NULL);
  failure f = {t, status, NULL, NULL};
  if (cp_lua_protect(L, build_failure, &f, 1) == LUA_OK)
    fail_with_top(t);
  else
    fail_nomem(t);
}

static void run(cp_task *t) {
  cp_sched *s = t->sched;
  cp_task *outer = s->current;
  t->state = T_RUNNING;
  s->current = t;
  int nres = 0;
  int status = lua_resume(t->co, s->L, t->qnargs, &nres);
  s->current = outer;
  if (status == LUA_YIELD) {
    if (t->cancel || t->joined) {
      t->state = T_SUSPENDED;
      return;
    }
    lua_pop(t->co, nres);
    fail_task(t, "task",
              "coroutine.yield out of a task: async calls yield by "
              "themselves, use cp.sleep(0) to let other tasks run");
    return;
  }
  if (status == LUA_OK) {
    t->nres = nres;
    finish(t, T_DONE);
    return;
  }
  report_failure(t, status);
}

/* ---- the C API ---------------------------------------------------------- */

/* The task whose coroutine L is, or NULL (the main state, a plain
 * coroutine, a state with no scheduler). */
static cp_task *task_of_thread(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return NULL;
  }
  lua_pushthread(L);
  lua_rawget(L, -2);
  cp_task *t = lua_touserdata(L, -1);
  lua_pop(L, 2);
  return t;
}

cp_task *cp_task_current(lua_State *L) {
  cp_task *t = task_of_thread(L);
  if (!t || t != t->sched->current)
    luaL_error(L, "async call outside a cogpipe task (a plain coroutine "
                  "cannot wait for the loop; use cp.spawn)");
  return t;
}

/* Where a suspended primitive goes on: it returns the values it was
 * resumed with, or raises the one hand_over left when they could not be
 * made. */
static int resumed(lua_State *L, int status, lua_KContext ctx) {
  (void)status;
  cp_task *t = (cp_task *)ctx;
  if (t->raise) {
    t->raise = 0;
    return lua_error(L);
  }
  return t->qnargs;
}

int cp_task_suspend(lua_State *L, cp_task *t, cp_cancel_fn cancel, void *op) {
  t->cancel = cancel;
  t->op = op;
  return lua_yieldk(L, 0, (lua_KContext)t, resumed);
}

void cp_task_resume(cp_task *t, cp_task_push_fn push, void *data) {
  t->cancel = NULL;
  t->op = NULL;
  hand_over(t, push, data);
  drain(t->sched);
}

/* Abandons an unfinished task: its operation is cancelled, its joins are
 * dropped, and it fails with kind "cancelled" (waiters get nil, err). */
static void cancel_task(cp_task *t, const char *why) {
  cp_sched *s = t->sched;
  if (t->state == T_READY) {
    cp_task **pp = &s->qhead, *prev = NULL;
    while (*pp && *pp != t) {
      prev = *pp;
      pp = &(*pp)->qnext;
    }
    if (*pp) {
      *pp = t->qnext;
      if (s->qtail == t) s->qtail = prev;
    }
  }
  if (t->cancel) {
    cp_cancel_fn fn = t->cancel;
    t->cancel = NULL;
    fn(t->op);
    t->op = NULL;
  }
  if (t->joined) {
    for (int i = 0; i < t->njoined; i++) {
      waitlink **pp = &t->joined[i]->waiters;
      while (*pp) {
        if ((*pp)->waiter == t) {
          waitlink *dead = *pp;
          *pp = dead->next;
          free(dead);
        } else {
          pp = &(*pp)->next;
        }
      }
    }
    free(t->joined);
    t->joined = NULL;
  }
  t->observed = 1; /* a cancellation is not a failure to report */
  fail_task(t, "cancelled", why);
}

void cp_sched_cancel_all(cp_sched *s, const char *why) {
  while (s->live) cancel_task(s->live, why);
  s->qhead = s->qtail = NULL;
}

void cp_sched_free(cp_sched *s) {
  cp_sched_cancel_all(s, "runtime closed");
  /* The table goes with the scheduler; a key that is there already is
   * set without allocating, so this cannot raise. */
  if (lua_checkstack(s->L, 2)) {
    if (lua_rawgetp(s->L, LUA_REGISTRYINDEX, &tasks_key) != LUA_TNIL) {
      lua_pushnil(s->L);
      lua_rawsetp(s->L, LUA_REGISTRYINDEX, &tasks_key);
    }
    lua_pop(s->L, 1);
  }
  cp_lua_unref(s->L, &s->nomem_ref);
  free(s);
}

void cp_sched_run_pending(cp_sched *s) { drain(s); }

int cp_task_failed(const cp_task *t) { return t->state == T_FAILED; }
int cp_task_finished(const cp_task *t) {
  return t->state == T_DONE || t->state == T_FAILED;
}

int cp_task_push_results(cp_task *t, lua_State *to) {
  int before = lua_gettop(to);
  if (t->state == T_FAILED) { /* a look, not handling: observed stays */
    luaL_checkstack(to, 1, "no room for a task's error");
    if (!lua_checkstack(t->co, 1)) cp_lua_nomem(to, "reading a task's error");
    lua_pushvalue(t->co, -1);
    lua_xmove(t->co, to, 1);
  } else if (t->state == T_DONE) {
    push_outcome(t, to, 1);
  }
  return lua_gettop(to) - before;
}

/* ---- Lua side: the task object -------------------------------------------- */

static cp_task *check_task(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, TASK_MT);
}

static int task_gc(lua_State *L) {
  cp_task *t = check_task(L, 1);
  /* Only finished tasks can be collected: live ones are anchored. */
  cp_lua_unref(L, &t->co_ref);
  return 0;
}

static const char *state_name(tstate st) {
  switch (st) {
  case T_NEW:
  case T_READY: return "ready";
  case T_RUNNING: return "running";
  case T_SUSPENDED: return "waiting";
  case T_DONE: return "done";
  case T_FAILED: return "failed";
  }
  return "?";
}

static int task_tostring(lua_State *L) {
  cp_task *t = check_task(L, 1);
  lua_pushfstring(L, "cogpipe.task (%s): %p", state_name(t->state), (void *)t);
  return 1;
}

static int task_status(lua_State *L) {
  lua_pushstring(L, state_name(check_task(L, 1)->state));
  return 1;
}

static int task_cancel(lua_State *L) {
  cp_task *t = check_task(L, 1);
  if (t->state == T_DONE || t->state == T_FAILED) {
    lua_pushboolean(L, 0);
    return 1;
  }
  if (t->state == T_RUNNING) return luaL_error(L, "a task cannot cancel itself");
  cancel_task(t, luaL_optstring(L, 2, "cancelled"));
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg task_methods[] = {
    {"status", task_status}, {"cancel", task_cancel}, {NULL, NULL}};

static void push_task_meta(lua_State *L) {
  if (luaL_newmetatable(L, TASK_MT)) {
    lua_pushcfunction(L, task_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, task_tostring);
    lua_setfield(L, -2, "__tostring");
    luaL_newlib(L, task_methods);
    lua_setfield(L, -2, "__index");
  }
}

/* Creates a task running the function at the top of L's stack, with nargs
 * arguments below... above it; pops them all and pushes the task object.
 * Everything that can raise comes before the task is anchored or counted:
 * a raise leaves garbage, never a half-made live task. */
cp_task *cp_sched_spawn(cp_sched *s, lua_State *L, int nargs) {
  lua_State *co = lua_newthread(L);
  if (!lua_checkstack(co, nargs + 1))
    luaL_error(L, "out of memory while starting a task with %d arguments", nargs);
  cp_task *t = lua_newuserdatauv(L, sizeof *t, 0);
  memset(t, 0, sizeof *t);
  t->sched = s;
  t->co_ref = LUA_NOREF;
  t->self_ref = LUA_NOREF;
  push_task_meta(L);
  lua_setmetatable(L, -2); /* from here task_gc releases co_ref */
  /* stack: fn args... co task */
  lua_rawgetp(L, LUA_REGISTRYINDEX, &tasks_key);
  lua_pushvalue(L, -3);
  lua_pushlightuserdata(L, t);
  lua_rawset(L, -3);
  lua_pop(L, 1);
  lua_pushvalue(L, -2);
  t->co_ref = cp_lua_ref(L);
  t->co = co;
  lua_pushvalue(L, -1);
  t->self_ref = cp_lua_ref(L);
  /* move fn and args onto the coroutine, keep the task object on L */
  lua_insert(L, -(nargs + 3));
  lua_pop(L, 1); /* the thread value; co_ref keeps it */
  lua_xmove(L, co, nargs + 1);
  live_add(s, t);
  enqueue(t, nargs);
  return t;
}

/* ---- Lua side: spawn and wait --------------------------------------------- */

static cp_sched *sched_up(lua_State *L) {
  return lua_touserdata(L, lua_upvalueindex(1));
}

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  cp_sched *s = sched_up(L);
  cp_sched_spawn(s, L, lua_gettop(L) - 1);
  return 1;
}

static void join_cancel(void *op) { (void)op; /* links are dropped by cancel_task */ }

static int l_wait(lua_State *L) {
  int n = lua_gettop(L);
  luaL_argcheck(L, n >= 1, 1, "task expected");
  for (int i = 1; i <= n; i++) check_task(L, i);
  cp_sched *s = sched_up(L);
  int pending = 0;
  for (int i = 1; i <= n; i++) {
    tstate st = check_task(L, i)->state;
    if (st != T_DONE && st != T_FAILED) pending++;
  }
  if (!pending) { /* fast path: no yield */
    cp_task **ts = lua_newuserdatauv(L, (size_t)n * sizeof *ts, 0);
    for (int i = 1; i <= n; i++) ts[i - 1] = check_task(L, i);
    return push_wait_results(ts, n, L);
  }
  cp_task *self = task_of_thread(L);
  if (!self || self != s->current)
    return luaL_error(L, "cp.wait outside a cogpipe task");
  for (int i = 1; i <= n; i++)
    if (check_task(L, i) == self)
      return luaL_error(L, "a task cannot wait for itself");
  /* Everything is allocated before anything is linked, so running out of
   * memory leaves every task as it was. */
  cp_task **ts = cp_malloc((size_t)n * sizeof *ts); /* self->joined owns it */
  waitlink **links = cp_calloc((size_t)pending, sizeof *links);
  int got = 0;
  while (ts && links && got < pending && (links[got] = cp_malloc(sizeof **links)))
    got++;
  if (got < pending) {
    for (int i = 0; i < got; i++) free(links[i]);
    free(links);
    free(ts);
    return cp_lua_nomem(L, "waiting for tasks");
  }
  for (int i = 1; i <= n; i++) ts[i - 1] = check_task(L, i);
  self->joined = ts;
  self->njoined = n;
  self->remaining = pending;
  for (int i = 0, k = 0; i < n; i++) {
    if (ts[i]->state == T_DONE || ts[i]->state == T_FAILED) continue;
    waitlink *w = links[k++]; /* owned by ts[i]'s waiter list */
    w->waiter = self;
    w->next = ts[i]->waiters;
    ts[i]->waiters = w;
  }
  free(links);
  /* The tasks stay reachable from this frame, so none is collected while
   * joined; finish() hands over the results and wakes us. */
  return cp_task_suspend(L, self, join_cancel, NULL);
}

/* Registers spawn and wait into the table at the top of the stack. */
void cp_sched_open(cp_sched *s, lua_State *L) {
  static const luaL_Reg fns[] = {{"spawn", l_spawn}, {"wait", l_wait}, {NULL, NULL}};
  lua_pushlightuserdata(L, s);
  luaL_setfuncs(L, fns, 1);
}
