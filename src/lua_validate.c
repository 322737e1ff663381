/*
 * lua_validate.c -- the cogpipe.validate Lua module: the streaming checks
 * of validate.c and the readers of reader.c over files, strings and lists,
 * and the payload validators of schema.c. Converts between Lua and C only;
 * the rules live in those files.
 *
 *   validate.file(path [, opts])  -> report | nil, err{kind, path}
 *     (kind "io", or "resource" when out of file descriptors or memory)
 *   validate.text(s [, opts])     -> report       (opts.name labels problems)
 *   validate.texts(list [, opts]) -> report       (line = index in list)
 *     opts: format = "lines"|"jsonl"|"csv" (file: from the extension),
 *           max_bytes (52428800; nothing past it is read), max_chars
 *           (500), max_problems (1000),
 *           records = true to return the valid records
 *     report: {file, format, bytes, lines, blank_lines, invalid,
 *              problem_count, problems = {{file, line, column, offset,
 *              kind, reason}, ...}, records = {{line, text, intent,
 *              annotations}, ...}?}
 *   validate.dataset_payload(v)          -> true | nil, err
 *   validate.intent_batch(v [, opts])    -> true | nil, err
 *     opts: existing_active (0), cap (2000), max_chars (500),
 *           max_examples (100)
 *   validate.v2_sentence(v)              -> true | nil, err
 *     v: a table (checked as the JSON it encodes to) or JSON text;
 *     err: {kind = "validation", message, errors = {{path, message}, ...}}
 *     or {kind = "json", message, offset} for JSON text that does not parse.
 * Bad arguments raise; validation problems never do.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"
#include "lua_json.h"
#include "lua_validate.h"
#include "lutil.h"
#include "normalize.h"
#include "reader.h"
#include "schema.h"
#include "validate.h"

typedef struct vopts {
  cp_limits lim;
  size_t max_problems;
  int have_format;
  cp_format fmt;
  int records;
  const char *name;
} vopts;

static lua_Integer opt_int(lua_State *L, int t, const char *key,
                           lua_Integer def, lua_Integer min) {
  lua_getfield(L, t, key);
  lua_Integer v = def;
  if (!lua_isnil(L, -1)) {
    int ok;
    v = lua_tointegerx(L, -1, &ok);
    if (!ok) luaL_error(L, "option '%s' must be an integer", key);
    if (v < min) luaL_error(L, "option '%s' must be at least %d", key, (int)min);
  }
  lua_pop(L, 1);
  return v;
}

/* Reads the options table at index t (may be absent); raises on misuse,
 * before anything is allocated. */
static void read_opts(lua_State *L, int t, vopts *o) {
  memset(o, 0, sizeof *o);
  cp_limits_init(&o->lim);
  o->max_problems = CP_DEFAULT_MAX_PROBLEMS;
  if (lua_isnoneornil(L, t)) return;
  luaL_checktype(L, t, LUA_TTABLE);
  o->lim.max_bytes = (uint64_t)opt_int(L, t, "max_bytes", CP_DEFAULT_MAX_BYTES, 0);
  o->lim.max_chars = (size_t)opt_int(L, t, "max_chars", CP_DEFAULT_MAX_CHARS, 0);
  o->max_problems = (size_t)opt_int(L, t, "max_problems", CP_DEFAULT_MAX_PROBLEMS, 0);
  lua_getfield(L, t, "format");
  if (!lua_isnil(L, -1)) {
    const char *f = lua_tostring(L, -1);
    if (!f || cp_format_parse(f, &o->fmt))
      luaL_error(L, "option 'format' must be \"lines\", \"jsonl\" or \"csv\"");
    o->have_format = 1;
  }
  lua_pop(L, 1);
  lua_getfield(L, t, "records");
  o->records = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_getfield(L, t, "name");
  if (lua_isstring(L, -1)) o->name = lua_tostring(L, -1); /* anchored by opts */
  lua_pop(L, 1);
}

/* Problems kept in a userdata whose __gc frees them, so that a memory
 * error while they become Lua values loses nothing. */
static int problems_gc(lua_State *L) {
  cp_problems_free(lua_touserdata(L, 1));
  return 0;
}

