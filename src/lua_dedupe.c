/*
 * lua_dedupe.c -- the cogpipe.dedupe Lua module: normalisation, the
 * in-memory dedupe set, and the one-pass check report over whole files that
 * `cogpipe check` prints. Converts between Lua and C only; what counts as a
 * duplicate is dedupe.c's business.
 *
 *   dedupe.normalize(s, mode)            -> string
 *       mode: "none" | "trim" | "collapse" | "casefold"
 *   dedupe.new([{mode = "trim"}])        -> set (userdata "cogpipe.dedupe")
 *   set:add(text [, intent [, line]])    -> "new"
 *                                         | "duplicate", first_line
 *                                         | "conflict", first_intent, first_line
 *       line defaults to the number of adds so far (1, 2, ...); texts
 *       added without an intent never conflict.
 *   set:find(text)                        -> first_line, first_intent | nil
 *   set:count(), #set                     -> unique texts
 *   set:close() (also __gc and __close)
 *   dedupe.file(path_or_paths [, opts])   -> report | nil, err{kind, path}
 *       err.kind: "io" when a file cannot be read, "resource" when the
 *       process is out of file descriptors or memory to read it
 *       opts: format ("lines"|"jsonl"|"csv"; default from each extension),
 *             normalize ("trim"), max_bytes (52428800: nothing past it is
 *             read), max_chars, max_problems (1000), max_items (1000:
 *             duplicates and conflicts listed, their texts 2 MiB at most),
 *             memory_bytes (37 MiB: the table of distinct texts, the
 *             candidate sets, the input kept mapped and room for long
 *             texts; about 10 MiB more are not counted; 0: the default)
 *       report: {files, bytes, lines, blank_lines, invalid, utterances,
 *                unique, duplicates, conflicts, parsing_success_rate,
 *                passes (1, or more when the distinct texts did not fit
 *                memory_bytes at once),
 *                problem_count, problems = {...} (as cogpipe.validate),
 *                duplicate_list = {{file, line, first_file, first_line,
 *                text}, ...}, conflict_list = {{file, line, intent,
 *                first_file, first_line, first_intent, text}, ...}}
 * Texts are compared after normalisation, by 64-bit hash and then bytes.
 * dedupe.file runs on the libuv thread pool while the calling task waits.
 */
#include <stdlib.h>
#include <string.h>

#include "dedupe.h"
#include "lua_offload.h"
#include "lua_validate.h"
#include "lutil.h"

#define SET_MT "cogpipe.dedupe"

typedef struct lset {
  cp_dedupe_set *set; /* owned; NULL once closed */
  lua_Integer adds;
} lset;

static cp_norm_mode check_mode(lua_State *L, int idx, const char *def) {
  const char *name = luaL_optstring(L, idx, def);
  cp_norm_mode mode;
  if (cp_norm_mode_parse(name, &mode))
    luaL_argerror(L, idx, lua_pushfstring(L, "unknown normalisation '%s' "
                                             "(none, trim, collapse, casefold)", name));
  return mode;
}

static int l_normalize(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  cp_norm_mode mode = check_mode(L, 2, "trim");
  cp_buf *scratch = cp_lua_newbuf(L);
  const char *p;
  size_t n;
  cp_normalize(mode, s, len, scratch, &p, &n);
  if (!cp_buf_ok(scratch)) return cp_lua_nomem(L, "normalising a text");
  lua_pushlstring(L, p, n);
  return 1;
}

static lset *check_set(lua_State *L, int idx) {
  lset *u = luaL_checkudata(L, idx, SET_MT);
  if (!u->set) luaL_error(L, "dedupe set is closed");
  /* a set that ran out of memory once may have lost a text */
  if (cp_dedupe_set_failed(u->set))
    cp_lua_nomem(L, "using a dedupe set that ran out of memory before");
  return u;
}

