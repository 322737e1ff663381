/*
 * lua_near.c -- the cogpipe.near module: near-duplicate indexes
 * (minhash.h) as userdata, with intents and ids kept beside the texts.
 * Heavy calls (find_all, a query after many adds) run on the thread pool
 * through lua_offload.h; this file never decides what counts as similar.
 *
 *   local idx = cp.near.new{threshold = 0.65, shingle = 3, words = true}
 *   local item, same_as = idx:add(text, intent, id)
 *   local matches = idx:query(text, k)     -- {{item, score, text, intent, id}}
 *   local ok, match = idx:admit(text, intent, id)
 *   local pairs = idx:find_all{nearest = true}   -- {{a, b, score}}
 *   cp.near.jaccard(a, b), cp.near.form(text)
 */
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "lua_offload.h"
#include "lutil.h"
#include "minhash.h"
#include "modules.h"
#include "nearform.h"
#include "runtime.h"

#define NEAR_MT "cogpipe.near"
#define UV_INTENTS 1 /* uservalue: item -> intent */
#define UV_IDS 2     /* uservalue: item -> id */
/* A query after this many unindexed forms builds them on the thread pool. */
#define OFFLOAD_PENDING 4096

/* The index, shared by the userdata and by work on the thread pool, which
 * may outlive the userdata (a task abandoned mid-search). */
typedef struct near_box {
  cp_minhash *m;
  atomic_int refs;
  atomic_int busy; /* work on the pool is using m */
} near_box;

typedef struct near_ud {
  near_box *box; /* NULL once closed */
} near_ud;

static near_box *box_ref(near_box *b) {
  atomic_fetch_add(&b->refs, 1);
  return b;
}

static void box_unref(near_box *b) {
  if (b && atomic_fetch_sub(&b->refs, 1) == 1) {
    cp_minhash_free(b->m);
    free(b);
  }
}

static near_ud *check_ud(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, NEAR_MT);
}

/* The open, idle index at idx; raises otherwise. */
static near_box *check_index(lua_State *L, int idx) {
  near_ud *u = check_ud(L, idx);
  if (!u->box) luaL_error(L, "near-duplicate index is closed");
  if (atomic_load(&u->box->busy))
    luaL_error(L, "near-duplicate index is busy (a search on it is running)");
  /* an index that ran out of memory once has lost what it was given */
  if (cp_minhash_failed(u->box->m))
    cp_lua_nomem(L, "using a near-duplicate index that ran out of memory before");
  return u->box;
}

/* ---- options ---------------------------------------------------------------
 */

static int opt_int(lua_State *L, int t, const char *k, int def, int lo,
                   int hi) {
  int type = lua_getfield(L, t, k);
  int v = def;
  if (type != LUA_TNIL) {
    int isint;
    lua_Integer x = lua_tointegerx(L, -1, &isint);
    if (!isint || x < lo || x > hi)
      luaL_error(L, "option '%s' must be an integer in %d..%d", k, lo, hi);
    v = (int)x;
  }
  lua_pop(L, 1);
  return v;
}

static const char *const option_names[] = {
    "threshold", "shingle",   "words", "perms",   "bands",
    "rows",      "min_bands", "seed",  "threads", NULL};

/* Reads {threshold=, shingle=, words=, perms=, bands=, rows=, min_bands=,
 * seed=, threads=} at index t (absent: defaults); raises on a bad or
 * unknown option. */
