/*
 * lua_audit.c -- the cogpipe.audit module: audit logs as userdata
 * ("cogpipe.audit.log"), their head (the anchor a run's summary carries)
 * and chain verification. Every record passes through the runtime's
 * redaction (lua_secrets.c) before audit.c sees it; nothing here writes to
 * the files directly.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit.h"
#include "buf.h"
#include "lua_json.h"
#include "lua_offload.h"
#include "lua_secrets.h"
#include "lutil.h"
#include "modules.h"
#include "runtime.h"

#define LOG_MT "cogpipe.audit.log"

typedef struct laudit {
  cp_audit *a;                      /* NULL once closed */
  char *run_id, *tenant, *pipeline; /* owned; redacted copies */
  char *path, *head_path;           /* owned; kept for head() after close */
  cp_audit_head head;               /* where the chain stood at close */
} laudit;

static laudit *check_log(lua_State *L, int idx) {
  return luaL_checkudata(L, idx, LOG_MT);
}

static laudit *check_open(lua_State *L, int idx) {
  laudit *l = check_log(L, idx);
  if (!l->a) luaL_error(L, "audit log is closed");
  return l;
}

/* The failure of an audit.c call begun when cp_alloc_failures() stood at
 * before: nil, err for what the file system did, a memory error when
 * memory ran out (then msg may be NULL: even it could not be made). Takes
 * msg, which is copied out before anything can raise. */
static int fail_call(lua_State *L, unsigned long before, const char *doing,
                     char *msg) {
  char text[1024];
  int lost = msg == NULL;
  snprintf(text, sizeof text, "%s", msg ? msg : "");
  free(msg);
  if (lost || cp_alloc_failures() != before) return cp_lua_nomem(L, doing);
  lua_pushnil(L);
  cp_lua_push_error(L, "io", "%s", text);
  return 2;
}

static cp_secrets *secrets(lua_State *L) { return cp_secrets_of(L); }

/* A redacted malloc'd copy of the optional string at idx (NULL for nil);
 * raises when out of memory. */
static char *opt_text(lua_State *L, int idx) {
  if (lua_isnoneornil(L, idx)) return NULL;
  luaL_checkstring(L, idx);
  cp_lua_redact(L, idx, secrets(L));
  char *s = cp_strdup(lua_tostring(L, -1));
  if (!s) cp_lua_nomem(L, "keeping an audit log's context");
  lua_pop(L, 1);
  return s;
}

static void set_text(char **slot, char *v) {
  free(*slot);
  *slot = v;
}

static void free_log(laudit *l) {
  free(l->run_id);
  free(l->tenant);
  free(l->pipeline);
  l->run_id = l->tenant = l->pipeline = NULL;
}

/* Closes the log, remembering where its chain stood for head(). */
static int close_log(laudit *l, char **err) {
  cp_audit_head_get(l->a, &l->head);
  int rc = cp_audit_close(l->a, err);
  l->a = NULL;
  return rc;
}

/* audit.open(path [, {run_id=, tenant=, pipeline=, fsync="batch"|"always"|
 * "off", max_bytes=}]) -> log | nil, err */
