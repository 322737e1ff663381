/*
 * lua_json.c -- the cogpipe.json Lua module: converts between Lua values and
 * the JSON codec of json.c. Hides the traps of plain Lua JSON libraries:
 * integers stay integers, json.array() marks a table that must encode as an
 * array (`[]` when empty), object keys come out sorted so output is stable,
 * and what JSON cannot carry (NaN, functions, sparse or mixed tables,
 * invalid UTF-8) is an error naming where it is, never a silent change.
 */
#include "lua_json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"
#include "lutil.h"
#include "modules.h"

#define ARRAY_MT "cogpipe.json.array"
#define MAX_DEPTH 512

/* The shared null: a light userdata no other value equals. */
static void push_null(lua_State *L) { lua_pushlightuserdata(L, NULL); }

static int is_null(lua_State *L, int idx) {
  return lua_islightuserdata(L, idx) && lua_touserdata(L, idx) == NULL;
}

static void push_array_mt(lua_State *L) {
  if (luaL_newmetatable(L, ARRAY_MT)) {
    lua_pushliteral(L, "array");
    lua_setfield(L, -2, "__jsontype");
  }
}

/* ---- decode --------------------------------------------------------------- */

static void push_tree(lua_State *L, const cp_json *v) {
  luaL_checkstack(L, 4, "JSON nested too deeply");
  switch (v->type) {
  case CP_JSON_NULL: push_null(L); break;
  case CP_JSON_FALSE: lua_pushboolean(L, 0); break;
  case CP_JSON_TRUE: lua_pushboolean(L, 1); break;
  case CP_JSON_INT: lua_pushinteger(L, (lua_Integer)v->u.i); break;
  case CP_JSON_NUMBER: lua_pushnumber(L, v->u.d); break;
  case CP_JSON_STRING: lua_pushlstring(L, v->u.str.s, v->u.str.len); break;
  case CP_JSON_ARRAY:
    lua_createtable(L, (int)v->u.arr.n, 0);
    for (size_t i = 0; i < v->u.arr.n; i++) {
      push_tree(L, v->u.arr.items[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    push_array_mt(L);
    lua_setmetatable(L, -2);
    break;
  case CP_JSON_OBJECT:
    lua_createtable(L, 0, (int)v->u.obj.n);
    for (size_t i = 0; i < v->u.obj.n; i++) {
      const cp_json_member *m = &v->u.obj.members[i];
      lua_pushlstring(L, m->key, m->key_len);
      push_tree(L, m->value);
      lua_rawset(L, -3);
    }
    break;
  }
}

void cp_lua_json_push(lua_State *L, const cp_json *v) { push_tree(L, v); }

/* In protected mode: the tree of the doc given, as Lua values. */
static int push_doc(lua_State *L) {
  const cp_json_doc *doc = lua_touserdata(L, 1);
  lua_pop(L, 1);
  push_tree(L, cp_json_root(doc));
  return 1;
}

int cp_lua_json_decode(lua_State *L, const char *s, size_t len) {
  cp_json_error err;
  cp_json_doc *doc = cp_json_parse(s, len, &err);
  if (!doc && err.out_of_memory) return cp_lua_nomem(L, "decoding JSON");
  if (!doc) {
    cp_lua_fail(L, "json", "invalid JSON at line %d, column %d: %s", err.line,
                err.column, err.message);
    cp_lua_setint(L, "line", err.line);
    cp_lua_setint(L, "column", err.column);
    cp_lua_setint(L, "offset", (lua_Integer)err.offset);
    return 2;
  }
  /* Building the values may raise (memory, depth): the doc goes first. */
  if (!lua_checkstack(L, 3)) {
    cp_json_doc_free(doc);
    return cp_lua_nomem(L, "decoding JSON");
  }
  lua_pushcfunction(L, push_doc);
  lua_pushlightuserdata(L, doc);
  int st = lua_pcall(L, 1, 1, 0);
  cp_json_doc_free(doc);
  if (st != LUA_OK) return lua_error(L);
  return 1;
}

/* ---- encode --------------------------------------------------------------- */

typedef struct frame {
  const char *key; /* object key, or NULL for an array index */
  lua_Integer index;
} frame;

typedef struct encoder {
  lua_State *L;
  cp_buf *out;
  frame path[MAX_DEPTH];
  int depth;
  cp_buf err;
} encoder;

static int enc_fail(encoder *e, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static int enc_fail(encoder *e, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  cp_buf_vprintf(&e->err, fmt, ap);
  va_end(ap);
  cp_buf_adds(&e->err, " at $");
  for (int i = 0; i < e->depth; i++) {
    if (e->path[i].key) cp_buf_printf(&e->err, ".%s", e->path[i].key);
    else cp_buf_printf(&e->err, "[%lld]", (long long)e->path[i].index - 1);
  }
  return -1;
}

static int encode_value(encoder *e, int idx);

static int cmp_keys(const void *a, const void *b) {
  const char *const *x = a, *const *y = b;
  return strcmp(*x, *y);
}

static int encode_array(encoder *e, int idx, lua_Integer n) {
  lua_State *L = e->L;
  cp_buf_addc(e->out, '[');
  for (lua_Integer i = 1; i <= n; i++) {
    if (i > 1) cp_buf_addc(e->out, ',');
    e->path[e->depth].key = NULL;
    e->path[e->depth].index = i;
    e->depth++;
    lua_rawgeti(L, idx, i);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      return enc_fail(e, "array has a hole (nil); use json.null");
    }
    int r = encode_value(e, lua_gettop(L));
    lua_pop(L, 1);
    e->depth--;
    if (r) return r;
  }
  cp_buf_addc(e->out, ']');
  return 0;
}

/* A table without the array mark is an array when its keys are exactly
 * 1..n (n > 0), an object when they are all strings, an error otherwise. */
static int encode_table(encoder *e, int idx) {
  lua_State *L = e->L;
  if (e->depth >= MAX_DEPTH - 1)
    return enc_fail(e, "table nested deeper than %d (a cycle?)", MAX_DEPTH);
  luaL_checkstack(L, 6, "JSON nested too deeply");
  if (lua_getmetatable(L, idx)) {
    push_array_mt(L);
    int marked = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    if (marked) return encode_array(e, idx, (lua_Integer)lua_rawlen(L, idx));
  }
  lua_Integer nint = 0, maxint = 0;
  size_t nstr = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) == LUA_TSTRING) {
      nstr++;
    } else if (lua_isinteger(L, -1) && lua_tointeger(L, -1) >= 1) {
      nint++;
      if (lua_tointeger(L, -1) > maxint) maxint = lua_tointeger(L, -1);
    } else {
      const char *tname = luaL_typename(L, -1);
      lua_pop(L, 1);
      return enc_fail(e, "table key of type %s cannot be a JSON key", tname);
    }
  }
  if (nint && nstr)
    return enc_fail(e, "table mixes array items and object keys");
  if (nint) {
    if (maxint != nint)
      return enc_fail(e, "sparse array (%lld items, highest index %lld); use json.null for gaps",
                      (long long)nint, (long long)maxint);
    return encode_array(e, idx, nint);
  }
  /* Lua memory: a raise cannot leak it (encoding runs protected). */
  const char **keys = lua_newuserdatauv(L, (nstr ? nstr : 1) * sizeof *keys, 0);
  int keys_slot = lua_gettop(L);
  size_t k = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (k < nstr) keys[k++] = lua_tostring(L, -1); /* anchored by the table */
  }
  qsort(keys, nstr, sizeof *keys, cmp_keys);
  cp_buf_addc(e->out, '{');
  int r = 0;
  for (size_t i = 0; i < nstr && !r; i++) {
    if (i) cp_buf_addc(e->out, ',');
    e->path[e->depth].key = keys[i];
    e->depth++;
    lua_getfield(L, idx, keys[i]);
    size_t klen = strlen(keys[i]);
    if (cp_json_add_string(e->out, keys[i], klen))
      r = enc_fail(e, "object key is not valid UTF-8");
    else {
      cp_buf_addc(e->out, ':');
      r = encode_value(e, lua_gettop(L));
    }
    lua_pop(L, 1);
    if (!r) e->depth--;
  }
  lua_remove(L, keys_slot);
  if (!r) cp_buf_addc(e->out, '}');
  return r;
}

