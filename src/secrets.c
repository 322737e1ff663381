/*
 * secrets.c -- the secret registry and redaction (see secrets.h). One pass
 * over the text, no regular expressions; never logs or returns a secret
 * except inside the caller's own input.
 */
#include "secrets.h"

#include <ctype.h>
#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "json.h"

typedef struct secret {
  char *v; /* owned */
  size_t len;
} secret;

struct cp_secrets {
  secret *items; /* longest first, so a secret containing another wins */
  size_t n, cap;
};

cp_secrets *cp_secrets_new(void) { return cp_calloc(1, sizeof(cp_secrets)); }

void cp_secrets_free(cp_secrets *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    /* wipe: the memory may be reused by something that gets printed */
    memset(s->items[i].v, 0, s->items[i].len);
    free(s->items[i].v);
  }
  free(s->items);
  free(s);
}

size_t cp_secrets_count(const cp_secrets *s) { return s ? s->n : 0; }

/* 0, or -1 when out of memory (the registry is as it was). */
static int insert(cp_secrets *s, const char *v, size_t len) {
  size_t at = s->n;
  for (size_t i = 0; i < s->n; i++) {
    if (s->items[i].len == len && memcmp(s->items[i].v, v, len) == 0) return 0;
    if (s->items[i].len < len && at == s->n) at = i;
  }
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 8;
    secret *items = cp_reallocarray(s->items, cap, sizeof *items);
    if (!items) return -1;
    s->items = items;
    s->cap = cap;
  }
  char *copy = cp_strndup(v, len);
  if (!copy) return -1;
  memmove(&s->items[at + 1], &s->items[at], (s->n - at) * sizeof *s->items);
  s->items[at].v = copy;
  s->items[at].len = len;
  s->n++;
  return 0;
}

static int unreserved(unsigned char c) {
  return isalnum(c) || c == '-' || c == '.' || c == '_' || c == '~';
}

/* The forms a value takes in a form body or URL: %XX, and '+' for space.
 * 0, or -1 when out of memory. */
static int add_encoded(cp_secrets *s, const char *v, size_t len, int plus) {
  static const char hex[] = "0123456789ABCDEF";
  cp_buf b = CP_BUF_INIT;
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)v[i];
    if (unreserved(c)) {
      cp_buf_addc(&b, (char)c);
    } else if (plus && c == ' ') {
      cp_buf_addc(&b, '+');
    } else {
      char e[3] = {'%', hex[c >> 4], hex[c & 15]};
      cp_buf_add(&b, e, 3);
    }
  }
  int rc = cp_buf_ok(&b) ? 0 : -1;
  if (rc == 0 && (b.len != len || memcmp(b.data, v, len) != 0))
    rc = insert(s, b.data, b.len);
  if (b.data) memset(b.data, 0, b.cap);
  cp_buf_free(&b);
  return rc;
}

int cp_secret_add(cp_secrets *s, const char *v, size_t len) {
  if (len < CP_SECRET_MIN) return -1;
  int rc = insert(s, v, len);
  if (rc == 0) rc = add_encoded(s, v, len, 0);
  if (rc == 0 && memchr(v, ' ', len)) rc = add_encoded(s, v, len, 1);
  cp_buf j = CP_BUF_INIT;
  if (rc == 0 && cp_json_add_string(&j, v, len) == 0) {
    if (!cp_buf_ok(&j)) rc = -1;
    else if (j.len - 2 != len) rc = insert(s, j.data + 1, j.len - 2); /* no quotes */
  }
  if (j.data) memset(j.data, 0, j.cap);
  cp_buf_free(&j);
  return rc ? -2 : 0;
}

/* ---- names ------------------------------------------------------------------
 */