static void read_opts(lua_State *L, int t, cp_minhash_opts *o) {
  cp_minhash_opts_default(o);
  if (lua_isnoneornil(L, t)) goto check;
  luaL_checktype(L, t, LUA_TTABLE);
  lua_pushnil(L);
  while (lua_next(L, t)) {
    lua_pop(L, 1);
    const char *k = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    int known = 0;
    for (int i = 0; k && option_names[i]; i++)
      known |= strcmp(k, option_names[i]) == 0;
    if (!known)
      luaL_error(L, "unknown option '%s'", k ? k : luaL_typename(L, -1));
  }
  if (lua_getfield(L, t, "threshold") != LUA_TNIL) {
    if (!lua_isnumber(L, -1))
      luaL_error(L, "option 'threshold' must be a number");
    o->threshold = lua_tonumber(L, -1);
  }
  lua_pop(L, 1);
  o->shingle = opt_int(L, t, "shingle", o->shingle, 1, 32);
  int type = lua_getfield(L, t, "words");
  if (type != LUA_TNIL) {
    if (type != LUA_TBOOLEAN) luaL_error(L, "option 'words' must be a boolean");
    o->words = lua_toboolean(L, -1);
  }
  lua_pop(L, 1);
  o->perms = opt_int(L, t, "perms", o->perms, 1, 1024);
  o->bands = opt_int(L, t, "bands", 0, 0, 1024);
  o->rows = opt_int(L, t, "rows", 0, 0, 1024);
  o->min_bands = opt_int(L, t, "min_bands", 0, 0, 1024);
  o->threads = opt_int(L, t, "threads", 0, 0, 64);
  if (lua_getfield(L, t, "seed") != LUA_TNIL) {
    int isint;
    lua_Integer s = lua_tointegerx(L, -1, &isint);
    if (!isint) luaL_error(L, "option 'seed' must be an integer");
    o->seed = (uint64_t)s;
  }
  lua_pop(L, 1);
check:;
  const char *bad = cp_minhash_opts_check(o);
  if (bad) luaL_error(L, "%s", bad);
}

/* ---- construction
 * ------------------------------------------------------------ */

static int l_new(lua_State *L) {
  cp_minhash_opts o;
  read_opts(L, 1, &o);
  near_ud *u = lua_newuserdatauv(L, sizeof *u, 2);
  u->box = NULL;
  luaL_setmetatable(L, NEAR_MT);
  lua_newtable(L);
  lua_setiuservalue(L, -2, UV_INTENTS);
  lua_newtable(L);
  lua_setiuservalue(L, -2, UV_IDS);
  /* the box is owned by the userdata from here */
  near_box *b = cp_malloc(sizeof *b);
  cp_minhash *m = b ? cp_minhash_new(&o) : NULL;
  if (!m) {
    free(b);
    return cp_lua_nomem(L, "creating a near-duplicate index");
  }
  b->m = m;
  atomic_init(&b->refs, 1);
  atomic_init(&b->busy, 0);
  u->box = b;
  return 1;
}

static int l_close(lua_State *L) {
  near_ud *u = check_ud(L, 1);
  box_unref(u->box); /* work still running keeps its own reference */
  u->box = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  near_ud *u = check_ud(L, 1);
  if (!u->box)
    lua_pushliteral(L, "cogpipe.near (closed)");
  else
    lua_pushfstring(L, "cogpipe.near (%d texts)",
                    (int)cp_minhash_count(u->box->m));
  return 1;
}

/* ---- items
 * -------------------------------------------------------------------- */

static uint32_t check_item(lua_State *L, int arg, near_box *b) {
  lua_Integer i = luaL_checkinteger(L, arg);
  luaL_argcheck(L, i >= 1 && (size_t)i <= cp_minhash_count(b->m), arg,
                "no such item");
  return (uint32_t)(i - 1);
}

static int l_add(lua_State *L) {
  near_box *b = check_index(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TSTRING);
  uint32_t same;
  uint32_t item = cp_minhash_add(b->m, text, len, &same);
  if (item == CP_MINHASH_NONE)
    return cp_lua_nomem(L, "adding to a near-duplicate index");
  lua_Integer n = (lua_Integer)item + 1;
  if (!lua_isnoneornil(L, 3)) {
    lua_getiuservalue(L, 1, UV_INTENTS);
    lua_pushvalue(L, 3);
    lua_rawseti(L, -2, n);
    lua_pop(L, 1);
  }
  if (!lua_isnoneornil(L, 4)) {
    lua_getiuservalue(L, 1, UV_IDS);
    lua_pushvalue(L, 4);
    lua_rawseti(L, -2, n);
    lua_pop(L, 1);
  }
  lua_pushinteger(L, n);
  if (same == CP_MINHASH_NONE)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)same + 1);
  return 2;
}

static int l_count(lua_State *L) {
  near_ud *u = check_ud(L, 1);
  lua_pushinteger(L, u->box ? (lua_Integer)cp_minhash_count(u->box->m) : 0);
  return 1;
}

static int l_distinct(lua_State *L) {
  near_box *b = check_index(L, 1);
  lua_pushinteger(L, (lua_Integer)cp_minhash_distinct(b->m));
  return 1;
}

static int l_text(lua_State *L) {
  near_box *b = check_index(L, 1);
  uint32_t i = check_item(L, 2, b);
  size_t len;
  const char *t = cp_minhash_text(b->m, i, &len);
  lua_pushlstring(L, t, len);
  return 1;
}