static int l_new(lua_State *L) {
  cp_norm_mode mode = CP_NORM_TRIM;
  if (!lua_isnoneornil(L, 1)) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "mode");
    mode = check_mode(L, lua_gettop(L), "trim");
    lua_pop(L, 1);
  }
  /* The userdata exists before the set, so a failed allocation of the
   * userdata leaks nothing. */
  lset *u = lua_newuserdatauv(L, sizeof *u, 0);
  u->set = NULL;
  u->adds = 0;
  luaL_setmetatable(L, SET_MT);
  u->set = cp_dedupe_set_new(mode);
  if (!u->set) return cp_lua_nomem(L, "creating a dedupe set");
  return 1;
}

static int l_add(lua_State *L) {
  lset *u = check_set(L, 1);
  size_t len, ilen = 0;
  const char *text = luaL_checklstring(L, 2, &len);
  const char *intent = luaL_optlstring(L, 3, NULL, &ilen);
  lua_Integer line = luaL_optinteger(L, 4, u->adds + 1);
  luaL_argcheck(L, line >= 0 && line < ((lua_Integer)1 << 40), 4,
                "line out of range");
  luaL_argcheck(L, len <= CP_DEDUPE_MAX_TEXT, 2, "text longer than 4 MiB");
  u->adds++;
  cp_dedupe_hit hit;
  cp_dedupe_result res =
      cp_dedupe_set_add(u->set, text, len, intent, ilen, (uint64_t)line, &hit);
  if (cp_dedupe_set_failed(u->set))
    return cp_lua_nomem(L, "adding to a dedupe set");
  switch (res) {
  case CP_DEDUPE_NEW:
    lua_pushliteral(L, "new");
    return 1;
  case CP_DEDUPE_DUPLICATE:
    lua_pushliteral(L, "duplicate");
    lua_pushinteger(L, (lua_Integer)hit.line);
    return 2;
  case CP_DEDUPE_CONFLICT:
    lua_pushliteral(L, "conflict");
    lua_pushlstring(L, hit.intent, hit.intent_len);
    lua_pushinteger(L, (lua_Integer)hit.line);
    return 3;
  }
  return 0;
}

static int l_find(lua_State *L) {
  lset *u = check_set(L, 1);
  size_t len;
  const char *text = luaL_checklstring(L, 2, &len);
  cp_dedupe_hit hit;
  int found = cp_dedupe_set_find(u->set, text, len, &hit);
  if (cp_dedupe_set_failed(u->set))
    return cp_lua_nomem(L, "looking a text up in a dedupe set");
  if (!found) {
    lua_pushnil(L);
    return 1;
  }
  lua_pushinteger(L, (lua_Integer)hit.line);
  if (hit.intent) lua_pushlstring(L, hit.intent, hit.intent_len);
  else lua_pushnil(L);
  return 2;
}

static int l_count(lua_State *L) {
  lset *u = check_set(L, 1);
  lua_pushinteger(L, (lua_Integer)cp_dedupe_set_count(u->set));
  return 1;
}

static int l_close(lua_State *L) {
  lset *u = luaL_checkudata(L, 1, SET_MT);
  cp_dedupe_set_free(u->set);
  u->set = NULL;
  return 0;
}

static int l_tostring(lua_State *L) {
  lset *u = luaL_checkudata(L, 1, SET_MT);
  if (u->set)
    lua_pushfstring(L, "cogpipe.dedupe (%s, %d unique)",
                    cp_norm_mode_name(cp_dedupe_set_mode(u->set)),
                    (int)cp_dedupe_set_count(u->set));
  else
    lua_pushliteral(L, "cogpipe.dedupe (closed)");
  return 1;
}

/* ---- the file report -------------------------------------------------------- */

static lua_Integer opt_int(lua_State *L, int t, const char *key,
                           lua_Integer def) {
  lua_getfield(L, t, key);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok || v < 0) luaL_error(L, "option '%s' must be a non-negative integer", key);
  }
  lua_pop(L, 1);
  return v;
}