static const char *const secret_names[] = {
    "secret",      "secrets",    "password",      "passwd",
    "passphrase",  "token",      "access_token",  "refresh_token",
    "id_token",    "auth_token", "api_key",       "apikey",
    "x_api_key",   "api_secret", "authorization", "proxy_authorization",
    "cookie",      "set_cookie", "client_secret", "webhook_secret",
    "private_key", "secret_key", "signing_key",   "credentials",
    "bearer",      NULL};
static const char *const secret_suffixes[] = {
    "_secret",  "_secrets", "_password",    "_token",
    "_api_key", "_apikey",  "_private_key", NULL};

/* Header names whose whole value is a credential, wherever "Name:" shows. */
static const char *const secret_headers[] = {
    "authorization", "proxy-authorization", "x-api-key",
    "cookie",        "set-cookie",          NULL};

static size_t normalize(const char *name, size_t len, char *out, size_t cap) {
  if (len >= cap) return 0;
  for (size_t i = 0; i < len; i++) {
    char c = (char)tolower((unsigned char)name[i]);
    out[i] = c == '-' ? '_' : c;
  }
  out[len] = '\0';
  return len;
}

int cp_secret_field(const char *name, size_t len) {
  char n[64];
  if (!normalize(name, len, n, sizeof n)) return 0;
  for (int i = 0; secret_names[i]; i++)
    if (strcmp(n, secret_names[i]) == 0) return 1;
  for (int i = 0; secret_suffixes[i]; i++) {
    size_t sl = strlen(secret_suffixes[i]);
    if (len > sl && strcmp(n + len - sl, secret_suffixes[i]) == 0) return 1;
  }
  return 0;
}

/* ---- redaction
 * ---------------------------------------------------------------- */

static int word_char(unsigned char c) {
  return isalnum(c) || c == '_' || c == '-' || c == '.';
}

static int token_char(unsigned char c) {
  return isalnum(c) || strchr("-._~+/=", c) != NULL;
}

/* Case-insensitive prefix test of p[0..n) against the lower-case word w. */
static int starts_with(const char *p, size_t n, const char *w) {
  size_t wl = strlen(w);
  if (n < wl) return 0;
  for (size_t i = 0; i < wl; i++)
    if (tolower((unsigned char)p[i]) != w[i]) return 0;
  return 1;
}

static size_t skip_space(const char *p, size_t i, size_t n) {
  while (i < n && (p[i] == ' ' || p[i] == '\t'))
    i++;
  return i;
}

static size_t match_registered(const cp_secrets *s, const char *p, size_t n) {
  if (!s) return 0;
  for (size_t k = 0; k < s->n; k++) {
    const secret *e = &s->items[k];
    if (e->len <= n && e->v[0] == p[0] && memcmp(e->v, p, e->len) == 0)
      return e->len;
  }
  return 0;
}

/* "Authorization: ...", "X-API-Key: ...": returns the bytes up to and
 * including the value's start, and sets *end to the end of the line. */
static size_t match_header(const char *p, size_t n, size_t *end) {
  for (int k = 0; secret_headers[k]; k++) {
    size_t hl = strlen(secret_headers[k]);
    if (!starts_with(p, n, secret_headers[k])) continue;
    size_t i = skip_space(p, hl, n);
    if (i >= n || p[i] != ':') continue;
    i = skip_space(p, i + 1, n);
    size_t e = i;
    while (e < n && p[e] != '\r' && p[e] != '\n')
      e++;
    if (e == i) continue;
    *end = e;
    return i;
  }
  return 0;
}

/* "Bearer xyz", "Basic xyz": the scheme and its space are kept; the
 * credential must look like one (8+ characters, not a plain word). */