static int encode_value(encoder *e, int idx) {
  lua_State *L = e->L;
  switch (lua_type(L, idx)) {
  case LUA_TNIL: cp_buf_adds(e->out, "null"); return 0;
  case LUA_TBOOLEAN:
    cp_buf_adds(e->out, lua_toboolean(L, idx) ? "true" : "false");
    return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(L, idx)) {
      cp_buf_printf(e->out, "%lld", (long long)lua_tointeger(L, idx));
      return 0;
    }
    if (cp_json_add_number(e->out, lua_tonumber(L, idx)))
      return enc_fail(e, "%s cannot be represented in JSON",
                      lua_tostring(L, idx));
    return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(L, idx, &len);
    if (cp_json_add_string(e->out, s, len))
      return enc_fail(e, "string is not valid UTF-8");
    return 0;
  }
  case LUA_TTABLE: return encode_table(e, idx);
  case LUA_TLIGHTUSERDATA:
    if (is_null(L, idx)) {
      cp_buf_adds(e->out, "null");
      return 0;
    }
    /* fall through */
  default:
    return enc_fail(e, "cannot encode a %s", luaL_typename(L, idx));
  }
}

/* In protected mode: encodes its second argument with the encoder given
 * as the first. */
static int encode_protected(lua_State *L) {
  encoder *e = lua_touserdata(L, 1);
  e->L = L;
  lua_pushinteger(L, encode_value(e, 2));
  return 1;
}