static int l_intent(lua_State *L) {
  near_box *b = check_index(L, 1);
  uint32_t i = check_item(L, 2, b);
  lua_getiuservalue(L, 1, UV_INTENTS);
  lua_rawgeti(L, -1, (lua_Integer)i + 1);
  return 1;
}

static int l_id(lua_State *L) {
  near_box *b = check_index(L, 1);
  uint32_t i = check_item(L, 2, b);
  lua_getiuservalue(L, 1, UV_IDS);
  lua_rawgeti(L, -1, (lua_Integer)i + 1);
  return 1;
}

static int l_options(lua_State *L) {
  near_box *b = check_index(L, 1);
  const cp_minhash_opts *o = cp_minhash_options(b->m);
  lua_createtable(L, 0, 9);
  cp_lua_setnum(L, "threshold", o->threshold);
  cp_lua_setint(L, "shingle", o->shingle);
  lua_pushboolean(L, o->words);
  lua_setfield(L, -2, "words");
  cp_lua_setint(L, "perms", o->perms);
  cp_lua_setint(L, "bands", o->bands);
  cp_lua_setint(L, "rows", o->rows);
  cp_lua_setint(L, "min_bands", o->min_bands);
  cp_lua_setint(L, "seed", (lua_Integer)o->seed);
  cp_lua_setint(L, "threads", o->threads);
  return 1;
}

/* ---- queries
 * ------------------------------------------------------------------- */

/* Pushes {item, score, text, intent, id} for an item of the index at ud. */
static void push_match(lua_State *L, int ud, near_box *b, uint32_t item,
                       double score) {
  size_t len;
  const char *t = cp_minhash_text(b->m, item, &len);
  lua_createtable(L, 0, 5);
  cp_lua_setint(L, "item", (lua_Integer)item + 1);
  cp_lua_setnum(L, "score", score);
  lua_pushlstring(L, t, len);
  lua_setfield(L, -2, "text");
  lua_getiuservalue(L, ud, UV_INTENTS);
  lua_rawgeti(L, -1, (lua_Integer)item + 1);
  lua_setfield(L, -3, "intent");
  lua_pop(L, 1);
  lua_getiuservalue(L, ud, UV_IDS);
  lua_rawgeti(L, -1, (lua_Integer)item + 1);
  lua_setfield(L, -3, "id");
  lua_pop(L, 1);
}

/* A query (or admit) whose pending forms are built on the pool first. */
typedef struct query_op {
  near_box *box;
  lua_State *main; /* for the registry references */
  int ud_ref, text_ref, intent_ref, id_ref;
  size_t k;
  int admit;
} query_op;

/* Runs the query on the loop thread (the index is flushed by then) and
 * pushes its results; the userdata is at the top of L's stack. */
static int do_query(lua_State *L, near_box *b, const char *text, size_t len,
                    size_t k, int admit, int intent_at, int id_at) {
  int ud = lua_gettop(L);
  /* Lua memory: a raise while pushing the matches loses nothing */
  cp_minhash_pair *hits = lua_newuserdatauv(L, (k ? k : 1) * sizeof *hits, 0);
  int hits_at = lua_gettop(L);
  size_t n = cp_minhash_query(b->m, text, len, k, hits);
  if (cp_minhash_failed(b->m))
    return cp_lua_nomem(L, "searching a near-duplicate index");
  if (admit) {
    if (n > 0) {
      lua_pushboolean(L, 0);
      push_match(L, ud, b, hits[0].b, hits[0].score);
    } else {
      uint32_t item = cp_minhash_add(b->m, text, len, NULL);
      if (item == CP_MINHASH_NONE)
        return cp_lua_nomem(L, "adding to a near-duplicate index");
      lua_Integer at = (lua_Integer)item + 1;
      if (intent_at) {
        lua_getiuservalue(L, ud, UV_INTENTS);
        lua_pushvalue(L, intent_at);
        lua_rawseti(L, -2, at);
        lua_pop(L, 1);
      }
      if (id_at) {
        lua_getiuservalue(L, ud, UV_IDS);
        lua_pushvalue(L, id_at);
        lua_rawseti(L, -2, at);
        lua_pop(L, 1);
      }
      lua_pushboolean(L, 1);
      lua_pushinteger(L, at);
    }
    lua_remove(L, hits_at);
    lua_remove(L, ud);
    return 2;
  }
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    push_match(L, ud, b, hits[i].b, hits[i].score);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_remove(L, hits_at);
  lua_remove(L, ud);
  return 1;
}