static int l_open(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  cp_audit_options o = {CP_AUDIT_FSYNC_BATCH, 0};
  int has_opts = !lua_isnoneornil(L, 2);
  if (has_opts) {
    luaL_checktype(L, 2, LUA_TTABLE);
    if (lua_getfield(L, 2, "fsync") != LUA_TNIL &&
        cp_audit_fsync_parse(luaL_checkstring(L, -1), &o.fsync))
      return luaL_argerror(L, 2,
                           "fsync must be \"always\", \"batch\" or \"off\"");
    lua_pop(L, 1);
    if (lua_getfield(L, 2, "max_bytes") != LUA_TNIL) {
      lua_Integer mb = luaL_checkinteger(L, -1);
      luaL_argcheck(L, mb >= 0, 2, "max_bytes must be >= 0");
      o.max_bytes = (uint64_t)mb;
    }
    lua_pop(L, 1);
    static const char *const texts[] = {"run_id", "tenant", "pipeline"};
    for (int i = 0; i < 3; i++) {
      int t = lua_getfield(L, 2, texts[i]);
      if (t != LUA_TNIL && t != LUA_TSTRING)
        return luaL_error(L,
                          "bad option '%s' to 'open' (string expected, "
                          "got %s)",
                          texts[i], luaL_typename(L, -1));
      lua_pop(L, 1);
    }
  }
  /* from here C memory is allocated: held by l, which __gc frees, so a
   * memory error raised on the way loses nothing */
  laudit *l = lua_newuserdatauv(L, sizeof *l, 0);
  memset(l, 0, sizeof *l);
  luaL_setmetatable(L, LOG_MT);
  if (has_opts) {
    lua_getfield(L, 2, "run_id");
    l->run_id = opt_text(L, -1);
    lua_getfield(L, 2, "tenant");
    l->tenant = opt_text(L, -1);
    lua_getfield(L, 2, "pipeline");
    l->pipeline = opt_text(L, -1);
    lua_pop(L, 3);
  }
  if (!l->run_id) {
    char id[37];
    cp_audit_run_id(id);
    l->run_id = cp_strdup(id);
    if (!l->run_id) return cp_lua_nomem(L, "opening an audit log");
  }
  char *err = NULL;
  unsigned long before = cp_alloc_failures();
  l->a = cp_audit_open(path, &o, &err);
  if (!l->a) {
    free_log(l);
    return fail_call(L, before, "opening an audit log", err);
  }
  l->path = cp_strdup(path);
  l->head_path = cp_audit_head_path(path);
  if (!l->path || !l->head_path) return cp_lua_nomem(L, "opening an audit log");
  return 1;
}

static const char *const reserved[] = {"ts",      "seq",      "run_id",
                                       "tenant",  "pipeline", "event",
                                       "genesis", "prev",     NULL};

/* log:record(event [, fields [, {tenant=, pipeline=}]]) -> true | nil, err */
static int l_record(lua_State *L) {
  laudit *l = check_open(L, 1);
  luaL_checkstring(L, 2);
  if (!lua_isnoneornil(L, 3)) luaL_checktype(L, 3, LUA_TTABLE);
  if (!lua_isnoneornil(L, 4)) luaL_checktype(L, 4, LUA_TTABLE);
  lua_settop(L, 4);
  cp_secrets *s = secrets(L);
  if (lua_istable(L, 3)) {
    for (int i = 0; reserved[i]; i++)
      if (lua_getfield(L, 3, reserved[i]) != LUA_TNIL)
        return luaL_argerror(L, 3,
                             lua_pushfstring(L,
                                             "'%s' is set by the "
                                             "audit log itself",
                                             reserved[i]));
    lua_pop(L, 8);
    cp_lua_redact(L, 3, s); /* 5 */
  } else {
    lua_newtable(L);
  }
  cp_lua_redact(L, 2, s); /* 6: event */
  const char *tenant = l->tenant, *pipeline = l->pipeline;
  if (lua_istable(L, 4)) {
    if (lua_getfield(L, 4, "tenant") == LUA_TSTRING) {
      cp_lua_redact(L, -1, s);
      tenant = lua_tostring(L, -1);
    }
    if (lua_getfield(L, 4, "pipeline") == LUA_TSTRING) {
      cp_lua_redact(L, -1, s);
      pipeline = lua_tostring(L, -1);
    }
  }
  /* The encoder cannot raise for bad values, so the buffer is freed on
   * every path before any error is raised. */
  cp_buf body = CP_BUF_INIT;
  char *why = NULL;
  int enc = cp_lua_json_encode(L, 5, &body, &why);
  if (enc == CP_LUA_JSON_NOMEM) {
    cp_buf_free(&body);
    return cp_lua_nomem(L, "writing an audit record");
  }
  if (enc) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", why);
    free(why);
    cp_buf_free(&body);
    return luaL_error(L, "audit: cannot record event fields: %s", msg);
  }
  if (body.len < 2 || body.data[0] != '{') {
    cp_buf_free(&body);
    return luaL_argerror(L, 3, "fields must be a table with string keys");
  }
  cp_audit_record r = {l->run_id,          tenant,        pipeline,
                       lua_tostring(L, 6), body.data + 1, body.len - 2};
  char *err = NULL;
  unsigned long before = cp_alloc_failures();
  int rc = cp_audit_append(l->a, &r, &err);
  cp_buf_free(&body);
  if (rc) return fail_call(L, before, "writing an audit record", err);
  lua_pushboolean(L, 1);
  return 1;
}

