/*
 * lua_http.c -- the cogpipe.http Lua module (luaopen_cogpipe_http): requests
 * that suspend the calling task until http.c has the answer, limiters, and
 * form encoding. Misuse raises; failures of the network or the server
 * return nil, err. Never puts a header value, body or query in an error.
 *
 *   local http = require("cogpipe").http
 *   local resp, err = http.request{
 *     method = "POST",                  -- default: GET, or POST with a body
 *     url = "https://api.example/new/v2.0/...",
 *     headers = {["X-Trace"] = "1"},    -- name -> string or number
 *     query = {limit = 100, next = cursor},   -- appended to url, encoded
 *     -- at most one body:
 *     body = "raw bytes",               -- sent as is
 *     json = {text = "hi", slots = cp.json.array()},  -- application/json
 *     form = {grant_type = "client_credentials"},     -- x-www-form-urlencoded
 *     multipart = {{name = "metadata", value = "{...}",
 *                   content_type = "application/json"},
 *                  {name = "dataset", file = "/path/lines.txt",
 *                   filename = "lines.txt", content_type = "text/plain"}},
 *     timeout = 300,          -- seconds for the whole request, retries and
 *                             -- the waits between them included, counted
 *                             -- from when it first goes on the wire
 *     attempt_timeout = nil,  -- seconds one attempt may take (nil: no own
 *                             -- limit), connect_timeout = 10 (a connection)
 *     ca_file = "ca.pem", insecure = false, -- TLS verification
 *     retry = {tries = 8, base = 0.5, cap = 30, max_wait = 300,
 *              idempotent = nil},        -- or false (no retry), or a number
 *     limiter = http.limiter{rate = 5, burst = 5, max_in_flight = 8},
 *     auth = require("cogpipe.auth").api_key{key = env("KEY")},
 *   }
 *   -- resp.status, resp.headers (lower-case names; repeated ones joined
 *   -- with ", "), resp.body, resp.attempts, resp.elapsed, resp:json()
 *   -- err: {kind = "http"|"resolve"|"connect"|"tls"|"timeout"|"network"
 *   --               |"io"|"usage"|"auth"|"memory"
 *   --               |"config",   -- config: libcurl refused an option
 *   --       message, status?, retryable, outcome? = "unknown", attempts,
 *   --       elapsed, body_excerpt?}
 *   -- A request that ran out of memory on the way ends like any failed
 *   -- request (kind "memory", outcome "unknown" when it may have been
 *   -- applied), and the run fails; misuse and memory running out while
 *   -- the request is being built raise.
 *
 * The README ("HTTP requests from a script") documents every option; the
 * option tables below are what is checked: any other key, or a value of
 * the wrong type, raises. A name that cannot be looked up is tried twice
 * at most (retry.c says why); every other retry stops when the timeout
 * would pass.
 *
 * An auth object is any value with a method perform(auth, send, opts): it
 * calls send(opts, headers, credential) -- a request that adds the given
 * headers, and the credential's header as it stands when the request goes
 * on the wire -- as often as it needs (a replay after a 401) and returns
 * its results. Credentials (http.credential{header = "Authorization"}) are
 * set, invalidated and failed by the auth object; the error of a request
 * sent with one carries credential_generation, and need_credential = true
 * when it was not sent because the credential had no value then.
 *
 * Every request passes the gate of its origin, shared by the whole runtime:
 * a 429 (or a 503 with Retry-After) holds back every request to that origin
 * until the time the server named, and http.origin_limit(url, {rate=,
 * burst=}) caps the rate of all requests to url's origin together.
 */
#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "buf.h"
#include "http.h"
#include "lua_http.h"
#include "lua_json.h"
#include "lutil.h"
#include "runtime.h"
#include "task.h"

#define LIMITER_MT "cogpipe.http.limiter"
#define CRED_MT "cogpipe.http.credential"
#define RESPONSE_MT "cogpipe.http.response"
#define EXCERPT_MAX 256
#define DEFAULT_TIMEOUT 300.0
#define DEFAULT_CONNECT_TIMEOUT 10.0

/* ---- form and query encoding ----------------------------------------------- */

/* application/x-www-form-urlencoded (RFC 6749 appendix B, HTML): unreserved
 * characters stay, space is '+' in a form body (plus = 1) and %20 in a
 * query, every other byte (& = + % and all non-ASCII) is %XX. */
static void add_escaped(cp_buf *b, const char *s, size_t n, int plus) {
  static const char hex[] = "0123456789ABCDEF";
  cp_buf_reserve(b, n * 3);
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (isalnum(ch) || ch == '-' || ch == '.' || ch == '_' || ch == '~') {
      cp_buf_addc(b, (char)ch);
    } else if (ch == ' ' && plus) {
      cp_buf_addc(b, '+');
    } else {
      char esc[3] = {'%', hex[ch >> 4], hex[ch & 15]};
      cp_buf_add(b, esc, 3);
    }
  }
}

/* The value at the top of the stack as text; NULL for a type a form cannot
 * carry. Never raises (numbers convert in place, which is fine for a value
 * fetched onto the stack). */
static const char *form_text(lua_State *L, size_t *n) {
  switch (lua_type(L, -1)) {
  case LUA_TSTRING:
  case LUA_TNUMBER:
    return lua_tolstring(L, -1, n);
  case LUA_TBOOLEAN:
    *n = lua_toboolean(L, -1) ? 4 : 5;
    return lua_toboolean(L, -1) ? "true" : "false";
  default:
    return NULL;
  }
}

/* Pushes a sorted list of the string keys of the table at idx, raising
 * (before anything is allocated in C) for other keys and for values that
 * are not strings, numbers, booleans or lists of those. */