static void query_work(void *p) {
  query_op *op = p;
  cp_minhash_flush(op->box->m);
}

static int query_push(lua_State *L, void *p) {
  query_op *op = p;
  atomic_store(&op->box->busy, 0);
  int base = lua_gettop(L);
  lua_rawgeti(L, LUA_REGISTRYINDEX, op->text_ref);
  size_t len;
  const char *text = lua_tolstring(L, -1, &len);
  int intent_at = 0, id_at = 0;
  if (op->intent_ref > 0) { /* a real reference, not nil */
    lua_rawgeti(L, LUA_REGISTRYINDEX, op->intent_ref);
    intent_at = lua_gettop(L);
  }
  if (op->id_ref > 0) {
    lua_rawgeti(L, LUA_REGISTRYINDEX, op->id_ref);
    id_at = lua_gettop(L);
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, op->ud_ref);
  int n = do_query(L, op->box, text, len, op->k, op->admit, intent_at, id_at);
  /* leave only the results */
  int junk = lua_gettop(L) - n - base;
  for (int i = 0; i < junk; i++)
    lua_remove(L, base + 1);
  return n;
}

static void query_free(void *p) {
  query_op *op = p;
  atomic_store(&op->box->busy, 0);
  cp_lua_unref(op->main, &op->ud_ref);
  cp_lua_unref(op->main, &op->text_ref);
  cp_lua_unref(op->main, &op->intent_ref);
  cp_lua_unref(op->main, &op->id_ref);
  box_unref(op->box);
  free(op);
}

/* In protected mode: the references a query_op holds (its arguments: the
 * op, then the userdata, text, intent and id), so that a raise on the way
 * leaves the op with only those made, which query_free releases. */
static int make_refs(lua_State *L) {
  query_op *op = lua_touserdata(L, 1);
  lua_pushvalue(L, 2);
  op->ud_ref = cp_lua_ref(L);
  lua_pushvalue(L, 3);
  op->text_ref = cp_lua_ref(L);
  if (op->admit) {
    lua_pushvalue(L, 4);
    op->intent_ref = cp_lua_ref(L);
    lua_pushvalue(L, 5);
    op->id_ref = cp_lua_ref(L);
  }
  return 0;
}

static int query_or_admit(lua_State *L, int admit) {
  near_box *b = check_index(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  size_t k = 1;
  if (admit) {
    if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TSTRING);
  } else {
    lua_Integer kk = luaL_optinteger(L, 3, 1);
    luaL_argcheck(L, kk >= 0 && kk <= 100000, 3, "k must be 0..100000");
    k = (size_t)kk;
  }
  lua_settop(L, 4);
  if (cp_minhash_pending(b->m) < OFFLOAD_PENDING) {
    lua_pushvalue(L, 1);
    return do_query(L, b, text, len, k, admit,
                    admit && !lua_isnil(L, 3) ? 3 : 0,
                    admit && !lua_isnil(L, 4) ? 4 : 0);
  }
  /* owned by the offload from here: query_free releases everything */
  query_op *op = cp_malloc(sizeof *op);
  if (!op) return cp_lua_nomem(L, "searching a near-duplicate index");
  op->main = cp_runtime_main_lua(cp_runtime_from_lua(L));
  op->box = box_ref(b);
  op->k = k;
  op->admit = admit;
  op->ud_ref = op->text_ref = op->intent_ref = op->id_ref = LUA_NOREF;
  lua_pushcfunction(L, make_refs);
  lua_pushlightuserdata(L, op);
  for (int i = 1; i <= 4; i++) lua_pushvalue(L, i);
  if (lua_pcall(L, 5, 0, 0) != LUA_OK) {
    query_free(op);
    return lua_error(L);
  }
  atomic_store(&b->busy, 1);
  return cp_offload_run(L, op, query_work, query_push, query_free);
}

static int l_query(lua_State *L) { return query_or_admit(L, 0); }
static int l_admit(lua_State *L) { return query_or_admit(L, 1); }

/* ---- all pairs
 * ------------------------------------------------------------------- */

typedef struct find_op {
  near_box *box;
  int nearest;
  cp_minhash_pair *pairs;
  size_t n;
} find_op;