int cp_lua_json_encode(lua_State *L, int idx, cp_buf *out, char **errmsg) {
  if (errmsg) *errmsg = NULL;
  idx = lua_absindex(L, idx);
  encoder *e = cp_calloc(1, sizeof *e); /* freed below: 8 KiB of path */
  if (!e || !lua_checkstack(L, 4)) {
    free(e);
    cp_lua_note_oom(L, "encoding JSON");
    return CP_LUA_JSON_NOMEM;
  }
  e->out = out;
  lua_pushcfunction(L, encode_protected);
  lua_pushlightuserdata(L, e);
  lua_pushvalue(L, idx);
  int st = lua_pcall(L, 2, 1, 0);
  int r = st == LUA_OK ? (int)lua_tointeger(L, -1) : CP_LUA_JSON_NOMEM;
  if (st != LUA_OK && st != LUA_ERRMEM) {
    /* not memory: the Lua stack ran out on a very deep value */
    const char *why = lua_tostring(L, -1);
    cp_buf_reset(&e->err);
    cp_buf_adds(&e->err, why ? why : "value nested too deeply");
    r = -1;
  }
  lua_pop(L, 1);
  if (r == 0 && !cp_buf_ok(out)) r = CP_LUA_JSON_NOMEM;
  if (r == -1 && errmsg) {
    *errmsg = cp_buf_steal(&e->err, NULL);
    if (!*errmsg) r = CP_LUA_JSON_NOMEM;
  }
  if (r == CP_LUA_JSON_NOMEM) cp_lua_note_oom(L, "encoding JSON");
  cp_buf_free(&e->err);
  free(e);
  return r;
}

/* ---- the module ----------------------------------------------------------- */

static int l_encode(lua_State *L) {
  luaL_checkany(L, 1);
  cp_buf out = CP_BUF_INIT;
  char *err = NULL;
  int r = cp_lua_json_encode(L, 1, &out, &err);
  if (r == CP_LUA_JSON_NOMEM) {
    cp_buf_free(&out);
    return cp_lua_nomem(L, "encoding JSON");
  }
  if (r) {
    /* C memory goes before anything that could raise */
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", err);
    free(err);
    cp_buf_free(&out);
    return luaL_error(L, "json.encode: %s", msg);
  }
  lua_pushlstring(L, out.data ? out.data : "", out.len);
  cp_buf_free(&out);
  return 1;
}

static int l_decode(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  return cp_lua_json_decode(L, s, len);
}

static int l_array(lua_State *L) {
  if (lua_isnoneornil(L, 1)) {
    lua_settop(L, 0);
    lua_newtable(L);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
  }
  push_array_mt(L);
  lua_setmetatable(L, 1);
  return 1;
}

static int l_is_array(lua_State *L) {
  int marked = 0;
  if (lua_istable(L, 1) && lua_getmetatable(L, 1)) {
    push_array_mt(L);
    marked = lua_rawequal(L, -1, -2);
  }
  lua_pushboolean(L, marked);
  return 1;
}

static const luaL_Reg json_fns[] = {{"encode", l_encode},
                                    {"decode", l_decode},
                                    {"array", l_array},
                                    {"is_array", l_is_array},
                                    {NULL, NULL}};

int luaopen_cogpipe_json(lua_State *L) {
  luaL_newlib(L, json_fns);
  push_null(L);
  lua_setfield(L, -2, "null");
  return 1;
}
