/*
 * lua_semantic.c -- the cogpipe.semantic module: vector sets as userdata
 * ("cogpipe.vectors"), vectors files and the embedding cache (embedio.h),
 * and cosine search and the in-run filter (similarity.h), which run on the
 * thread pool through lua_offload.h. Fetching embeddings is the Lua
 * provider's job (lua/cogpipe/embeddings.lua); this file never does I/O on
 * the network.
 *
 *   local V = cp.semantic.vectors()           -- or cp.semantic.load(path)
 *   V:add(text, {0.1, ...}, intent)
 *   local verdicts = cp.semantic.filter{new = V, existing = E}  -- 0.85
 *   local hits = cp.semantic.search{query = V, corpus = E, k = 3}
 *
 * Semantic dedupe of records (the pipeline step, `cogpipe check`) is the
 * Lua module cogpipe.semdup, built on this one.
 */
#include <stdlib.h>
#include <string.h>
#include <xxhash.h>

#include "buf.h"
#include "embedio.h"
#include "lua_offload.h"
#include "lutil.h"
#include "modules.h"
#include "parallel.h"
#include "similarity.h"

#define VECTORS_MT "cogpipe.vectors"
#define DEFAULT_THRESHOLD 0.85
#define ERRLEN 512

typedef struct vec_ud {
  cp_vecset *set; /* one reference; NULL once closed */
} vec_ud;

static vec_ud *check_ud(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, VECTORS_MT);
}

static cp_vecset *check_set(lua_State *L, int idx) {
  vec_ud *u = check_ud(L, idx);
  if (!u->set) luaL_error(L, "vector set is closed");
  return u->set;
}

/* The set at idx, which is about to change: raises while a search reads it. */
static cp_vecset *check_writable(lua_State *L, int idx) {
  cp_vecset *s = check_set(L, idx);
  if (cp_vecset_busy(s))
    luaL_error(L, "vector set is busy (a search reading it is running)");
  return s;
}

/* Pushes a userdata that takes over the caller's reference to s. */
static void push_set(lua_State *L, cp_vecset *s) {
  vec_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->set = s;
  luaL_setmetatable(L, VECTORS_MT);
}

static size_t check_row(lua_State *L, int arg, const cp_vecset *s) {
  lua_Integer i = luaL_checkinteger(L, arg);
  luaL_argcheck(L, i >= 1 && (size_t)i <= cp_vecset_count(s), arg,
                "no such row");
  return (size_t)(i - 1);
}

/* ---- construction
 * --------------------------------------------------------------- */

static int l_vectors(lua_State *L) {
  lua_Integer dim = luaL_optinteger(L, 1, 0);
  luaL_argcheck(L, dim >= 0 && dim <= 65536, 1, "dimension must be 0..65536");
  vec_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->set = NULL;
  luaL_setmetatable(L, VECTORS_MT);
  u->set = cp_vecset_new((size_t)dim);
  if (!u->set) return cp_lua_nomem(L, "creating a vector set");
  return 1;
}

static int l_close(lua_State *L) {
  vec_ud *u = check_ud(L, 1);
  cp_vecset_unref(u->set); /* a running search holds its own reference */
  u->set = NULL;
  return 0;
}

static int l_len(lua_State *L) {
  vec_ud *u = check_ud(L, 1);
  lua_pushinteger(L, u->set ? (lua_Integer)cp_vecset_count(u->set) : 0);
  return 1;
}

static int l_tostring(lua_State *L) {
  vec_ud *u = check_ud(L, 1);
  if (!u->set)
    lua_pushliteral(L, "cogpipe.vectors (closed)");
  else
    lua_pushfstring(L, "cogpipe.vectors (%d x %d)",
                    (int)cp_vecset_count(u->set), (int)cp_vecset_dim(u->set));
  return 1;
}

static int l_dim(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)cp_vecset_dim(check_set(L, 1)));
  return 1;
}