static void find_work(void *p) {
  find_op *op = p;
  cp_minhash_find_all(op->box->m, op->nearest, &op->pairs, &op->n);
}

static int find_push(lua_State *L, void *p) {
  find_op *op = p;
  atomic_store(&op->box->busy, 0);
  if (cp_minhash_failed(op->box->m))
    return cp_lua_nomem(L, "finding near-duplicates");
  lua_createtable(L, op->n > INT32_MAX ? INT32_MAX : (int)op->n, 0);
  for (size_t i = 0; i < op->n; i++) {
    lua_createtable(L, 0, 3);
    cp_lua_setint(L, "a", (lua_Integer)op->pairs[i].a + 1);
    cp_lua_setint(L, "b", (lua_Integer)op->pairs[i].b + 1);
    cp_lua_setnum(L, "score", op->pairs[i].score);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

static void find_free(void *p) {
  find_op *op = p;
  atomic_store(&op->box->busy, 0);
  box_unref(op->box);
  free(op->pairs);
  free(op);
}

static int l_find_all(lua_State *L) {
  near_box *b = check_index(L, 1);
  int nearest = 0;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_getfield(L, 2, "nearest");
    nearest = lua_toboolean(L, -1);
    lua_pop(L, 1);
  }
  /* owned by the offload from here */
  find_op *op = cp_calloc(1, sizeof *op);
  if (!op) return cp_lua_nomem(L, "finding near-duplicates");
  op->box = box_ref(b);
  op->nearest = nearest;
  atomic_store(&b->busy, 1);
  return cp_offload_run(L, op, find_work, find_push, find_free);
}

/* ---- module functions
 * --------------------------------------------------------------- */

/* cp.near.jaccard(a, b [, {shingle=, words=, seed=}]): the Jaccard
 * similarity of the two texts' feature sets, the number near-duplicate
 * scores are. */
static int l_jaccard(lua_State *L) {
  size_t al, bl;
  const char *a = luaL_checklstring(L, 1, &al);
  const char *b = luaL_checklstring(L, 2, &bl);
  cp_minhash_opts o;
  read_opts(L, 3, &o);
  o.threads = 1;
  cp_minhash *m = cp_minhash_new(&o);
  double j = m ? cp_minhash_jaccard(m, a, al, b, bl) : -1.0;
  cp_minhash_free(m);
  if (j < 0) return cp_lua_nomem(L, "comparing two texts");
  lua_pushnumber(L, j);
  return 1;
}

/* cp.near.form(text): the near form of a text (nearform.h), what its
 * shingles and words are taken from: for seeing why two texts match. */
static int push_buf(lua_State *L) {
  const cp_buf *b = lua_touserdata(L, 1);
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

static int l_form(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  luaL_checkstack(L, 3, NULL);
  cp_buf scratch = CP_BUF_INIT, out = CP_BUF_INIT;
  cp_nearform(s, len, &scratch, &out);
  /* the copy into Lua may raise: protected, so out is freed either way */
  lua_pushcfunction(L, push_buf);
  lua_pushlightuserdata(L, &out);
  int status = lua_pcall(L, 1, 1, 0);
  cp_buf_free(&scratch);
  cp_buf_free(&out);
  if (status != LUA_OK) return lua_error(L);
  return 1;
}

static const luaL_Reg index_methods[] = {
    {"add", l_add},           {"query", l_query},   {"admit", l_admit},
    {"find_all", l_find_all}, {"count", l_count},   {"distinct", l_distinct},
    {"text", l_text},         {"intent", l_intent}, {"id", l_id},
    {"options", l_options},   {"close", l_close},   {NULL, NULL}};

static const luaL_Reg index_meta[] = {{"__gc", l_close},
                                      {"__close", l_close},
                                      {"__len", l_count},
                                      {"__tostring", l_tostring},
                                      {NULL, NULL}};

static const luaL_Reg near_fns[] = {
    {"new", l_new}, {"jaccard", l_jaccard}, {"form", l_form}, {NULL, NULL}};

int luaopen_cogpipe_near(lua_State *L) {
  if (luaL_newmetatable(L, NEAR_MT)) {
    luaL_setfuncs(L, index_meta, 0);
    luaL_newlib(L, index_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, near_fns);
  lua_pushnumber(L, CP_MINHASH_DEFAULT_THRESHOLD);
  lua_setfield(L, -2, "DEFAULT_THRESHOLD");
  return 1;
}