static void push_form_keys(lua_State *L, int idx, const char *what) {
  idx = lua_absindex(L, idx);
  lua_newtable(L);
  lua_Integer n = 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING)
      luaL_error(L, "%s keys must be strings (got %s)", what,
                 luaL_typename(L, -2));
    int list = lua_type(L, -1) == LUA_TTABLE;
    lua_Integer count = list ? (lua_Integer)lua_rawlen(L, -1) : 1;
    for (lua_Integer j = 1; j <= count; j++) {
      size_t vn;
      if (list) lua_rawgeti(L, -1, j);
      else lua_pushvalue(L, -1);
      if (!form_text(L, &vn))
        luaL_error(L, "%s field '%s' must be a string, number, boolean or a "
                      "list of them (got %s)",
                   what, lua_tostring(L, -3), luaL_typename(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
    lua_pushvalue(L, -1);
    lua_rawseti(L, -3, ++n);
  }
  lua_getglobal(L, "table");
  lua_getfield(L, -1, "sort");
  lua_remove(L, -2);
  lua_pushvalue(L, -2);
  lua_call(L, 1, 0);
}

/* Appends the table at idx, whose keys push_form_keys checked and left at
 * keys, as key=value pairs joined by '&'. */
static void add_form(lua_State *L, int idx, int keys, cp_buf *b, int plus) {
  idx = lua_absindex(L, idx);
  keys = lua_absindex(L, keys);
  lua_Integer nkeys = (lua_Integer)lua_rawlen(L, keys);
  int first = 1;
  for (lua_Integer i = 1; i <= nkeys; i++) {
    lua_rawgeti(L, keys, i);
    size_t kn;
    const char *key = lua_tolstring(L, -1, &kn);
    lua_pushvalue(L, -1);
    lua_rawget(L, idx);
    int list = lua_type(L, -1) == LUA_TTABLE;
    lua_Integer count = list ? (lua_Integer)lua_rawlen(L, -1) : 1;
    for (lua_Integer j = 1; j <= count; j++) {
      if (list) lua_rawgeti(L, -1, j);
      else lua_pushvalue(L, -1);
      size_t vn = 0;
      const char *v = form_text(L, &vn);
      if (!first) cp_buf_addc(b, '&');
      first = 0;
      add_escaped(b, key, kn, plus);
      cp_buf_addc(b, '=');
      add_escaped(b, v, vn, plus);
      lua_pop(L, 1);
    }
    lua_pop(L, 2);
  }
}

/* http.form_encode(t) -> "a=1&b=x+y": the body a `form =` request sends. */
static int l_form_encode(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  push_form_keys(L, 1, "form");
  cp_buf *b = cp_lua_newbuf(L);
  add_form(L, 1, -2, b, 1);
  if (!cp_buf_ok(b)) return cp_lua_nomem(L, "encoding a form");
  lua_pushlstring(L, b->data ? b->data : "", b->len);
  return 1;
}

/* ---- options -------------------------------------------------------------------- */

/* The options each table-taking function accepts, described once: a key
 * not listed, or a value of another type or out of range, is a programming
 * error and raises, naming the option and the one probably meant -- an
 * option ignored in silence (retries = 0 for retry = false) would change
 * what a script does without a word. */
typedef enum opt_type {
  OPT_STRING,
  OPT_NUMBER,  /* min..max */
  OPT_INTEGER, /* min..max, a whole number */
  OPT_BOOLEAN,
  OPT_TABLE,
  OPT_ANY,    /* checked where it is used (json, auth) */
  OPT_RETRY,  /* false, true, a number of tries or a table (retry_opts) */
  OPT_LIMITER /* an http.limiter */
} opt_type;

typedef struct opt_def {
  const char *name;
  opt_type type;
  double min, max;
} opt_def;

#define SECONDS 0.001, 1e9
static const opt_def request_opts[] = {{"url", OPT_STRING, 0, 0},
                                       {"method", OPT_STRING, 0, 0},
                                       {"headers", OPT_TABLE, 0, 0},
                                       {"query", OPT_TABLE, 0, 0},
                                       {"body", OPT_STRING, 0, 0},
                                       {"json", OPT_ANY, 0, 0},
                                       {"form", OPT_TABLE, 0, 0},
                                       {"multipart", OPT_TABLE, 0, 0},
                                       {"timeout", OPT_NUMBER, SECONDS},
                                       {"attempt_timeout", OPT_NUMBER, SECONDS},
                                       {"connect_timeout", OPT_NUMBER, SECONDS},
                                       {"ca_file", OPT_STRING, 0, 0},
                                       {"insecure", OPT_BOOLEAN, 0, 0},
                                       {"retry", OPT_RETRY, 0, 0},
                                       {"limiter", OPT_LIMITER, 0, 0},
                                       {"auth", OPT_ANY, 0, 0},
                                       {NULL, OPT_ANY, 0, 0}};
static const opt_def retry_opts[] = {
    {"tries", OPT_INTEGER, 1, 100},    {"base", OPT_NUMBER, 0, 1e9},
    {"cap", OPT_NUMBER, 0, 1e9},       {"max_wait", OPT_NUMBER, 0, 1e9},
    {"idempotent", OPT_BOOLEAN, 0, 0}, {NULL, OPT_ANY, 0, 0}};
static const opt_def limiter_opts[] = {{"rate", OPT_NUMBER, 0, 1e9},
                                       {"burst", OPT_NUMBER, 1, 1e9},
                                       {"max_in_flight", OPT_INTEGER, 0, 1e9},
                                       {NULL, OPT_ANY, 0, 0}};
static const opt_def origin_opts[] = {{"rate", OPT_NUMBER, 0, 1e9},
                                      {"burst", OPT_NUMBER, 1, 1e9},
                                      {NULL, OPT_ANY, 0, 0}};
static const opt_def credential_opts[] = {{"header", OPT_STRING, 0, 0},
                                          {NULL, OPT_ANY, 0, 0}};
static const opt_def part_opts[] = {
    {"name", OPT_STRING, 0, 0},         {"value", OPT_STRING, 0, 0},
    {"file", OPT_STRING, 0, 0},         {"filename", OPT_STRING, 0, 0},
    {"content_type", OPT_STRING, 0, 0}, {NULL, OPT_ANY, 0, 0}};

/* Names other HTTP clients use, and options that belong elsewhere. */
static const struct {
  const char *name, *hint;
} request_hints[] = {
    {"retries", "did you mean 'retry'? retry = false sends once"},
    {"max_retries", "did you mean 'retry'? retry = N allows N tries in all"},
    {"tries", "it belongs in retry = {tries = ...}"},
    {"base", "it belongs in retry = {base = ...}"},
    {"cap", "it belongs in retry = {cap = ...}"},
    {"max_wait", "it belongs in retry = {max_wait = ...}"},
    {"idempotent", "it belongs in retry = {idempotent = ...}"},
    {"rate", "it belongs to http.limiter{...}, passed as limiter ="},
    {"max_in_flight", "it belongs to http.limiter{...}, passed as limiter ="},
    {"params", "did you mean 'query'?"},
    {"data", "did you mean 'body', 'json' or 'form'?"},
    {"verify", "did you mean 'ca_file' or 'insecure'?"},
    {"proxy", "a proxy comes from the https_proxy, http_proxy and no_proxy "
              "environment variables"},
};

/* Optimal string alignment distance of two short names: swapping two
 * neighbours (tiemout) is one edit, as typing makes it. */
static size_t distance(const char *a, const char *b) {
  enum { MAX = 40 };
  size_t n = strlen(a), m = strlen(b);
  if (n > MAX || m > MAX) return (size_t)-1;
  size_t d[MAX + 1][MAX + 1];
  for (size_t i = 0; i <= n; i++) d[i][0] = i;
  for (size_t j = 0; j <= m; j++) d[0][j] = j;
  for (size_t i = 1; i <= n; i++)
    for (size_t j = 1; j <= m; j++) {
      size_t best = d[i - 1][j - 1] + (a[i - 1] != b[j - 1]);
      if (d[i - 1][j] + 1 < best) best = d[i - 1][j] + 1;
      if (d[i][j - 1] + 1 < best) best = d[i][j - 1] + 1;
      if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] &&
          d[i - 2][j - 2] + 1 < best)
        best = d[i - 2][j - 2] + 1;
      d[i][j] = best;
    }
  return d[n][m];
}