static int l_text(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  size_t len, i = check_row(L, 2, s);
  const char *t = cp_vecset_text(s, i, &len);
  lua_pushlstring(L, t, len);
  return 1;
}

static int l_intent(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  size_t len, i = check_row(L, 2, s);
  const char *t = cp_vecset_intent(s, i, &len);
  if (t)
    lua_pushlstring(L, t, len);
  else
    lua_pushnil(L);
  return 1;
}

static int l_vector(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  size_t i = check_row(L, 2, s), dim = cp_vecset_dim(s);
  const float *row = cp_vecset_row(s, i);
  lua_createtable(L, (int)dim, 0);
  for (size_t k = 0; k < dim; k++) {
    lua_pushnumber(L, (lua_Number)row[k]);
    lua_rawseti(L, -2, (lua_Integer)k + 1);
  }
  return 1;
}

static int l_find(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  size_t len;
  const char *t = luaL_checklstring(L, 2, &len);
  long r = cp_vecset_find(s, t, len);
  if (r < 0)
    lua_pushnil(L);
  else
    lua_pushinteger(L, (lua_Integer)r + 1);
  return 1;
}

/* V:add(text, vector [, intent]) -> row, or nil, err when the vector has
 * no direction or the wrong length. */
static int l_add(lua_State *L) {
  cp_vecset *s = check_writable(L, 1);
  size_t tl, il = 0;
  const char *text = luaL_checklstring(L, 2, &tl);
  luaL_checktype(L, 3, LUA_TTABLE);
  const char *intent = luaL_optlstring(L, 4, NULL, &il);
  lua_Integer n = luaL_len(L, 3);
  luaL_argcheck(L, n >= 1 && n <= 65536, 3,
                "vector must have 1..65536 numbers");
  /* read the numbers (which may raise) before C memory is taken */
  double *v = lua_newuserdatauv(L, (size_t)n * sizeof *v, 0);
  for (lua_Integer k = 1; k <= n; k++) {
    lua_rawgeti(L, 3, k);
    int ok;
    v[k - 1] = lua_tonumberx(L, -1, &ok);
    if (!ok) luaL_argerror(L, 3, "vector must hold only numbers");
    lua_pop(L, 1);
  }
  const char *why;
  long r = cp_vecset_add_double(s, v, (size_t)n, text, tl, intent, il, &why);
  if (r < 0) {
    if (strcmp(why, "memory") == 0) return cp_lua_nomem(L, "adding a vector");
    if (strcmp(why, "dimension") == 0)
      return cp_lua_fail(L, "vectors", "vector has %d values, expected %d",
                         (int)n, (int)cp_vecset_dim(s));
    return cp_lua_fail(L, "vectors", "vector for \"%s\" is %s", text, why);
  }
  lua_pushinteger(L, (lua_Integer)r + 1);
  return 1;
}

/* Reads the strings of the array at idx into pointer and length arrays
 * held by two userdata it pushes (the strings stay owned by Lua, anchored
 * by the array). Raises on a non-string or for want of memory. */
static size_t read_strings(lua_State *L, int idx, const char ***texts,
                           size_t **lens) {
  luaL_checktype(L, idx, LUA_TTABLE);
  lua_Integer n = luaL_len(L, idx);
  for (lua_Integer k = 1; k <= n; k++) {
    if (lua_rawgeti(L, idx, k) != LUA_TSTRING)
      luaL_error(L, "texts[%d] is not a string", (int)k);
    lua_pop(L, 1);
  }
  *texts = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof **texts, 0);
  *lens = lua_newuserdatauv(L, ((size_t)n + 1) * sizeof **lens, 0);
  for (lua_Integer k = 1; k <= n; k++) {
    lua_rawgeti(L, idx, k);
    (*texts)[k - 1] = lua_tolstring(L, -1, &(*lens)[k - 1]);
    lua_pop(L, 1);
  }
  return (size_t)n;
}

/* V:add_response(body, texts) -> number of rows added, or nil, err: the
 * vectors of an OpenAI-compatible /v1/embeddings answer to `texts`. */