static cp_problems *push_problems_box(lua_State *L, size_t max_kept) {
  cp_problems *p = lua_newuserdatauv(L, sizeof *p, 0);
  cp_problems_init(p, max_kept);
  if (luaL_newmetatable(L, "cogpipe.validate.problems")) {
    lua_pushcfunction(L, problems_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return p;
}

static int schema_errors_gc(lua_State *L) {
  cp_schema_errors_free(lua_touserdata(L, 1));
  return 0;
}

static cp_schema_errors *push_errors_box(lua_State *L) {
  cp_schema_errors *e = lua_newuserdatauv(L, sizeof *e, 0);
  cp_schema_errors_init(e);
  if (luaL_newmetatable(L, "cogpipe.validate.errors")) {
    lua_pushcfunction(L, schema_errors_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return e;
}

void cp_lua_push_problems(lua_State *L, const cp_problems *p) {
  lua_createtable(L, (int)p->n, 0);
  for (size_t i = 0; i < p->n; i++) {
    const cp_problem *q = &p->items[i];
    lua_createtable(L, 0, 6);
    cp_lua_setstr(L, "file", q->file);
    cp_lua_setint(L, "line", (lua_Integer)q->line);
    cp_lua_setint(L, "column", (lua_Integer)q->column);
    cp_lua_setint(L, "offset", (lua_Integer)q->offset);
    cp_lua_setstr(L, "kind", cp_problem_kind_name(q->kind));
    cp_lua_setstr(L, "reason", q->reason);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
}

/* A reader held by a userdata, so that a memory error while its records
 * become Lua values loses nothing: __gc frees it. */
static int reader_gc(lua_State *L) {
  cp_reader **box = lua_touserdata(L, 1);
  cp_reader_free(*box);
  *box = NULL;
  return 0;
}

static cp_reader **push_reader_box(lua_State *L) {
  cp_reader **box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  if (luaL_newmetatable(L, "cogpipe.validate.reader")) {
    lua_pushcfunction(L, reader_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  return box;
}

/* A mapped file held the same way. */
static int map_gc(lua_State *L) {
  cp_file_map *m = lua_touserdata(L, 1);
  if (m->data) cp_file_map_close(m);
  m->data = NULL;
  return 0;
}

/* Reads every record of data into a report table left on the stack.
 * Memory running out -- pushing the records, or in the reader -- raises a
 * memory error: a report that is missing records is no report. */
static void push_report(lua_State *L, const char *name, const char *data,
                        size_t len, const vopts *o, cp_file_map *map) {
  cp_problems *probs = push_problems_box(L, o->max_problems);
  int probs_at = lua_gettop(L);
  cp_format fmt = o->have_format ? o->fmt : cp_format_guess(name);
  cp_reader **box = push_reader_box(L);
  int box_at = lua_gettop(L);
  cp_reader *r = *box = cp_reader_new(name, data, len, fmt, &o->lim, probs);
  if (!r) cp_lua_nomem(L, "reading the input");
  if (map) cp_reader_set_size(r, map->file_size); /* mapped up to the limit */
  lua_createtable(L, 0, 10);
  int report = lua_gettop(L);
  if (o->records) lua_newtable(L);
  lua_Integer lines = 0, blank = 0, invalid = 0, nrec = 0;
  size_t released = 0;
  cp_record rec;
  while (cp_reader_next(r, &rec)) {
    lines++;
    if (rec.blank) blank++;
    else if (rec.invalid) invalid++;
    else if (o->records) {
      lua_createtable(L, 0, 4);
      cp_lua_setint(L, "line", (lua_Integer)rec.line);
      lua_pushlstring(L, rec.text, rec.len);
      lua_setfield(L, -2, "text");
      if (rec.intent) {
        lua_pushlstring(L, rec.intent, rec.intent_len);
        lua_setfield(L, -2, "intent");
      }
      if (rec.annotations) {
        cp_lua_json_push(L, rec.annotations);
        lua_setfield(L, -2, "annotations");
      }
      lua_rawseti(L, -2, ++nrec);
    }
    /* Drop what was read behind, so a big file never stays resident. */
    if (map && cp_reader_pos(r) - released >= ((size_t)8 << 20)) {
      cp_file_map_release(map, released, cp_reader_pos(r));
      released = cp_reader_pos(r);
    }
  }
  if (cp_reader_failed(r) || probs->out_of_memory)
    cp_lua_nomem(L, "reading the input");
  cp_reader_free(r);
  *box = NULL;
  if (o->records) lua_setfield(L, report, "records");
  cp_lua_setstr(L, "file", name);
  cp_lua_setstr(L, "format", cp_format_name(fmt));
  cp_lua_setint(L, "bytes", (lua_Integer)(map ? map->file_size : len));
  cp_lua_setint(L, "lines", lines);
  cp_lua_setint(L, "blank_lines", blank);
  cp_lua_setint(L, "invalid", invalid);
  cp_lua_setint(L, "problem_count", (lua_Integer)probs->total);
  cp_lua_push_problems(L, probs);
  lua_setfield(L, report, "problems");
  lua_remove(L, box_at);
  lua_remove(L, probs_at);
}

static int l_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  vopts o;
  read_opts(L, 2, &o);
  lua_settop(L, 2);
  cp_file_map *map = lua_newuserdatauv(L, sizeof *map, 0); /* 3 */
  memset(map, 0, sizeof *map);
  if (luaL_newmetatable(L, "cogpipe.validate.map")) {
    lua_pushcfunction(L, map_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  char err[512];
  unsigned long before = cp_alloc_failures();
  int rc = cp_file_map_open(map, path, o.lim.max_bytes, err, sizeof err);
  if (rc) {
    memset(map, 0, sizeof *map);
    if (cp_alloc_failures() != before) return cp_lua_nomem(L, "mapping the input");
    cp_lua_fail(L, rc == -2 ? "resource" : "io", "%s", err);
    cp_lua_setstr(L, "path", path);
    return 2;
  }
  push_report(L, path, map->data, map->size, &o, map);
  cp_file_map_close(map);
  map->data = NULL;
  return 1;
}

static int l_text(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  vopts o;
  read_opts(L, 2, &o);
  if (!o.have_format) {
    o.have_format = 1;
    o.fmt = CP_FMT_LINES;
  }
  push_report(L, o.name ? o.name : "<text>", s, len, &o, NULL);
  return 1;
}

typedef struct list_ctx {
  cp_problems *sink;
  uint64_t line;
} list_ctx;

static void list_issue(void *ud, size_t byte_off, size_t char_idx,
                       cp_problem_kind kind, const char *reason) {
  list_ctx *c = ud;
  cp_problems_add(c->sink, c->line, char_idx + 1, byte_off, kind, "%s", reason);
}

/* Each item is one text on its own: offsets are within the item. */
static int l_texts(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  vopts o;
  read_opts(L, 2, &o);
  lua_Integer n = (lua_Integer)luaL_len(L, 1);
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_geti(L, 1, i) != LUA_TSTRING)
      luaL_error(L, "texts[%d] is a %s, not a string", (int)i, luaL_typename(L, -1));
    lua_pop(L, 1);
  }
  lua_settop(L, 2);
  cp_problems *probs = push_problems_box(L, o.max_problems); /* 3 */
  cp_problems_set_file(probs, o.name ? o.name : "<texts>");
  lua_Integer blank = 0, invalid = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_geti(L, 1, i);
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    list_ctx c = {probs, (uint64_t)i};
    cp_text_info info;
    cp_text_check(&o.lim, s, len, 0, list_issue, &c, &info);
    if (cp_is_blank(s, len)) blank++;
    else if (info.issues) invalid++;
    lua_pop(L, 1);
  }
  if (probs->out_of_memory) return cp_lua_nomem(L, "keeping validation problems");
  lua_createtable(L, 0, 8);
  cp_lua_setstr(L, "file", o.name ? o.name : "<texts>");
  cp_lua_setint(L, "lines", n);
  cp_lua_setint(L, "blank_lines", blank);
  cp_lua_setint(L, "invalid", invalid);
  cp_lua_setint(L, "problem_count", (lua_Integer)probs->total);
  cp_lua_push_problems(L, probs);
  lua_setfield(L, -2, "problems");
  return 1;
}

/* ---- payloads -------------------------------------------------------------- */

typedef int (*schema_fn)(const cp_json *root, void *ud, cp_schema_errors *errs);

/* Parses the argument at index 1 -- JSON text, or a table checked as the
 * JSON it encodes to (so `slots = {}` is seen as the object it would be
 * sent as) -- and runs fn on it. */
static int run_schema(lua_State *L, schema_fn fn, void *ud) {
  const char *s;
  size_t len;
  lua_settop(L, 2);
  cp_buf *text = cp_lua_newbuf(L); /* 3 */
  if (lua_type(L, 1) == LUA_TSTRING) {
    s = lua_tolstring(L, 1, &len);
  } else {
    luaL_checktype(L, 1, LUA_TTABLE);
    char *why = NULL;
    int rc = cp_lua_json_encode(L, 1, text, &why);
    if (rc == CP_LUA_JSON_NOMEM) return cp_lua_nomem(L, "encoding a payload");
    if (rc) {
      char msg[1024];
      snprintf(msg, sizeof msg, "%s", why ? why : "cannot encode the value as JSON");
      free(why);
      return luaL_argerror(L, 1, lua_pushstring(L, msg));
    }
    s = text->data ? text->data : "";
    len = text->len;
  }
  /* made before the doc, the one C object a raise could otherwise lose */
  cp_schema_errors *errs = push_errors_box(L);
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(s, len, &jerr);
  cp_buf_free(text);
  if (!doc && jerr.out_of_memory) return cp_lua_nomem(L, "parsing a payload");
  if (!doc) {
    cp_lua_fail(L, "json", "invalid JSON at line %d, column %d: %s", jerr.line,
                jerr.column, jerr.message);
    cp_lua_setint(L, "offset", (lua_Integer)jerr.offset);
    return 2;
  }
  int ok = fn(cp_json_root(doc), ud, errs);
  cp_json_doc_free(doc);
  if (errs->out_of_memory) return cp_lua_nomem(L, "validating a payload");
  if (ok) {
    lua_pushboolean(L, 1);
    return 1;
  }
  cp_buf *msg = cp_lua_newbuf(L);
  for (size_t i = 0; i < errs->n && i < 3; i++)
    cp_buf_printf(msg, "%s%s: %s", i ? "; " : "", errs->items[i].path,
                  errs->items[i].message);
  if (errs->n > 3) cp_buf_printf(msg, " (and %zu more)", errs->n - 3);
  if (!cp_buf_ok(msg)) return cp_lua_nomem(L, "validating a payload");
  lua_pushnil(L);
  cp_lua_push_error(L, "validation", "%s", msg->data ? msg->data : "invalid");
  lua_createtable(L, (int)errs->n, 0);
  for (size_t i = 0; i < errs->n; i++) {
    lua_createtable(L, 0, 2);
    cp_lua_setstr(L, "path", errs->items[i].path);
    cp_lua_setstr(L, "message", errs->items[i].message);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "errors");
  return 2;
}

static int dataset_fn(const cp_json *root, void *ud, cp_schema_errors *errs) {
  (void)ud;
  return cp_schema_dataset_payload(root, errs);
}

static int batch_fn(const cp_json *root, void *ud, cp_schema_errors *errs) {
  return cp_schema_intent_batch(root, ud, errs);
}

static int v2_fn(const cp_json *root, void *ud, cp_schema_errors *errs) {
  (void)ud;
  return cp_schema_v2_sentence(root, errs);
}

static int l_dataset_payload(lua_State *L) {
  return run_schema(L, dataset_fn, NULL);
}

static int l_intent_batch(lua_State *L) {
  cp_batch_opts o;
  cp_batch_opts_init(&o);
  if (!lua_isnoneornil(L, 2)) {
    luaL_checktype(L, 2, LUA_TTABLE);
    o.existing_active = (int64_t)opt_int(L, 2, "existing_active", 0, 0);
    o.cap = (int64_t)opt_int(L, 2, "cap", CP_DEFAULT_INTENT_CAP, 0);
    o.max_chars = (size_t)opt_int(L, 2, "max_chars", 500, 1);
    o.max_examples = (size_t)opt_int(L, 2, "max_examples", CP_DEFAULT_BATCH_MAX, 1);
  }
  return run_schema(L, batch_fn, &o);
}

static int l_v2_sentence(lua_State *L) { return run_schema(L, v2_fn, NULL); }

static const luaL_Reg funcs[] = {{"file", l_file},
                                 {"text", l_text},
                                 {"texts", l_texts},
                                 {"dataset_payload", l_dataset_payload},
                                 {"intent_batch", l_intent_batch},
                                 {"v2_sentence", l_v2_sentence},
                                 {NULL, NULL}};

int luaopen_cogpipe_validate(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