/* The known name k was probably meant to be, or NULL: one near enough to
 * be a typo, or one that k starts with or that starts with k (timeout_ms,
 * insecure_skip_verify). */
static const char *nearest(const char *k, const opt_def *defs) {
  size_t len = strlen(k), best_d = (size_t)-1;
  const char *best = NULL;
  size_t near = len / 3 > 3 ? 3 : len / 3 < 1 ? 1 : len / 3;
  for (const opt_def *d = defs; d->name; d++) {
    size_t dn = strlen(d->name), shorter = dn < len ? dn : len;
    size_t dist = distance(k, d->name);
    int prefix = shorter >= 4 && strncmp(k, d->name, shorter) == 0;
    if ((dist <= near || prefix) && dist < best_d) {
      best = d->name;
      best_d = dist;
    }
  }
  return best;
}

static void unknown_option(lua_State *L, const char *what, const char *k,
                           const opt_def *defs) {
  if (defs == request_opts)
    for (size_t i = 0; i < sizeof request_hints / sizeof *request_hints; i++)
      if (strcmp(k, request_hints[i].name) == 0)
        luaL_error(L, "%s: unknown option '%s' (%s)", what, k,
                   request_hints[i].hint);
  const char *near = nearest(k, defs);
  if (near)
    luaL_error(L, "%s: unknown option '%s' (did you mean '%s'?)", what, k,
               near);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (const opt_def *d = defs; d->name; d++) {
    if (d != defs) luaL_addstring(&b, ", ");
    luaL_addstring(&b, d->name);
  }
  luaL_pushresult(&b);
  luaL_error(L, "%s: unknown option '%s' (known: %s)", what, k,
             lua_tostring(L, -1));
}

static const char *type_wanted(const opt_def *d) {
  switch (d->type) {
  case OPT_STRING: return "a string";
  case OPT_NUMBER: return "a number";
  case OPT_INTEGER: return "a whole number";
  case OPT_BOOLEAN: return "true or false";
  case OPT_TABLE: return "a table";
  case OPT_RETRY: return "false, true, a number of tries or a table";
  case OPT_LIMITER: return "an http.limiter";
  case OPT_ANY: break;
  }
  return "a value";
}

/* Raises unless the value at idx suits d. */
static void check_value(lua_State *L, int idx, const char *what,
                        const opt_def *d) {
  int t = lua_type(L, idx), ok = 1;
  switch (d->type) {
  case OPT_STRING: ok = t == LUA_TSTRING; break;
  case OPT_NUMBER: ok = t == LUA_TNUMBER; break;
  case OPT_INTEGER:
    ok = t == LUA_TNUMBER &&
         lua_tonumber(L, idx) == floor(lua_tonumber(L, idx));
    break;
  case OPT_BOOLEAN: ok = t == LUA_TBOOLEAN; break;
  case OPT_TABLE: ok = t == LUA_TTABLE; break;
  case OPT_RETRY:
    ok = t == LUA_TBOOLEAN || t == LUA_TNUMBER || t == LUA_TTABLE;
    break;
  case OPT_LIMITER: ok = luaL_testudata(L, idx, LIMITER_MT) != NULL; break;
  case OPT_ANY: break;
  }
  if (!ok && t == LUA_TNUMBER)
    luaL_error(L, "%s: option '%s' must be %s (got %s)", what, d->name,
               type_wanted(d), lua_tostring(L, idx));
  if (!ok)
    luaL_error(L, "%s: option '%s' must be %s (got %s)", what, d->name,
               type_wanted(d), luaL_typename(L, idx));
  if (d->type == OPT_NUMBER || d->type == OPT_INTEGER) {
    double v = lua_tonumber(L, idx);
    if (!(v >= d->min) || v > d->max) {
      char range[64]; /* lua_pushfstring has no %g */
      if (d->max >= 1e9) snprintf(range, sizeof range, "at least %g", d->min);
      else snprintf(range, sizeof range, "from %g to %g", d->min, d->max);
      luaL_error(L, "%s: option '%s' must be %s (got %s)", what, d->name, range,
                 lua_tostring(L, idx));
    }
  }
}

/* Raises for the first key of the table at idx that defs does not name,
 * then for the first value that does not suit its option. */