static void push_item(lua_State *L, const cp_check_item *it, int conflict) {
  lua_createtable(L, 0, 7);
  cp_lua_setstr(L, "file", it->file);
  cp_lua_setint(L, "line", (lua_Integer)it->line);
  cp_lua_setstr(L, "first_file", it->first_file);
  cp_lua_setint(L, "first_line", (lua_Integer)it->first_line);
  cp_lua_setstr(L, "text", it->text);
  if (conflict) {
    cp_lua_setstr(L, "intent", it->intent);
    cp_lua_setstr(L, "first_intent", it->first_intent);
  }
}

static void push_check_report(lua_State *L, const cp_check_report *r) {
  lua_createtable(L, 0, 17);
  cp_lua_setint(L, "files", (lua_Integer)r->files);
  cp_lua_setint(L, "bytes", (lua_Integer)r->bytes);
  cp_lua_setint(L, "lines", (lua_Integer)r->lines);
  cp_lua_setint(L, "blank_lines", (lua_Integer)r->blank_lines);
  cp_lua_setint(L, "invalid", (lua_Integer)r->invalid);
  cp_lua_setint(L, "utterances", (lua_Integer)r->utterances);
  cp_lua_setint(L, "unique", (lua_Integer)r->unique);
  cp_lua_setint(L, "duplicates", (lua_Integer)r->duplicates);
  cp_lua_setint(L, "conflicts", (lua_Integer)r->conflicts);
  cp_lua_setnum(L, "parsing_success_rate", r->success_rate);
  cp_lua_setint(L, "passes", (lua_Integer)r->passes);
  cp_lua_setint(L, "problem_count", (lua_Integer)r->problems.total);
  cp_lua_push_problems(L, &r->problems);
  lua_setfield(L, -2, "problems");
  lua_createtable(L, (int)r->n_dups, 0);
  for (size_t i = 0; i < r->n_dups; i++) {
    push_item(L, &r->dups[i], 0);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "duplicate_list");
  lua_createtable(L, (int)r->n_conflicts, 0);
  for (size_t i = 0; i < r->n_conflicts; i++) {
    push_item(L, &r->conflict_items[i], 1);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "conflict_list");
}

/* A check runs on the libuv thread pool while the calling task waits
 * (50 MiB take a tenth of a second; more would hold up other tenants).
 * The op owns everything the pool thread touches. */
typedef struct check_op {
  cp_check_opts o;
  char **paths;
  cp_format *formats;
  int npaths;
  cp_check *c;     /* the result, or NULL when a file could not be read */
  char err[512];
  int failed;      /* index of the file that could not be read, or -1 */
  int resource;    /* it failed for want of descriptors or memory */
  int oom;         /* memory ran out: there is no result */
} check_op;

static void check_work(void *arg) {
  check_op *op = arg;
  /* allocation failures counted on this thread, where the work runs */
  unsigned long before = cp_alloc_failures();
  op->c = cp_check_new(&op->o);
  for (int i = 0; op->c && i < op->npaths; i++) {
    int rc = cp_check_file(op->c, op->paths[i], op->formats[i], op->err,
                           sizeof op->err);
    if (rc) {
      op->failed = i;
      op->resource = rc == -2;
      op->oom = cp_check_failed(op->c) || cp_alloc_failures() != before;
      cp_check_free(op->c);
      op->c = NULL;
      return;
    }
  }
  const cp_check_report *rep = op->c ? cp_check_finish(op->c) : NULL;
  op->oom = !rep || cp_check_failed(op->c) || rep->problems.out_of_memory;
}

static int check_push(lua_State *L, void *arg) {
  check_op *op = arg;
  if (op->oom) return cp_lua_nomem(L, "checking the input");
  if (!op->c) {
    cp_lua_fail(L, op->resource ? "resource" : "io", "%s", op->err);
    if (op->failed >= 0) cp_lua_setstr(L, "path", op->paths[op->failed]);
    return 2;
  }
  push_check_report(L, cp_check_finish(op->c));
  return 1;
}