static int l_add_response(lua_State *L) {
  cp_vecset *s = check_writable(L, 1);
  size_t blen;
  const char *body = luaL_checklstring(L, 2, &blen);
  const char **texts;
  size_t *lens;
  size_t n = read_strings(L, 3, &texts, &lens);
  char err[ERRLEN];
  unsigned long before = cp_alloc_failures();
  int rc =
      cp_embedio_add_response(s, body, blen, texts, lens, n, err, sizeof err);
  if (rc != 0 && cp_alloc_failures() != before)
    return cp_lua_nomem(L, "reading an embeddings answer");
  if (rc != 0) return cp_lua_fail(L, "embeddings", "%s", err);
  lua_pushinteger(L, (lua_Integer)n);
  return 1;
}

/* V:missing(texts) -> the texts (distinct, in order) V has no row for. */
static int l_missing(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  lua_newtable(L); /* result */
  lua_newtable(L); /* seen */
  lua_Integer out = 0;
  for (lua_Integer k = 1; k <= n; k++) {
    if (lua_rawgeti(L, 2, k) != LUA_TSTRING)
      return luaL_error(L, "texts[%d] is not a string", (int)k);
    size_t len;
    const char *t = lua_tolstring(L, -1, &len);
    lua_pushvalue(L, -1);
    if (cp_vecset_find(s, t, len) < 0 && lua_rawget(L, -3) == LUA_TNIL) {
      lua_pop(L, 1);
      lua_pushvalue(L, -1);
      lua_pushboolean(L, 1);
      lua_rawset(L, -4);
      lua_rawseti(L, -3, ++out);
    } else {
      lua_pop(L, 2);
    }
  }
  lua_pop(L, 1);
  return 1;
}

/* V:select(texts [, intents]) -> a new set with V's row for each text, in
 * order (intents replace the rows' own), or nil, err naming a text V lacks. */
static int l_select(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int has_intents = !lua_isnoneornil(L, 3);
  if (has_intents) luaL_checktype(L, 3, LUA_TTABLE);
  lua_Integer n = luaL_len(L, 2);
  for (lua_Integer k = 1; k <= n; k++) {
    if (lua_rawgeti(L, 2, k) != LUA_TSTRING)
      return luaL_error(L, "texts[%d] is not a string", (int)k);
    size_t len;
    const char *t = lua_tolstring(L, -1, &len);
    if (cp_vecset_find(s, t, len) < 0) {
      cp_lua_fail(L, "missing", "no vector for \"%s\"", t);
      lua_pushvalue(L, -3);
      lua_setfield(L, -2, "text");
      return 2;
    }
    lua_pop(L, 1);
    if (has_intents) {
      int type = lua_rawgeti(L, 3, k);
      if (type != LUA_TNIL && type != LUA_TSTRING)
        return luaL_error(L, "intents[%d] is not a string", (int)k);
      lua_pop(L, 1);
    }
  }
  vec_ud *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->set = NULL;
  luaL_setmetatable(L, VECTORS_MT);
  u->set = cp_vecset_new(cp_vecset_dim(s));
  if (!u->set) return cp_lua_nomem(L, "selecting vectors");
  for (lua_Integer k = 1; k <= n; k++) {
    lua_rawgeti(L, 2, k);
    size_t len, il = 0;
    const char *t = lua_tolstring(L, -1, &len);
    const char *intent = NULL;
    if (has_intents && lua_rawgeti(L, 3, k) == LUA_TSTRING)
      intent = lua_tolstring(L, -1, &il);
    if (cp_vecset_add_from(u->set, s, (size_t)cp_vecset_find(s, t, len), intent,
                           il) == -2)
      return cp_lua_nomem(L, "selecting vectors");
    lua_pop(L, has_intents ? 2 : 1);
  }
  return 1;
}

/* ---- files: on the thread pool
 * -------------------------------------------------- */