static void check_options(lua_State *L, int idx, const char *what,
                          const opt_def *defs) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (lua_type(L, -1) != LUA_TSTRING)
      luaL_error(L,
                 "%s: options are given by name (name = value), not by "
                 "position (got a %s key)",
                 what, luaL_typename(L, -1));
    const char *k = lua_tostring(L, -1);
    const opt_def *d = defs;
    while (d->name && strcmp(d->name, k) != 0) d++;
    if (!d->name) unknown_option(L, what, k, defs);
  }
  for (const opt_def *d = defs; d->name; d++) {
    if (lua_getfield(L, idx, d->name) != LUA_TNIL) check_value(L, -1, what, d);
    lua_pop(L, 1);
  }
}
#undef SECONDS

/* ---- limiters ------------------------------------------------------------------- */

typedef struct limiter_box {
  cp_http_limiter *l; /* one reference; NULL once closed */
  double rate, burst;
  int max_in_flight;
} limiter_box;

static limiter_box *check_limiter(lua_State *L, int idx) {
  limiter_box *box = luaL_checkudata(L, idx, LIMITER_MT);
  if (!box->l) luaL_argerror(L, idx, "limiter is closed");
  return box;
}

static double opt_number_field(lua_State *L, int t, const char *k, double dflt,
                               double min) {
  lua_getfield(L, t, k);
  double v = dflt;
  if (!lua_isnil(L, -1)) {
    if (!lua_isnumber(L, -1))
      luaL_error(L, "field '%s' must be a number (got %s)", k,
                 luaL_typename(L, -1));
    v = lua_tonumber(L, -1);
    if (!(v >= min) || v > 1e9)
      luaL_error(L, "field '%s' out of range: %f", k, v);
  }
  lua_pop(L, 1);
  return v;
}

/* http.limiter{rate = 5, burst = 5, max_in_flight = 8}: rate in requests a
 * second (nil: no rate limit), burst (default: max(1, rate)), max_in_flight
 * (nil: unlimited). Pass it as `limiter =` to every request of a tenant. */
static int l_limiter(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_options(L, 1, "http.limiter", limiter_opts);
  double rate = opt_number_field(L, 1, "rate", 0, 0);
  double burst = opt_number_field(L, 1, "burst", rate >= 1 ? rate : 1, 1);
  double mif = opt_number_field(L, 1, "max_in_flight", 0, 0);
  if (rate == 0 && mif == 0)
    luaL_error(L, "http.limiter: a limiter needs rate or max_in_flight");
  limiter_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->l = NULL;
  luaL_setmetatable(L, LIMITER_MT);
  box->l = cp_http_limiter_new(rate, burst, (int)mif); /* box holds the ref */
  if (!box->l) return cp_lua_nomem(L, "creating a limiter");
  box->rate = rate;
  box->burst = burst;
  box->max_in_flight = (int)mif;
  return 1;
}

static int limiter_close(lua_State *L) {
  limiter_box *box = luaL_checkudata(L, 1, LIMITER_MT);
  /* Calls still waiting keep their own references. */
  cp_http_limiter_unref(box->l);
  box->l = NULL;
  return 0;
}

static int limiter_stats(lua_State *L) {
  limiter_box *box = check_limiter(L, 1);
  const cp_limiter *s = cp_http_limiter_state(box->l);
  lua_createtable(L, 0, 5);
  cp_lua_setnum(L, "rate", s->rate);
  cp_lua_setnum(L, "base_rate", s->base_rate);
  cp_lua_setint(L, "in_flight", s->in_flight);
  cp_lua_setint(L, "max_in_flight", s->window);
  cp_lua_setint(L, "waiting", (lua_Integer)cp_http_limiter_waiting(box->l));
  return 1;
}

static int limiter_tostring(lua_State *L) {
  limiter_box *box = luaL_checkudata(L, 1, LIMITER_MT);
  lua_pushfstring(L, "cogpipe.http.limiter(rate=%f/s, burst=%f, max_in_flight=%d%s)",
                  box->rate, box->burst, box->max_in_flight,
                  box->l ? "" : ", closed");
  return 1;
}

static int is_token(const char *s) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!isalnum((unsigned char)*s) && !strchr("!#$%&'*+-.^_`|~", *s)) return 0;
  return 1;
}

/* The runtime's HTTP client, or NULL with the reason in err: a broken
 * installation (a libcurl too old, one that cannot initialise or that
 * refuses an option of the client's). Raises a memory error when memory
 * was what it lacked. */
static cp_http *client_or_why(lua_State *L, char *err, size_t errlen) {
  unsigned long before = cp_alloc_failures();
  cp_http *h = cp_http_of(L, err, errlen);
  if (!h && cp_alloc_failures() != before) cp_lua_nomem(L, "starting libcurl");
  return h;
}

/* The runtime's HTTP client; raises when there is none. */
static cp_http *client(lua_State *L) {
  char err[300];
  cp_http *h = client_or_why(L, err, sizeof err);
  if (!h) luaL_error(L, "%s", err);
  return h;
}

/* ---- credentials ----------------------------------------------------------------- */

typedef struct cred_box {
  cp_http_cred *cr; /* one reference; NULL once closed */
} cred_box;

static cred_box *check_cred(lua_State *L, int idx) {
  cred_box *box = luaL_checkudata(L, idx, CRED_MT);
  if (!box->cr) luaL_argerror(L, idx, "credential is closed");
  return box;
}

/* http.credential{header = "Authorization"}: a header whose value requests
 * take when they go on the wire (see http.h). Auth objects own one and
 * pass it as send's third argument. */
static int l_credential(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_options(L, 1, "http.credential", credential_opts);
  if (lua_getfield(L, 1, "header") != LUA_TSTRING)
    luaL_error(L, "http.credential: header is required");
  const char *name = lua_tostring(L, -1);
  if (!is_token(name)) luaL_error(L, "http.credential: header must be an HTTP header name");
  cred_box *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->cr = NULL;
  luaL_setmetatable(L, CRED_MT);
  box->cr = cp_http_cred_new(name); /* box holds the ref */
  if (!box->cr) return cp_lua_nomem(L, "creating a credential");
  return 1;
}