/* ---- sync ------------------------------------------------------------------
 */

typedef struct sync_op {
  cp_audit_sync_job *job; /* NULL once finished */
} sync_op;

static void sync_work(void *data) {
  sync_op *op = data;
  cp_audit_sync_run(op->job);
}

static int sync_push(lua_State *L, void *data) {
  sync_op *op = data;
  char *err = NULL;
  unsigned long before = cp_alloc_failures();
  int rc = cp_audit_sync_finish(op->job, &err);
  op->job = NULL;
  if (rc) return fail_call(L, before, "syncing an audit log", err);
  lua_pushboolean(L, 1);
  return 1;
}

static void sync_release(void *data) {
  sync_op *op = data;
  if (op->job) cp_audit_sync_finish(op->job, NULL); /* abandoned */
  free(op);
}

/* log:sync() -> true | nil, err. Inside a task the fsyncs run in libuv's
 * thread pool and only the calling task waits for them. A failure stops
 * the log: later records and syncs fail too. */
static int l_sync(lua_State *L) {
  laudit *l = check_open(L, 1);
  char *err = NULL;
  unsigned long before = cp_alloc_failures();
  cp_audit_sync_job *job = cp_audit_sync_start(l->a, &err);
  if (!job) {
    if (err || cp_alloc_failures() != before)
      return fail_call(L, before, "syncing an audit log", err);
    lua_pushboolean(L, 1);
    return 1;
  }
  sync_op *op = cp_malloc(sizeof *op); /* owned by cp_offload_run */
  if (!op) {
    cp_audit_sync_finish(job, NULL); /* not run: the log stays unsynced */
    return cp_lua_nomem(L, "syncing an audit log");
  }
  op->job = job;
  return cp_offload_run(L, op, sync_work, sync_push, sync_release);
}

/* ---- the rest of the methods ----------------------------------------------
 */

static int l_close(lua_State *L) {
  laudit *l = check_log(L, 1);
  if (!l->a) {
    lua_pushboolean(L, 1);
    return 1;
  }
  char *err = NULL;
  unsigned long before = cp_alloc_failures();
  int rc = close_log(l, &err);
  free_log(l);
  if (rc) return fail_call(L, before, "closing an audit log", err);
  lua_pushboolean(L, 1);
  return 1;
}

/* __close (a to-be-closed log): closes it; head() still answers. */
static int l_release(lua_State *L) {
  laudit *l = check_log(L, 1);
  if (l->a) close_log(l, NULL);
  free_log(l);
  return 0;
}

static int l_gc(lua_State *L) {
  laudit *l = check_log(L, 1);
  l_release(L);
  free(l->path);
  free(l->head_path);
  l->path = l->head_path = NULL;
  return 0;
}

/* log:head() -> {seq=, hash=, records=, path=, head_path=}: the last record
 * of the log (hash absent while there is none) and the count of records in
 * its file, as its head file says; after close, as at close. This is the
 * anchor a run's summary, metrics and webhook body carry, which `cogpipe
 * audit verify --head SEQ:HASH` checks the log against. */