typedef struct file_op {
  char *path;
  cp_vecset *set; /* load: the result; save: held while writing */
  int rc;
  int oom; /* the work ran out of memory (counted on its own thread) */
  char err[ERRLEN];
} file_op;

static void load_work(void *p) {
  file_op *op = p;
  unsigned long before = cp_alloc_failures();
  op->set = cp_embedio_read(op->path, op->err, sizeof op->err);
  op->oom = !op->set && cp_alloc_failures() != before;
}

static int load_push(lua_State *L, void *p) {
  file_op *op = p;
  if (op->oom) return cp_lua_nomem(L, "loading vectors");
  if (!op->set) {
    cp_lua_fail(L, "vectors", "%s", op->err);
    cp_lua_setstr(L, "path", op->path);
    return 2;
  }
  push_set(L, op->set);
  op->set = NULL; /* the userdata has it */
  return 1;
}

static void load_free(void *p) {
  file_op *op = p;
  cp_vecset_unref(op->set);
  free(op->path);
  free(op);
}

/* cp.semantic.load(path) -> vectors, or nil, err. */
static int l_load(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  /* owned by the offload from here */
  file_op *op = cp_calloc(1, sizeof *op);
  if (op) op->path = cp_strdup(path);
  if (!op || !op->path) {
    free(op);
    return cp_lua_nomem(L, "loading vectors");
  }
  return cp_offload_run(L, op, load_work, load_push, load_free);
}

static void save_work(void *p) {
  file_op *op = p;
  unsigned long before = cp_alloc_failures();
  op->rc = cp_embedio_write(op->set, op->path, op->err, sizeof op->err);
  op->oom = op->rc != 0 && cp_alloc_failures() != before;
}

static int save_push(lua_State *L, void *p) {
  file_op *op = p;
  if (op->oom) return cp_lua_nomem(L, "saving vectors");
  if (op->rc != 0) {
    cp_lua_fail(L, "io", "%s", op->err);
    cp_lua_setstr(L, "path", op->path);
    return 2;
  }
  lua_pushboolean(L, 1);
  return 1;
}

static void save_free(void *p) {
  file_op *op = p;
  if (op->set) cp_vecset_release(op->set);
  free(op->path);
  free(op);
}

/* V:save(path) -> true, or nil, err: the binary format, written atomically. */
static int l_save(lua_State *L) {
  cp_vecset *s = check_set(L, 1);
  const char *path = luaL_checkstring(L, 2);
  luaL_argcheck(L, cp_vecset_dim(s) > 0, 1,
                "an empty set has no dimension to save");
  file_op *op = cp_calloc(1, sizeof *op);
  if (op) op->path = cp_strdup(path);
  if (!op || !op->path) {
    free(op);
    return cp_lua_nomem(L, "saving vectors");
  }
  op->set = cp_vecset_hold(s);
  return cp_offload_run(L, op, save_work, save_push, save_free);
}

/* ---- search and filter: on the thread pool
 * ------------------------------------------ */

typedef struct sim_op {
  cp_vecset *a,
      *b; /* search: query, corpus; filter: fresh, existing (or NULL) */
  size_t k;
  double threshold;
  int threads;
  int rc; /* of the work: -1 when it ran out of memory */
  cp_sim_hit *hits;
  cp_sim_verdict *verdicts;
} sim_op;

static void sim_free(void *p) {
  sim_op *op = p;
  if (op->a) cp_vecset_release(op->a);
  if (op->b) cp_vecset_release(op->b);
  free(op->hits);
  free(op->verdicts);
  free(op);
}

/* The set in field k of the table at t; NULL when absent and optional. */
static cp_vecset *field_set(lua_State *L, int t, const char *k, int optional) {
  int type = lua_getfield(L, t, k);
  cp_vecset *s = NULL;
  if (type == LUA_TNIL && optional) {
    lua_pop(L, 1);
    return NULL;
  }
  vec_ud *u = luaL_testudata(L, -1, VECTORS_MT);
  if (!u) luaL_error(L, "'%s' must be a vector set (cogpipe.vectors)", k);
  if (!u->set) luaL_error(L, "'%s' is a closed vector set", k);
  s = u->set;
  lua_pop(L, 1);
  return s;
}