/* cred:set(value [, expires_at]): expires_at on cogpipe.now()'s clock. */
static int cred_set(lua_State *L) {
  cred_box *box = check_cred(L, 1);
  size_t n;
  const char *v = luaL_checklstring(L, 2, &n);
  if (n == 0 || memchr(v, '\r', n) || memchr(v, '\n', n) || strlen(v) != n)
    luaL_argerror(L, 2, "a header value without line breaks or NUL expected");
  double exp = luaL_optnumber(L, 3, 0);
  if (cp_http_cred_set(box->cr, v, exp == HUGE_VAL ? 0 : exp) != 0)
    return cp_lua_nomem(L, "setting a credential");
  return 0;
}

/* cred:invalidate(generation): drops the value if it is still that one. */
static int cred_invalidate(lua_State *L) {
  cred_box *box = check_cred(L, 1);
  lua_Integer gen = luaL_checkinteger(L, 2);
  cp_http_cred_invalidate(box->cr, (unsigned)gen);
  return 0;
}

/* cred:fail(message): for good; requests waiting with it end unsent. */
static int cred_fail(lua_State *L) {
  cred_box *box = check_cred(L, 1);
  const char *msg = luaL_checkstring(L, 2);
  char err[300];
  cp_http_cred_fail(cp_http_of(L, err, sizeof err), box->cr, msg); /* none: no calls */
  return 0;
}

/* cred:state() -> {generation, valid, proven, failed}; never the value. */
static int cred_state(lua_State *L) {
  cred_box *box = check_cred(L, 1);
  cp_http_cred_state st;
  cp_http_cred_get(box->cr, &st);
  lua_createtable(L, 0, 4);
  cp_lua_setint(L, "generation", st.gen);
  cp_lua_setbool(L, "valid", st.has_value);
  cp_lua_setbool(L, "proven", st.proven);
  cp_lua_setbool(L, "failed", st.failed);
  return 1;
}

static int cred_close(lua_State *L) {
  cred_box *box = luaL_checkudata(L, 1, CRED_MT);
  cp_http_cred_unref(box->cr); /* calls still waiting keep their own */
  box->cr = NULL;
  return 0;
}

static int cred_tostring(lua_State *L) {
  luaL_checkudata(L, 1, CRED_MT);
  lua_pushliteral(L, "cogpipe.http.credential");
  return 1;
}

/* http.origin_limit(url, {rate =, burst =}): requests to url's origin, from
 * every tenant of the runtime, go no faster than rate (the lowest rate
 * given for an origin wins). */
static int l_origin_limit(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  luaL_checktype(L, 2, LUA_TTABLE);
  check_options(L, 2, "http.origin_limit", origin_opts);
  double rate = opt_number_field(L, 2, "rate", 0, 0);
  double burst = opt_number_field(L, 2, "burst", rate >= 1 ? rate : 1, 1);
  cp_http *h = client(L);
  int rc = cp_http_origin_limit(h, url, rate, burst);
  if (rc == -2) return cp_lua_nomem(L, "limiting an origin");
  if (rc) return luaL_argerror(L, 1, "not a URL");
  return 0;
}

/* http.origin_paused(url) -> seconds until url's origin takes requests. */
static int l_origin_paused(lua_State *L) {
  const char *url = luaL_checkstring(L, 1);
  cp_http *h = client(L);
  double left = cp_http_origin_paused(h, url);
  if (left < 0) return cp_lua_nomem(L, "looking up an origin");
  lua_pushnumber(L, left);
  return 1;
}

/* ---- responses -------------------------------------------------------------------- */

static int response_json(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_getfield(L, 1, "body");
  size_t n;
  const char *s = luaL_checklstring(L, -1, &n);
  return cp_lua_json_decode(L, s, n);
}

static void push_headers(lua_State *L, const cp_http_result *r) {
  lua_createtable(L, 0, (int)r->n_headers);
  for (size_t i = 0; i < r->n_headers; i++) {
    lua_getfield(L, -1, r->headers[i].name);
    if (lua_isnil(L, -1)) {
      lua_pop(L, 1);
      lua_pushstring(L, r->headers[i].value);
    } else {
      /* RFC 9110 5.3: repeated fields combine with commas */
      lua_pushfstring(L, "%s, %s", lua_tostring(L, -1), r->headers[i].value);
      lua_remove(L, -2);
    }
    lua_setfield(L, -2, r->headers[i].name);
  }
}

/* The first bytes of a body for an error table, cut on a UTF-8 boundary. */
static void push_excerpt(lua_State *L, const char *body, size_t len) {
  size_t n = len > EXCERPT_MAX ? EXCERPT_MAX : len;
  while (n > 0 && n < len && ((unsigned char)body[n] & 0xC0) == 0x80) n--;
  lua_pushlstring(L, body, n);
}

/* Pushes what request returns: resp, or nil and an error table. */
static int push_result(lua_State *L, const cp_http_result *r) {
  if (r->kind == CP_HTTP_MEMORY) cp_lua_note_oom(L, "sending an HTTP request");
  if (r->kind == CP_HTTP_OK) {
    lua_createtable(L, 0, 5);
    cp_lua_setint(L, "status", r->status);
    push_headers(L, r);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, r->body, r->body_len);
    lua_setfield(L, -2, "body");
    cp_lua_setint(L, "attempts", r->attempts);
    cp_lua_setnum(L, "elapsed", r->elapsed);
    if (r->cred_gen) cp_lua_setint(L, "credential_generation", r->cred_gen);
    luaL_setmetatable(L, RESPONSE_MT);
    return 1;
  }
  cp_lua_fail(L, cp_http_kind_name(r->kind), "%s", r->message);
  if (r->status) cp_lua_setint(L, "status", r->status);
  cp_lua_setbool(L, "retryable", r->retryable);
  if (r->unknown) cp_lua_setstr(L, "outcome", "unknown");
  cp_lua_setint(L, "attempts", r->attempts);
  cp_lua_setnum(L, "elapsed", r->elapsed);
  if (r->cred_gen) cp_lua_setint(L, "credential_generation", r->cred_gen);
  if (r->cred_missing) cp_lua_setbool(L, "need_credential", 1);
  if (r->status && r->body_len) {
    push_excerpt(L, r->body, r->body_len);
    lua_setfield(L, -2, "body_excerpt");
  }
  return 2;
}