static void check_release(void *arg) {
  check_op *op = arg;
  cp_check_free(op->c);
  for (int i = 0; i < op->npaths; i++) free(op->paths[i]);
  free(op->paths);
  free(op->formats);
  free(op);
}

static int l_file(lua_State *L) {
  int npaths;
  if (lua_type(L, 1) == LUA_TTABLE) {
    npaths = (int)luaL_len(L, 1);
    for (int i = 1; i <= npaths; i++) {
      if (lua_geti(L, 1, i) != LUA_TSTRING)
        luaL_error(L, "paths[%d] is a %s, not a string", i, luaL_typename(L, -1));
      lua_pop(L, 1);
    }
  } else {
    luaL_checkstring(L, 1);
    npaths = 1;
  }
  cp_check_opts o;
  cp_check_opts_init(&o);
  int have_format = 0;
  cp_format fmt = CP_FMT_LINES;
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    o.limits.max_bytes = (uint64_t)opt_int(L, 2, "max_bytes", CP_DEFAULT_MAX_BYTES);
    o.limits.max_chars = (size_t)opt_int(L, 2, "max_chars", CP_DEFAULT_MAX_CHARS);
    o.max_problems = (size_t)opt_int(L, 2, "max_problems", CP_DEFAULT_MAX_PROBLEMS);
    o.max_items = (size_t)opt_int(L, 2, "max_items", 1000);
    o.memory_bytes = (size_t)opt_int(L, 2, "memory_bytes",
                                     (lua_Integer)CP_CHECK_MEMORY_DEFAULT);
    lua_getfield(L, 2, "normalize");
    o.mode = check_mode(L, lua_gettop(L), "trim");
    lua_pop(L, 1);
    lua_getfield(L, 2, "format");
    if (!lua_isnil(L, -1)) {
      const char *f = lua_tostring(L, -1);
      if (!f || cp_format_parse(f, &fmt))
        luaL_error(L, "option 'format' must be \"lines\", \"jsonl\" or \"csv\"");
      have_format = 1;
    }
    lua_pop(L, 1);
  }
  /* Nothing below raises but a memory error, after the op is freed; from
   * cp_offload_run on the op is handed over whole. */
  check_op *op = cp_calloc(1, sizeof *op);
  if (!op) return cp_lua_nomem(L, "checking the input");
  op->o = o;
  op->failed = -1;
  op->npaths = npaths;
  op->paths = cp_calloc((size_t)npaths + 1, sizeof *op->paths);
  op->formats = cp_calloc((size_t)npaths + 1, sizeof *op->formats);
  int ok = op->paths && op->formats;
  for (int i = 1; ok && i <= npaths; i++) {
    if (lua_type(L, 1) == LUA_TTABLE) lua_geti(L, 1, i); /* strings: checked */
    else lua_pushvalue(L, 1);
    const char *path = lua_tostring(L, -1);
    ok = (op->paths[i - 1] = cp_strdup(path)) != NULL;
    op->formats[i - 1] = have_format ? fmt : cp_format_guess(path);
    lua_pop(L, 1);
  }
  if (!ok) {
    if (!op->paths) op->npaths = 0;
    check_release(op);
    return cp_lua_nomem(L, "checking the input");
  }
  return cp_offload_run(L, op, check_work, check_push, check_release);
}

static const luaL_Reg set_methods[] = {{"add", l_add},     {"find", l_find},
                                       {"count", l_count}, {"close", l_close},
                                       {NULL, NULL}};

static const luaL_Reg funcs[] = {{"normalize", l_normalize},
                                 {"new", l_new},
                                 {"file", l_file},
                                 {NULL, NULL}};

int luaopen_cogpipe_dedupe(lua_State *L) {
  if (luaL_newmetatable(L, SET_MT)) {
    luaL_newlib(L, set_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, l_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, l_count);
    lua_setfield(L, -2, "__len");
    lua_pushcfunction(L, l_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  luaL_newlib(L, funcs);
  return 1;
}