static int field_threads(lua_State *L, int t) {
  lua_getfield(L, t, "threads");
  lua_Integer n = 0;
  if (!lua_isnil(L, -1)) {
    int ok;
    n = lua_tointegerx(L, -1, &ok);
    if (!ok || n < 0 || n > 64) luaL_error(L, "'threads' must be 0..64");
  }
  lua_pop(L, 1);
  return n ? (int)n : cp_parallel_threads();
}

static void search_work(void *p) {
  sim_op *op = p;
  op->rc = cp_sim_topk(op->a, op->b, op->k, op->hits, op->threads);
}

static int search_push(lua_State *L, void *p) {
  sim_op *op = p;
  if (op->rc) return cp_lua_nomem(L, "searching vectors");
  size_t n = cp_vecset_count(op->a);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    lua_createtable(L, (int)op->k, 0);
    lua_Integer got = 0;
    for (size_t x = 0; x < op->k; x++) {
      cp_sim_hit h = op->hits[i * op->k + x];
      if (h.row < 0) break;
      lua_createtable(L, 0, 2);
      cp_lua_setint(L, "row", (lua_Integer)h.row + 1);
      cp_lua_setnum(L, "score", (lua_Number)h.score);
      lua_rawseti(L, -2, ++got);
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* cp.semantic.search{query = V, corpus = C, k = 1 [, threads = n]} -> for
 * each row of V, its k nearest rows of C: {{row =, score =}, ...}, best
 * first. */
static int l_search(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  cp_vecset *q = field_set(L, 1, "query", 0);
  cp_vecset *c = field_set(L, 1, "corpus", 0);
  lua_getfield(L, 1, "k");
  lua_Integer k = luaL_optinteger(L, -1, 1);
  lua_pop(L, 1);
  luaL_argcheck(L, k >= 1 && k <= 1000, 1, "'k' must be 1..1000");
  int threads = field_threads(L, 1);
  if (cp_vecset_count(q) && cp_vecset_count(c) &&
      cp_vecset_dim(q) != cp_vecset_dim(c))
    luaL_error(L, "query vectors have %d dimensions, corpus vectors %d",
               (int)cp_vecset_dim(q), (int)cp_vecset_dim(c));
  /* owned by the offload from here */
  sim_op *op = cp_calloc(1, sizeof *op);
  if (op) op->hits = cp_reallocarray(NULL, cp_vecset_count(q) * (size_t)k + 1,
                                     sizeof *op->hits);
  if (!op || !op->hits) {
    free(op);
    return cp_lua_nomem(L, "searching vectors");
  }
  op->a = cp_vecset_hold(q);
  op->b = cp_vecset_hold(c);
  op->k = (size_t)k;
  op->threads = threads;
  return cp_offload_run(L, op, search_work, search_push, sim_free);
}

static void filter_work(void *p) {
  sim_op *op = p;
  op->rc = cp_sim_filter(op->b, op->a, op->threshold, op->verdicts, op->threads);
}

static int filter_push(lua_State *L, void *p) {
  sim_op *op = p;
  if (op->rc) return cp_lua_nomem(L, "filtering vectors");
  size_t n = cp_vecset_count(op->a);
  lua_createtable(L, (int)n, 0);
  for (size_t i = 0; i < n; i++) {
    cp_sim_verdict v = op->verdicts[i];
    lua_createtable(L, 0, 6);
    cp_lua_setbool(L, "accepted", v.accepted);
    if (v.row >= 0) {
      const cp_vecset *from = v.from_new ? op->a : op->b;
      size_t len, il;
      cp_lua_setint(L, "row", (lua_Integer)v.row + 1);
      cp_lua_setnum(L, "score", (lua_Number)v.score);
      cp_lua_setstr(L, "from", v.from_new ? "new" : "existing");
      const char *t = cp_vecset_text(from, (size_t)v.row, &len);
      lua_pushlstring(L, t, len);
      lua_setfield(L, -2, "text");
      const char *in = cp_vecset_intent(from, (size_t)v.row, &il);
      if (in) {
        lua_pushlstring(L, in, il);
        lua_setfield(L, -2, "intent");
      }
    }
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  return 1;
}

/* cp.semantic.filter{new = V, existing = E, threshold = 0.85 [, threads]}
 * -> one verdict per row of V, in order: {accepted =, row =, score =,
 * from = "existing" | "new", text =, intent =}, naming the nearest row of
 * E or of the rows of V accepted before it (absent when there is none). */
static int l_filter(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  cp_vecset *fresh = field_set(L, 1, "new", 0);
  cp_vecset *existing = field_set(L, 1, "existing", 1);
  lua_getfield(L, 1, "threshold");
  lua_Number t = luaL_optnumber(L, -1, DEFAULT_THRESHOLD);
  lua_pop(L, 1);
  luaL_argcheck(L, t > -1.0 && t <= 1.0, 1, "'threshold' must be in (-1, 1]");
  int threads = field_threads(L, 1);
  if (existing && cp_vecset_count(existing) && cp_vecset_count(fresh) &&
      cp_vecset_dim(existing) != cp_vecset_dim(fresh))
    luaL_error(L, "new vectors have %d dimensions, existing vectors %d",
               (int)cp_vecset_dim(fresh), (int)cp_vecset_dim(existing));
  /* owned by the offload from here */
  sim_op *op = cp_calloc(1, sizeof *op);
  if (op) op->verdicts = cp_reallocarray(NULL, cp_vecset_count(fresh) + 1,
                                         sizeof *op->verdicts);
  if (!op || !op->verdicts) {
    free(op);
    return cp_lua_nomem(L, "filtering vectors");
  }
  op->a = cp_vecset_hold(fresh);
  op->b = existing ? cp_vecset_hold(existing) : NULL;
  op->threshold = t;
  op->threads = threads;
  return cp_offload_run(L, op, filter_work, filter_push, sim_free);
}

/* ---- small helpers
 * ---------------------------------------------------------------------- */

static int l_backend(lua_State *L) {
  lua_pushstring(L, cp_sim_backend());
  return 1;
}

/* cp.semantic.hash(s): 16 hex digits of XXH3-64, for cache file names. */
static int l_hash(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[17];
  snprintf(hex, sizeof hex, "%016llx", (unsigned long long)XXH3_64bits(s, len));
  lua_pushstring(L, hex);
  return 1;
}

static const luaL_Reg set_methods[] = {
    {"add", l_add},       {"add_response", l_add_response},
    {"find", l_find},     {"missing", l_missing},
    {"select", l_select}, {"save", l_save},
    {"dim", l_dim},       {"text", l_text},
    {"intent", l_intent}, {"vector", l_vector},
    {"count", l_len},     {"close", l_close},
    {NULL, NULL}};

static const luaL_Reg set_meta[] = {{"__gc", l_close},
                                    {"__close", l_close},
                                    {"__len", l_len},
                                    {"__tostring", l_tostring},
                                    {NULL, NULL}};

static const luaL_Reg semantic_fns[] = {{"vectors", l_vectors},
                                        {"load", l_load},
                                        {"search", l_search},
                                        {"filter", l_filter},
                                        {"backend", l_backend},
                                        {"hash", l_hash},
                                        {NULL, NULL}};

int luaopen_cogpipe_semantic(lua_State *L) {
  if (luaL_newmetatable(L, VECTORS_MT)) {
    luaL_setfuncs(L, set_meta, 0);
    luaL_newlib(L, set_methods);
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, semantic_fns);
  lua_pushnumber(L, DEFAULT_THRESHOLD);
  lua_setfield(L, -2, "DEFAULT_THRESHOLD");
  return 1;
}