/* ---- requests ----------------------------------------------------------------------- */

static int push_done(lua_State *L, void *data) {
  return push_result(L, data);
}

static void on_done(cp_http_call *c, const cp_http_result *r, void *data) {
  (void)c;
  cp_task_resume(data, push_done, (void *)r);
}

static void cancel_call(void *op) { cp_http_call_cancel(op); }


/* Raises unless the table at idx maps header names to strings or numbers
 * that cannot smuggle in another header line. */
static void check_headers(lua_State *L, int idx, const char *what) {
  idx = lua_absindex(L, idx);
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    if (lua_type(L, -2) != LUA_TSTRING || !is_token(lua_tostring(L, -2)))
      luaL_error(L, "%s: header names must be HTTP tokens", what);
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER)
      luaL_error(L, "%s: header '%s' must be a string or number (got %s)", what,
                 lua_tostring(L, -2), luaL_typename(L, -1));
    size_t n;
    const char *v = lua_tolstring(L, -1, &n);
    if (memchr(v, '\r', n) || memchr(v, '\n', n) || strlen(v) != n)
      luaL_error(L, "%s: header '%s' contains a line break or NUL", what,
                 lua_tostring(L, -2));
    lua_pop(L, 1);
  }
}

static int has_header(lua_State *L, int idx, const char *name) {
  if (idx == 0) return 0;
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    lua_pop(L, 1);
    if (strcasecmp(lua_tostring(L, -1), name) == 0) {
      lua_pop(L, 1);
      return 1;
    }
  }
  return 0;
}