static size_t match_scheme(const char *p, size_t n, size_t *end) {
  static const char *const schemes[] = {"bearer", "basic", NULL};
  for (int k = 0; schemes[k]; k++) {
    size_t sl = strlen(schemes[k]);
    if (!starts_with(p, n, schemes[k]) || sl >= n || p[sl] != ' ') continue;
    size_t i = skip_space(p, sl, n);
    size_t e = i;
    int digit = 0, upper = 0, lower = 0, punct = 0;
    while (e < n && token_char((unsigned char)p[e])) {
      unsigned char c = (unsigned char)p[e++];
      digit |= isdigit(c) != 0;
      upper |= isupper(c) != 0;
      lower |= islower(c) != 0;
      punct |= !isalnum(c);
    }
    /* "a basic example" is prose; a credential is long and mixed */
    if (e - i < 8 || !(digit || punct || (upper && lower))) continue;
    *end = e;
    return i;
  }
  return 0;
}

/* A secret-named `name=value` (form, query) or `"name": "value"` (JSON in
 * text). quoted says a '"' opened the name. */
static size_t match_pair(const char *p, size_t n, int quoted, size_t *end) {
  size_t w = 0;
  while (w < n && word_char((unsigned char)p[w]))
    w++;
  if (w == 0 || !cp_secret_field(p, w)) return 0;
  size_t i = w;
  if (quoted) {
    if (i >= n || p[i] != '"') return 0;
    i = skip_space(p, i + 1, n);
    if (i >= n || p[i] != ':') return 0;
    i = skip_space(p, i + 1, n);
    if (i >= n || p[i] != '"') return 0;
    size_t e = ++i;
    while (e < n && p[e] != '"')
      e += (p[e] == '\\' && e + 1 < n) ? 2 : 1;
    if (e > n) e = n;
    if (e == i) return 0;
    *end = e;
    return i;
  }
  if (i >= n || p[i] != '=') return 0;
  size_t e = ++i;
  while (e < n && !strchr("&; \t\r\n,\"'", p[e]))
    e++;
  if (e == i) return 0;
  *end = e;
  return i;
}

size_t cp_secret_redact(const cp_secrets *s, const char *in, size_t len,
                        cp_buf *out) {
  size_t count = 0;
  size_t i = 0;
  while (i < len) {
    const char *p = in + i;
    size_t n = len - i;
    size_t m = match_registered(s, p, n);
    if (m) {
      cp_buf_adds(out, CP_REDACTED);
      i += m;
      count++;
      continue;
    }
    unsigned char before = i ? (unsigned char)in[i - 1] : ' ';
    if (!word_char(before) && isalpha((unsigned char)*p)) {
      size_t keep, end = 0;
      if ((keep = match_header(p, n, &end)) ||
          (keep = match_scheme(p, n, &end)) ||
          (keep = match_pair(p, n, before == '"', &end))) {
        cp_buf_add(out, p, keep);
        cp_buf_adds(out, CP_REDACTED);
        i += end;
        count++;
        continue;
      }
    }
    cp_buf_addc(out, *p);
    i++;
  }
  return count;
}

/* ---- per runtime
 * ---------------------------------------------------------------- */

#define REG_KEY "cogpipe.secrets.registry"

static int registry_gc(lua_State *L) {
  cp_secrets **box = lua_touserdata(L, 1);
  cp_secrets_free(*box);
  *box = NULL;
  return 0;
}

cp_secrets *cp_secrets_of(lua_State *L) {
  lua_getfield(L, LUA_REGISTRYINDEX, REG_KEY);
  cp_secrets **box = lua_touserdata(L, -1);
  lua_pop(L, 1);
  if (box && *box) return *box;
  /* the userdata exists before the registry is allocated, so an error
   * raised here leaks nothing */
  box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = NULL;
  lua_createtable(L, 0, 1);
  lua_pushcfunction(L, registry_gc);
  lua_setfield(L, -2, "__gc");
  lua_setmetatable(L, -2);
  lua_pushvalue(L, -1);
  lua_setfield(L, LUA_REGISTRYINDEX, REG_KEY); /* before C memory exists */
  *box = cp_secrets_new(); /* owned by the userdata; freed by its __gc */
  lua_pop(L, 1);
  if (!*box) luaL_error(L, "out of memory while creating the secret registry");
  return *box;
}