static int l_head(lua_State *L) {
  laudit *l = check_log(L, 1);
  cp_audit_head h = l->head;
  if (l->a) cp_audit_head_get(l->a, &h);
  lua_createtable(L, 0, 5);
  cp_lua_setint(L, "seq", (lua_Integer)h.seq);
  if (h.hash[0]) cp_lua_setstr(L, "hash", h.hash);
  cp_lua_setint(L, "records", (lua_Integer)h.records);
  if (l->path) cp_lua_setstr(L, "path", l->path);
  if (l->head_path) cp_lua_setstr(L, "head_path", l->head_path);
  return 1;
}

/* log:add_secret(s) -> boolean: registers s with the runtime's secrets, so
 * it is redacted here and in every other output of the run. */
static int l_add_secret(lua_State *L) {
  check_log(L, 1);
  size_t len;
  const char *v = luaL_checklstring(L, 2, &len);
  int rc = cp_secret_add(secrets(L), v, len);
  if (rc == -2) return cp_lua_nomem(L, "registering a secret");
  lua_pushboolean(L, rc == 0);
  return 1;
}

/* log:set_context{tenant=, pipeline=}: the defaults of later records. */
static int l_set_context(lua_State *L) {
  laudit *l = check_open(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  int t = lua_getfield(L, 2, "tenant");
  int p = lua_getfield(L, 2, "pipeline");
  luaL_argcheck(L, t == LUA_TNIL || t == LUA_TSTRING, 2,
                "tenant must be a string");
  luaL_argcheck(L, p == LUA_TNIL || p == LUA_TSTRING, 2,
                "pipeline must be a string");
  if (t == LUA_TSTRING) set_text(&l->tenant, opt_text(L, -2));
  if (p == LUA_TSTRING) set_text(&l->pipeline, opt_text(L, -1));
  return 0;
}

static int l_info(lua_State *L) {
  laudit *l = check_open(L, 1);
  char hash[65];
  cp_audit_last_hash(l->a, hash);
  lua_createtable(L, 0, 6);
  cp_lua_setstr(L, "path", cp_audit_path(l->a));
  cp_lua_setstr(L, "run_id", l->run_id);
  if (l->tenant) cp_lua_setstr(L, "tenant", l->tenant);
  if (l->pipeline) cp_lua_setstr(L, "pipeline", l->pipeline);
  cp_lua_setint(L, "seq", (lua_Integer)cp_audit_seq(l->a));
  if (hash[0]) cp_lua_setstr(L, "last_hash", hash);
  return 1;
}

static int l_tostring(lua_State *L) {
  laudit *l = check_log(L, 1);
  if (l->a)
    lua_pushfstring(L, "audit log (%s)", cp_audit_path(l->a));
  else
    lua_pushliteral(L, "audit log (closed)");
  return 1;
}

/* ---- module functions -------------------------------------------------------
 */

/* Reads opts.head ({seq=, hash=}, as log:head() gives it) into *h.
 * Returns 1 when it is there; raises when it is malformed. */
static int anchor_opt(lua_State *L, int opts, cp_audit_head *h) {
  memset(h, 0, sizeof *h);
  if (lua_getfield(L, opts, "head") == LUA_TNIL) {
    lua_pop(L, 1);
    return 0;
  }
  luaL_argcheck(L, lua_istable(L, -1), opts,
                "head must be a table {seq=, hash=}");
  int isnum = 0;
  lua_getfield(L, -1, "seq");
  lua_Integer seq = lua_tointegerx(L, -1, &isnum);
  luaL_argcheck(L, isnum && seq >= 1, opts,
                "head.seq must be an integer from 1");
  size_t len = 0;
  lua_getfield(L, -2, "hash");
  const char *hash = lua_tolstring(L, -1, &len);
  int hex = hash && len == 64;
  for (size_t i = 0; hex && i < len; i++)
    hex = (hash[i] >= '0' && hash[i] <= '9') ||
          (hash[i] >= 'a' && hash[i] <= 'f');
  luaL_argcheck(L, hex, opts, "head.hash must be 64 lower-case hex digits");
  h->seq = (uint64_t)seq;
  memcpy(h->hash, hash, 65);
  h->records = UINT64_MAX;
  lua_pop(L, 3);
  return 1;
}

/* Sets report[k] = {file=, line=, message=} for a note. */
static void push_note(lua_State *L, int nfiles, const cp_audit_note *nt) {
  lua_createtable(L, 0, 3);
  if ((int)nt->file < nfiles)
    cp_lua_setstr(L, "file", lua_tostring(L, (int)nt->file + 1));
  cp_lua_setint(L, "line", (lua_Integer)nt->line);
  cp_lua_setstr(L, "message", nt->message ? nt->message : "(message lost: out of memory)");
}

static int report_gc(lua_State *L) {
  cp_audit_report_free(lua_touserdata(L, 1));
  return 0;
}

/* audit.verify(path, ... [, {head = {seq=, hash=}}]) -> report | nil, err
 * (a file cannot be read). head is an anchor from a run's summary; the
 * head file beside the last path is read when it exists. */
static int l_verify(lua_State *L) {
  int n = lua_gettop(L);
  int opts = n >= 1 && lua_istable(L, n) ? n : 0;
  int nfiles = opts ? n - 1 : n;
  luaL_argcheck(L, nfiles >= 1, 1, "at least one file expected");
  for (int i = 1; i <= nfiles; i++)
    luaL_checkstring(L, i);
  cp_audit_head anchor;
  int has_anchor = opts && anchor_opt(L, opts, &anchor);
  lua_settop(L, nfiles);
  /* the report's C memory is held by a userdata whose __gc frees it, so a
   * memory error while it is turned into Lua values loses nothing */
  cp_audit_report *r = lua_newuserdatauv(L, sizeof *r, 0); /* nfiles + 1 */
  memset(r, 0, sizeof *r);
  if (luaL_newmetatable(L, "cogpipe.audit.report")) {
    lua_pushcfunction(L, report_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  const char **paths = lua_newuserdatauv(L, (size_t)nfiles * sizeof *paths, 0);
  for (int i = 1; i <= nfiles; i++)
    paths[i - 1] = lua_tostring(L, i);
  unsigned long before = cp_alloc_failures();
  int rc =
      cp_audit_verify(paths, (size_t)nfiles, has_anchor ? &anchor : NULL, r);
  lua_pop(L, 1); /* paths */
  cp_audit_report rep = *r; /* a view: r keeps owning the memory */
  if (rc < 0 && cp_alloc_failures() != before)
    return cp_lua_nomem(L, "verifying an audit log");
  lua_createtable(L, 0, 12);
  if (rc < 0) {
    lua_pushnil(L);
    cp_lua_push_error(L, "io", "%s", rep.problem.message ? rep.problem.message : "cannot verify");
    if (rep.unreadable)
      cp_lua_setstr(L, "path",
                    rep.head_path ? rep.head_path
                                  : lua_tostring(L, (int)rep.problem.file + 1));
    return 2;
  }
  lua_pushboolean(L, rc == 0);
  lua_setfield(L, -2, "ok");
  cp_lua_setint(L, "records", (lua_Integer)rep.total_records);
  cp_lua_setint(L, "last_seq", (lua_Integer)rep.last_seq);
  if (rep.last_hash[0]) cp_lua_setstr(L, "last_hash", rep.last_hash);
  lua_createtable(L, nfiles, 0);
  for (int i = 0; i < nfiles; i++) {
    lua_createtable(L, 0, 2);
    cp_lua_setstr(L, "path", lua_tostring(L, i + 1));
    cp_lua_setint(L, "records", (lua_Integer)rep.records[i]);
    lua_rawseti(L, -2, i + 1);
  }
  lua_setfield(L, -2, "files");
  if (rep.broken) {
    push_note(L, nfiles, &rep.problem);
    lua_setfield(L, -2, "problem");
  }
  lua_createtable(L, (int)rep.n_warnings, 0);
  for (size_t i = 0; i < rep.n_warnings; i++) {
    push_note(L, nfiles, &rep.warnings[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "warnings");
  lua_createtable(L, (int)rep.n_interrupted, 0);
  for (size_t i = 0; i < rep.n_interrupted; i++) {
    lua_createtable(L, 0, 3);
    cp_lua_setstr(L, "run_id", rep.interrupted[i].run_id);
    cp_lua_setstr(L, "file", lua_tostring(L, (int)rep.interrupted[i].file + 1));
    cp_lua_setint(L, "line", (lua_Integer)rep.interrupted[i].line);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "interrupted");
  cp_lua_setbool(L, "end_checked", rep.end_checked);
  if (rep.head_path) {
    lua_createtable(L, 0, 4);
    cp_lua_setstr(L, "path", rep.head_path);
    if (rep.head.seq) {
      cp_lua_setint(L, "seq", (lua_Integer)rep.head.seq);
      cp_lua_setstr(L, "hash", rep.head.hash);
      if (rep.head.records != UINT64_MAX)
        cp_lua_setint(L, "records", (lua_Integer)rep.head.records);
    }
    lua_setfield(L, -2, "head");
  }
  if (has_anchor) {
    lua_createtable(L, 0, 5);
    cp_lua_setint(L, "seq", (lua_Integer)anchor.seq);
    cp_lua_setstr(L, "hash", anchor.hash);
    if (rep.anchor_line) {
      cp_lua_setstr(L, "file", lua_tostring(L, (int)rep.anchor_file + 1));
      cp_lua_setint(L, "line", (lua_Integer)rep.anchor_line);
      cp_lua_setint(L, "after", (lua_Integer)rep.after_anchor);
    }
    lua_setfield(L, -2, "anchor");
  }
  return 1;
}

static int l_run_id(lua_State *L) {
  char id[37];
  cp_audit_run_id(id);
  lua_pushstring(L, id);
  return 1;
}

static int l_timestamp(lua_State *L) {
  char ts[32];
  cp_audit_timestamp(ts);
  lua_pushstring(L, ts);
  return 1;
}

/* audit.sha256(s) -> hex. It fails only when memory runs out, and then
 * raises a memory error. */
static int l_sha256(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  char hex[65], *err = NULL;
  unsigned long before = cp_alloc_failures();
  if (cp_audit_sha256_hex(s, len, hex, &err)) {
    char msg[400]; /* copied out so that raising cannot leak err */
    int lost = err == NULL;
    snprintf(msg, sizeof msg, "%s", err ? err : "");
    free(err);
    if (lost || cp_alloc_failures() != before)
      return cp_lua_nomem(L, "hashing");
    return luaL_error(L, "%s", msg);
  }
  lua_pushstring(L, hex);
  return 1;
}

/* audit.sha256_file(path) -> hex | nil, err */
static int l_sha256_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  char hex[65], *err = NULL;
  unsigned long before = cp_alloc_failures();
  if (cp_audit_sha256_file(path, hex, &err))
    return fail_call(L, before, "hashing a file", err);
  lua_pushstring(L, hex);
  return 1;
}

static const luaL_Reg log_methods[] = {{"record", l_record},
                                       {"sync", l_sync},
                                       {"close", l_close},
                                       {"add_secret", l_add_secret},
                                       {"set_context", l_set_context},
                                       {"info", l_info},
                                       {"head", l_head},
                                       {NULL, NULL}};

static const luaL_Reg log_meta[] = {{"__gc", l_gc},
                                    {"__close", l_release},
                                    {"__tostring", l_tostring},
                                    {NULL, NULL}};

static const luaL_Reg audit_fns[] = {
    {"open", l_open},     {"verify", l_verify},
    {"run_id", l_run_id}, {"timestamp", l_timestamp},
    {"sha256", l_sha256}, {"sha256_file", l_sha256_file},
    {NULL, NULL}};

int luaopen_cogpipe_audit(lua_State *L) {
  luaL_newmetatable(L, LOG_MT);
  luaL_setfuncs(L, log_meta, 0);
  luaL_newlib(L, log_methods);
  lua_setfield(L, -2, "__index");
  lua_pop(L, 1);
  luaL_newlib(L, audit_fns);
  return 1;
}