static void add_headers(lua_State *L, cp_http_call *c, int idx, int skip) {
  lua_pushnil(L);
  while (lua_next(L, idx)) {
    const char *name = lua_tostring(L, -2);
    if (!has_header(L, skip, name)) {
      lua_pushfstring(L, "%s: %s", name, lua_tostring(L, -1));
      cp_http_call_header(c, lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    lua_pop(L, 1);
  }
}

typedef struct spec {
  const char *method;
  int url;      /* stack index of the URL with the query added */
  int headers;  /* stack index or 0 */
  int extra;    /* stack index or 0: headers an auth object adds */
  int body;     /* stack index of the body string or 0 */
  const char *content_type;
  int multipart; /* stack index or 0 */
  double timeout, attempt_timeout, connect_timeout;
  const char *ca_file;
  int insecure;
  cp_retry_policy retry;
  cp_http_limiter *limiter;
  cp_http_cred *cred;
} spec;

static int field(lua_State *L, int t, const char *k, int type, const char *tn) {
  int got = lua_getfield(L, t, k);
  if (got != LUA_TNIL && got != type)
    luaL_error(L, "http.request: field '%s' must be %s (got %s)", k, tn,
               luaL_typename(L, -1));
  return got != LUA_TNIL;
}

static void check_retry(lua_State *L, int opts, cp_retry_policy *p) {
  cp_retry_policy_default(p);
  int t = lua_getfield(L, opts, "retry");
  if (t == LUA_TNIL) {
  } else if (t == LUA_TBOOLEAN) {
    if (!lua_toboolean(L, -1)) p->tries = 1;
  } else if (t == LUA_TNUMBER) {
    lua_Number n = lua_tonumber(L, -1);
    if (!(n >= 1 && n <= 100) || n != floor(n))
      luaL_error(L,
                 "http.request: option 'retry' as a number is the tries in "
                 "all, a whole number from 1 to 100 (got %s; retry = "
                 "false sends once)",
                 lua_tostring(L, -1));
    p->tries = (int)n;
  } else if (t == LUA_TTABLE) {
    int r = lua_gettop(L);
    check_options(L, r, "http.request: retry", retry_opts);
    double tries = opt_number_field(L, r, "tries", p->tries, 1);
    if (tries > 100) luaL_error(L, "http.request: retry.tries must be 1..100");
    p->tries = (int)tries;
    p->base = opt_number_field(L, r, "base", p->base, 0);
    p->cap = opt_number_field(L, r, "cap", p->cap, 0);
    p->max_wait = opt_number_field(L, r, "max_wait", p->max_wait, 0);
    int it = lua_getfield(L, r, "idempotent");
    if (it == LUA_TBOOLEAN) p->idempotent = lua_toboolean(L, -1);
    else if (it != LUA_TNIL)
      luaL_error(L, "http.request: retry.idempotent must be a boolean");
    lua_pop(L, 1);
  } else {
    luaL_error(L, "http.request: retry must be false, a number or a table");
  }
  lua_pop(L, 1);
}

static void check_multipart(lua_State *L, int idx) {
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  if (n == 0) luaL_error(L, "http.request: multipart needs at least one part");
  for (lua_Integer i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TTABLE)
      luaL_error(L, "http.request: multipart[%d] must be a table", (int)i);
    int p = lua_gettop(L);
    check_options(L, p, lua_pushfstring(L, "http.request: multipart[%d]", (int)i),
                  part_opts);
    lua_pop(L, 1);
    int has_name = lua_getfield(L, p, "name") == LUA_TSTRING;
    int has_value = lua_getfield(L, p, "value") == LUA_TSTRING;
    int has_file = lua_getfield(L, p, "file") == LUA_TSTRING;
    lua_pop(L, 3);
    if (!has_name) luaL_error(L, "http.request: multipart[%d] needs a name", (int)i);
    if (has_value == has_file)
      luaL_error(L, "http.request: multipart[%d] needs exactly one of value, file",
                 (int)i);
    lua_pop(L, 1);
  }
}

/* Reads and checks every option, leaving the strings it needs on the stack
 * (so nothing in C is allocated yet and any raise leaks nothing). */
static void check_spec(lua_State *L, int opts, int extra, spec *s) {
  memset(s, 0, sizeof *s);
  if (!field(L, opts, "url", LUA_TSTRING, "a string"))
    luaL_error(L, "http.request: url is required");
  int url = lua_gettop(L);

  int nbodies = 0;
  if (field(L, opts, "body", LUA_TSTRING, "a string")) {
    nbodies++;
    s->body = lua_gettop(L);
  } else {
    lua_pop(L, 1);
  }
  if (lua_getfield(L, opts, "json") != LUA_TNIL) {
    nbodies++;
    int v = lua_gettop(L);
    cp_buf *b = cp_lua_newbuf(L);
    char *why = NULL;
    int rc = cp_lua_json_encode(L, v, b, &why);
    if (rc == CP_LUA_JSON_NOMEM) cp_lua_nomem(L, "encoding a request body");
    if (rc != 0) {
      char msg[1024];
      snprintf(msg, sizeof msg, "%s", why ? why : "cannot encode");
      free(why);
      luaL_error(L, "http.request: json: %s", msg);
    }
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_replace(L, v);
    lua_pop(L, 1); /* the buffer */
    s->body = lua_gettop(L);
    s->content_type = "Content-Type: application/json";
  } else {
    lua_pop(L, 1);
  }
  if (field(L, opts, "form", LUA_TTABLE, "a table")) {
    nbodies++;
    int f = lua_gettop(L);
    push_form_keys(L, f, "http.request: form");
    cp_buf *b = cp_lua_newbuf(L);
    add_form(L, f, -2, b, 1);
    if (!cp_buf_ok(b)) cp_lua_nomem(L, "encoding a request body");
    lua_pushlstring(L, b->data ? b->data : "", b->len);
    lua_replace(L, f);
    lua_pop(L, 2);
    s->body = f;
    s->content_type = "Content-Type: application/x-www-form-urlencoded";
  } else {
    lua_pop(L, 1);
  }
  if (field(L, opts, "multipart", LUA_TTABLE, "a list of parts")) {
    nbodies++;
    s->multipart = lua_gettop(L);
    check_multipart(L, s->multipart);
  } else {
    lua_pop(L, 1);
  }
  if (nbodies > 1)
    luaL_error(L, "http.request: give at most one of body, json, form, multipart");

  if (field(L, opts, "method", LUA_TSTRING, "a string")) {
    s->method = lua_tostring(L, -1);
    if (!is_token(s->method)) luaL_error(L, "http.request: bad method");
  } else {
    s->method = nbodies ? "POST" : "GET";
  }

  if (field(L, opts, "headers", LUA_TTABLE, "a table")) {
    s->headers = lua_gettop(L);
    check_headers(L, s->headers, "http.request");
  } else {
    lua_pop(L, 1);
  }
  if (extra) {
    check_headers(L, extra, "auth");
    s->extra = extra;
  }

  if (field(L, opts, "query", LUA_TTABLE, "a table")) {
    int q = lua_gettop(L);
    push_form_keys(L, q, "http.request: query");
    const char *u = lua_tostring(L, url);
    cp_buf *b = cp_lua_newbuf(L);
    cp_buf_adds(b, u);
    size_t before = b->len;
    cp_buf_addc(b, strchr(u, '?') ? '&' : '?');
    add_form(L, q, -2, b, 0);
    if (!cp_buf_ok(b)) cp_lua_nomem(L, "encoding a query");
    if (b->len == before + 1) b->len = before; /* empty query table */
    lua_pushlstring(L, b->data, b->len);
    lua_replace(L, url);
    lua_pop(L, 3);
  } else {
    lua_pop(L, 1);
  }
  s->url = url;

  s->timeout = opt_number_field(L, opts, "timeout", DEFAULT_TIMEOUT, 0.001);
  s->attempt_timeout = opt_number_field(L, opts, "attempt_timeout", 0, 0.001);
  s->connect_timeout =
      opt_number_field(L, opts, "connect_timeout", DEFAULT_CONNECT_TIMEOUT, 0.001);
  if (field(L, opts, "ca_file", LUA_TSTRING, "a string")) {
    s->ca_file = lua_tostring(L, -1); /* stays on the stack */
  } else {
    lua_pop(L, 1);
  }
  field(L, opts, "insecure", LUA_TBOOLEAN, "a boolean");
  s->insecure = lua_toboolean(L, -1);
  lua_pop(L, 1);
  check_retry(L, opts, &s->retry);
  if (lua_getfield(L, opts, "limiter") != LUA_TNIL)
    s->limiter = check_limiter(L, lua_gettop(L))->l; /* stays on the stack */
  else
    lua_pop(L, 1);
}

static void add_parts(lua_State *L, cp_http_call *c, int idx) {
  curl_mime *m = cp_http_call_mime(c);
  if (!m) return; /* the call fails as out of memory */
  lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, idx, i);
    int p = lua_gettop(L);
    curl_mimepart *part = curl_mime_addpart(m);
    if (!part) {
      cp_http_call_nomem(c);
      lua_settop(L, p - 1);
      return;
    }
    /* Each setter copies what it is given: refused, memory ran out. */
    lua_getfield(L, p, "name");
    if (curl_mime_name(part, lua_tostring(L, -1)) != CURLE_OK) cp_http_call_nomem(c);
    if (lua_getfield(L, p, "value") == LUA_TSTRING) {
      size_t vn;
      const char *v = lua_tolstring(L, -1, &vn);
      if (curl_mime_data(part, v, vn) != CURLE_OK) cp_http_call_nomem(c);
    }
    if (lua_getfield(L, p, "file") == LUA_TSTRING) {
      const char *path = lua_tostring(L, -1);
      /* Streamed from disk while sending; libcurl reopens it for a retry. */
      if (curl_mime_filedata(part, path) != CURLE_OK) {
        char msg[512];
        snprintf(msg, sizeof msg, "cannot read file '%s' of multipart part '%s'",
                 path, lua_tostring(L, -3));
        cp_http_call_fail(c, CP_HTTP_IO, msg);
      }
    }
    if (lua_getfield(L, p, "filename") == LUA_TSTRING &&
        curl_mime_filename(part, lua_tostring(L, -1)) != CURLE_OK)
      cp_http_call_nomem(c);
    if (lua_getfield(L, p, "content_type") == LUA_TSTRING &&
        curl_mime_type(part, lua_tostring(L, -1)) != CURLE_OK)
      cp_http_call_nomem(c);
    lua_settop(L, p - 1);
  }
}

/* A call being built: closing the guard (a raise while the call is filled
 * in, running out of memory) cancels the call unless it was started. */
typedef struct call_guard {
  cp_http_call *c;
} call_guard;

static int guard_close(lua_State *L) {
  call_guard *g = lua_touserdata(L, 1);
  if (g->c) cp_http_call_cancel(g->c);
  g->c = NULL;
  return 0;
}

static call_guard *push_guard(lua_State *L) {
  call_guard *g = lua_newuserdatauv(L, sizeof *g, 0);
  g->c = NULL;
  if (luaL_newmetatable(L, "cogpipe.http.guard")) {
    lua_pushcfunction(L, guard_close);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  lua_toclose(L, -1);
  return g;
}

/* request(opts [, extra_headers [, credential]]) without auth: checks,
 * builds the call, suspends the task; on_done resumes it with the result. */
static int send_request(lua_State *L, int opts, int extra, int cred) {
  cp_task *t = cp_task_current(L);
  spec s;
  check_spec(L, opts, extra, &s);
  s.cred = cred ? check_cred(L, cred)->cr : NULL;

  char why[300];
  cp_http *h = client_or_why(L, why, sizeof why);
  if (!h) { /* fails as a request whose options libcurl refused does */
    cp_lua_fail(L, cp_http_kind_name(CP_HTTP_CONFIG), "%s", why);
    cp_lua_setbool(L, "retryable", 0);
    cp_lua_setint(L, "attempts", 0);
    return 2;
  }

  /* From here on only memory can run out: the guard then cancels c. */
  call_guard *g = push_guard(L);
  cp_http_call *c = cp_http_call_new(h, s.method, lua_tostring(L, s.url));
  if (!c) return cp_lua_nomem(L, "preparing an HTTP request");
  g->c = c;
  if (s.headers) add_headers(L, c, s.headers, s.extra);
  if (s.extra) add_headers(L, c, s.extra, 0);
  if (s.content_type && !has_header(L, s.headers, "Content-Type"))
    cp_http_call_header(c, s.content_type);
  if (!has_header(L, s.headers, "User-Agent"))
    cp_http_call_header(c, "User-Agent: cogpipe/" CP_VERSION_STRING);
  if (s.body) {
    size_t n;
    const char *b = lua_tolstring(L, s.body, &n);
    char *copy = cp_malloc(n + 1); /* owned by the call from here */
    if (!copy) return cp_lua_nomem(L, "preparing an HTTP request");
    memcpy(copy, b, n);
    copy[n] = '\0';
    cp_http_call_body(c, copy, n);
  }
  if (s.multipart) add_parts(L, c, s.multipart);
  cp_http_call_timeouts(c, s.timeout, s.attempt_timeout, s.connect_timeout);
  cp_http_call_tls(c, s.ca_file, s.insecure);
  cp_http_call_retry(c, &s.retry);
  if (s.limiter) cp_http_call_limiter(c, s.limiter);
  if (s.cred) cp_http_call_cred(c, s.cred);
  g->c = NULL; /* the client owns it from here */
  cp_http_call_start(c, on_done, t);
  return cp_task_suspend(L, t, cancel_call, c);
}

/* send(opts [, headers [, credential]]): what auth objects call. */
static int l_send(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  check_options(L, 1, "http.send", request_opts);
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TTABLE);
  if (!lua_isnoneornil(L, 3)) check_cred(L, 3);
  lua_settop(L, 3);
  return send_request(L, 1, lua_isnil(L, 2) ? 0 : 2, lua_isnil(L, 3) ? 0 : 3);
}

static int after_auth(lua_State *L, int status, lua_KContext base) {
  (void)status;
  return lua_gettop(L) - (int)base;
}

static int l_request(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  check_options(L, 1, "http.request", request_opts);
  if (lua_getfield(L, 1, "auth") == LUA_TNIL) {
    lua_pop(L, 1);
    return send_request(L, 1, 0, 0);
  }
  /* auth:perform(send, opts) may yield (a token refresh it waits for) and
   * calls send itself; a continuation hands its results back. */
  if (!lua_istable(L, 2) && !lua_isuserdata(L, 2))
    luaL_argerror(L, 1, "auth must be an auth object (cogpipe.auth)");
  if (lua_getfield(L, 2, "perform") != LUA_TFUNCTION)
    luaL_argerror(L, 1, "auth must be an auth object with a perform method");
  lua_insert(L, 2); /* opts, perform, auth */
  lua_pushcfunction(L, l_send);
  lua_pushvalue(L, 1);
  lua_callk(L, 3, LUA_MULTRET, 1, after_auth);
  return after_auth(L, LUA_OK, 1);
}

static const luaL_Reg http_fns[] = {{"request", l_request},
                                    {"send", l_send},
                                    {"limiter", l_limiter},
                                    {"credential", l_credential},
                                    {"origin_limit", l_origin_limit},
                                    {"origin_paused", l_origin_paused},
                                    {"form_encode", l_form_encode},
                                    {NULL, NULL}};

static const luaL_Reg cred_methods[] = {{"set", cred_set},
                                        {"invalidate", cred_invalidate},
                                        {"fail", cred_fail},
                                        {"state", cred_state},
                                        {"close", cred_close},
                                        {NULL, NULL}};

static const luaL_Reg limiter_methods[] = {
    {"stats", limiter_stats}, {"close", limiter_close}, {NULL, NULL}};

int luaopen_cogpipe_http(lua_State *L) {
  if (luaL_newmetatable(L, LIMITER_MT)) {
    luaL_newlib(L, limiter_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, limiter_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, limiter_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, limiter_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, CRED_MT)) {
    luaL_newlib(L, cred_methods);
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, cred_close);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, cred_close);
    lua_setfield(L, -2, "__close");
    lua_pushcfunction(L, cred_tostring);
    lua_setfield(L, -2, "__tostring");
  }
  lua_pop(L, 1);
  if (luaL_newmetatable(L, RESPONSE_MT)) {
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, response_json);
    lua_setfield(L, -2, "json");
    lua_setfield(L, -2, "__index");
  }
  lua_pop(L, 1);
  luaL_newlib(L, http_fns);
  return 1;
}
