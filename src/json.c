/*
 * json.c -- strict JSON parser (RFC 8259) into an arena-owned tree, plus the
 * string and number writers the encoders share. It knows nothing of Lua;
 * lua_json.c converts. Numbers are never rounded: integers that do not fit
 * int64 and doubles that overflow are errors.
 */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 512
#define ARENA_BLOCK 65536

typedef struct block {
  struct block *next;
  size_t used, cap;
  max_align_t data[];
} block;

struct cp_json_doc {
  block *blocks;
  cp_json *root;
};

/* Where the parser is: the member key or item index at each level, so that
 * an error can name the path of what it is about. */
typedef struct seg {
  const char *key; /* NULL: an array item */
  size_t key_len, index;
} seg;

typedef struct parser {
  const char *s, *end, *p;
  cp_json_doc *doc;
  cp_json_error *err;
  int depth;
  cp_buf scratch; /* string unescaping and member/item collection */
  seg path[MAX_DEPTH + 2];
} parser;

/* NULL when out of memory (or n absurd). */
static void *arena_alloc(cp_json_doc *doc, size_t n) {
  if (n > SIZE_MAX / 2) return NULL;
  n = (n + sizeof(max_align_t) - 1) & ~(sizeof(max_align_t) - 1);
  block *b = doc->blocks;
  if (!b || b->cap - b->used < n) {
    size_t cap = n > ARENA_BLOCK ? n : ARENA_BLOCK;
    b = cp_malloc(sizeof(block) + cap); /* the doc's; cp_json_doc_free */
    if (!b) return NULL;
    b->cap = cap;
    b->used = 0;
    b->next = doc->blocks;
    doc->blocks = b;
  }
  void *p = (char *)b->data + b->used;
  b->used += n;
  return p;
}

static int fail(parser *ps, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(parser *ps, const char *at, const char *fmt, ...) {
  cp_json_error *e = ps->err;
  if (!e) return -1;
  e->offset = (size_t)(at - ps->s);
  e->line = 1;
  e->column = 1;
  for (const char *q = ps->s; q < at; q++) {
    if (*q == '\n') {
      e->line++;
      e->column = 1;
    } else {
      e->column++;
    }
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(e->message, sizeof e->message, fmt, ap);
  va_end(ap);
  return -1;
}

/* Fails the parse for want of memory: no position or text to blame. */
static int nomem(parser *ps) {
  int r = fail(ps, ps->p, "out of memory");
  if (ps->err) ps->err->out_of_memory = 1;
  return r;
}

/* The path of the value being parsed, e.g. $.examples[3].text. */
static void format_path(const parser *ps, char *out, size_t cap) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_adds(&b, "$");
  for (int i = 1; i <= ps->depth && i <= MAX_DEPTH; i++) {
    const seg *g = &ps->path[i];
    if (!g->key) {
      cp_buf_printf(&b, "[%zu]", g->index);
      continue;
    }
    int plain = g->key_len > 0;
    for (size_t k = 0; k < g->key_len && plain; k++) {
      char c = g->key[k];
      plain = c == '_' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
              (k > 0 && c >= '0' && c <= '9');
    }
    if (plain) {
      cp_buf_printf(&b, ".%.*s", (int)g->key_len, g->key);
    } else {
      cp_buf_adds(&b, "[");
      cp_json_add_string(&b, g->key, g->key_len);
      cp_buf_adds(&b, "]");
    }
  }
  snprintf(out, cap, "%s", cp_buf_ok(&b) && b.data ? b.data : "$ (path lost: out of memory)");
  cp_buf_free(&b);
}

/* Whether key is already a member of ms[0..n): a linear look for small
 * objects, a hash set past that, so a hostile object with a million keys
 * costs a million probes, not a million squared. */
typedef struct keyset {
  uint32_t *slots; /* member index + 1; 0 empty */
  size_t cap;
} keyset;

static uint64_t key_hash(const char *k, size_t n) {
  uint64_t h = 1469598103934665603ULL;
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)k[i]) * 1099511628211ULL;
  return h;
}

static int same_key(const cp_json_member *a, const char *k, size_t n) {
  return a->key_len == n && memcmp(a->key, k, n) == 0;
}

static void keyset_put(keyset *ks, const cp_json_member *ms, size_t i) {
  size_t mask = ks->cap - 1, j = key_hash(ms[i].key, ms[i].key_len) & mask;
  while (ks->slots[j]) j = (j + 1) & mask;
  ks->slots[j] = (uint32_t)(i + 1);
}

/* Adds member n (ms[n] filled in); returns 1 when its key was there, -1
 * when out of memory. */
static int keyset_add(keyset *ks, const cp_json_member *ms, size_t n) {
  const char *k = ms[n].key;
  size_t kl = ms[n].key_len;
  if (n < 16) {
    for (size_t i = 0; i < n; i++)
      if (same_key(&ms[i], k, kl)) return 1;
    return 0;
  }
  if ((n + 1) * 2 > ks->cap) {
    size_t cap = ks->cap ? ks->cap * 2 : 64;
    while ((n + 1) * 2 > cap) cap *= 2;
    uint32_t *slots = cp_calloc(cap, sizeof *slots);
    if (!slots) return -1;
    free(ks->slots);
    ks->slots = slots;
    ks->cap = cap;
    for (size_t i = 0; i < n; i++) keyset_put(ks, ms, i);
  }
  size_t mask = ks->cap - 1, j = key_hash(k, kl) & mask;
  for (; ks->slots[j]; j = (j + 1) & mask)
    if (same_key(&ms[ks->slots[j] - 1], k, kl)) return 1;
  ks->slots[j] = (uint32_t)(n + 1);
  return 0;
}

static void skip_ws(parser *ps) {
  while (ps->p < ps->end &&
         (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

/* NULL when out of memory (the parse has failed then). */
static cp_json *node(parser *ps, cp_json_type t, const char *at) {
  cp_json *v = arena_alloc(ps->doc, sizeof *v);
  if (!v) return nomem(ps), NULL;
  memset(v, 0, sizeof *v);
  v->type = t;
  v->offset = (size_t)(at - ps->s);
  return v;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(parser *ps, const char *q, unsigned *out) {
  if (ps->end - q < 4) return fail(ps, q, "truncated \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval((unsigned char)q[i]);
    if (h < 0) return fail(ps, q + i, "invalid hex digit in \\u escape");
    v = v * 16 + (unsigned)h;
  }
  *out = v;
  return 0;
}

static void put_utf8(cp_buf *b, unsigned cp) {
  char u[4];
  size_t n;
  if (cp < 0x80) {
    u[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    u[0] = (char)(0xC0 | (cp >> 6));
    u[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    u[0] = (char)(0xE0 | (cp >> 12));
    u[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    u[0] = (char)(0xF0 | (cp >> 18));
    u[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    u[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    u[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  cp_buf_add(b, u, n);
}

/* Length of the valid UTF-8 sequence at p (1..4), or 0 when invalid
 * (overlong forms, surrogates and code points past U+10FFFF included). */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
  unsigned c = p[0];
  if (c < 0x80) return 1;
  size_t n;
  unsigned min;
  if ((c & 0xE0) == 0xC0) {
    n = 2;
    min = 0x80;
    c &= 0x1F;
  } else if ((c & 0xF0) == 0xE0) {
    n = 3;
    min = 0x800;
    c &= 0x0F;
  } else if ((c & 0xF8) == 0xF0) {
    n = 4;
    min = 0x10000;
    c &= 0x07;
  } else {
    return 0;
  }
  if ((size_t)(end - p) < n) return 0;
  for (size_t i = 1; i < n; i++) {
    if ((p[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (p[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  return n;
}

/* Parses the string at ps->p (on its opening quote) into scratch. */
static int parse_string_raw(parser *ps) {
  const char *q = ps->p + 1;
  cp_buf_reset(&ps->scratch);
  for (;;) {
    const char *run = q;
    while (q < ps->end && *q != '"' && *q != '\\' && (unsigned char)*q >= 0x20 &&
           (unsigned char)*q < 0x80)
      q++;
    cp_buf_add(&ps->scratch, run, (size_t)(q - run));
    if (q >= ps->end) return fail(ps, ps->p, "unterminated string");
    unsigned char c = (unsigned char)*q;
    if (c == '"') {
      if (!cp_buf_ok(&ps->scratch)) return nomem(ps);
      ps->p = q + 1;
      return 0;
    }
    if (c < 0x20) return fail(ps, q, "control character in string");
    if (c >= 0x80) {
      size_t n = utf8_len((const unsigned char *)q, (const unsigned char *)ps->end);
      if (!n) return fail(ps, q, "invalid UTF-8 in string");
      cp_buf_add(&ps->scratch, q, n);
      q += n;
      continue;
    }
    /* backslash */
    if (++q >= ps->end) return fail(ps, q, "unterminated escape");
    switch (*q) {
    case '"': cp_buf_addc(&ps->scratch, '"'); break;
    case '\\': cp_buf_addc(&ps->scratch, '\\'); break;
    case '/': cp_buf_addc(&ps->scratch, '/'); break;
    case 'b': cp_buf_addc(&ps->scratch, '\b'); break;
    case 'f': cp_buf_addc(&ps->scratch, '\f'); break;
    case 'n': cp_buf_addc(&ps->scratch, '\n'); break;
    case 'r': cp_buf_addc(&ps->scratch, '\r'); break;
    case 't': cp_buf_addc(&ps->scratch, '\t'); break;
    case 'u': {
      unsigned cp;
      if (read_hex4(ps, q + 1, &cp)) return -1;
      q += 4;
      if (cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (ps->end - q < 7 || q[1] != '\\' || q[2] != 'u')
          return fail(ps, q, "unpaired surrogate in \\u escape");
        if (read_hex4(ps, q + 3, &lo)) return -1;
        if (lo < 0xDC00 || lo > 0xDFFF)
          return fail(ps, q, "unpaired surrogate in \\u escape");
        cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        q += 6;
      } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
        return fail(ps, q, "unpaired surrogate in \\u escape");
      }
      put_utf8(&ps->scratch, cp);
      break;
    }
    default: return fail(ps, q, "invalid escape '\\%c'", *q);
    }
    q++;
  }
}

/* NULL when out of memory (the parse has failed then). */
static const char *arena_str(parser *ps, size_t *len) {
  *len = ps->scratch.len;
  char *s = arena_alloc(ps->doc, ps->scratch.len + 1);
  if (!s) return nomem(ps), NULL;
  if (ps->scratch.len) memcpy(s, ps->scratch.data, ps->scratch.len);
  s[ps->scratch.len] = '\0';
  return s;
}

static cp_json *parse_value(parser *ps);

static cp_json *parse_number(parser *ps) {
  const char *start = ps->p, *q = ps->p;
  int is_int = 1;
  if (q < ps->end && *q == '-') q++;
  if (q >= ps->end) return fail(ps, start, "invalid number"), NULL;
  if (*q == '0') {
    q++;
  } else if (*q >= '1' && *q <= '9') {
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  } else {
    return fail(ps, start, "invalid number"), NULL;
  }
  if (q < ps->end && *q == '.') {
    is_int = 0;
    q++;
    if (q >= ps->end || *q < '0' || *q > '9')
      return fail(ps, q, "digit expected after '.'"), NULL;
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  }
  if (q < ps->end && (*q == 'e' || *q == 'E')) {
    is_int = 0;
    q++;
    if (q < ps->end && (*q == '+' || *q == '-')) q++;
    if (q >= ps->end || *q < '0' || *q > '9')
      return fail(ps, q, "digit expected in exponent"), NULL;
    while (q < ps->end && *q >= '0' && *q <= '9') q++;
  }
  char tmp[64];
  size_t n = (size_t)(q - start);
  if (n >= sizeof tmp) {
    if (is_int)
      return fail(ps, start, "integer out of range (beyond 64 bits)"), NULL;
    /* long mantissas are legal; strtod copes when given a NUL-terminated copy */
  }
  char *copy = n < sizeof tmp ? tmp : cp_malloc(n + 1);
  if (!copy) return nomem(ps), NULL;
  memcpy(copy, start, n);
  copy[n] = '\0';
  cp_json *v;
  errno = 0;
  if (is_int) {
    long long i = strtoll(copy, NULL, 10);
    if (errno == ERANGE) {
      fail(ps, start, "integer %s out of range (beyond 64 bits)", copy);
      v = NULL;
    } else {
      v = node(ps, CP_JSON_INT, start);
      if (v) v->u.i = i;
    }
  } else {
    double d = strtod(copy, NULL);
    if (errno == ERANGE && (d == HUGE_VAL || d == -HUGE_VAL)) {
      fail(ps, start, "number %.40s out of range", copy);
      v = NULL;
    } else {
      v = node(ps, CP_JSON_NUMBER, start);
      if (v) v->u.d = d;
    }
  }
  if (copy != tmp) free(copy);
  ps->p = q;
  return v;
}

static int expect_word(parser *ps, const char *w) {
  size_t n = strlen(w);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, w, n) != 0)
    return fail(ps, ps->p, "unexpected character '%c'", *ps->p);
  ps->p += n;
  return 0;
}

/* Items and members are collected on the C stack of each recursion level in
 * a growable array, then copied once into the arena at the right size. */
static cp_json *parse_array(parser *ps) {
  cp_json *v = node(ps, CP_JSON_ARRAY, ps->p);
  if (!v) return NULL;
  ps->p++;
  cp_json **items = NULL;
  size_t n = 0, cap = 0;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    return v;
  }
  for (;;) {
    ps->path[ps->depth] = (seg){NULL, 0, n};
    cp_json *item = parse_value(ps);
    if (!item) goto err;
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      cp_json **grown = cp_reallocarray(items, ncap, sizeof *items);
      if (!grown) {
        nomem(ps);
        goto err;
      }
      items = grown;
      cap = ncap;
    }
    items[n++] = item;
    skip_ws(ps);
    if (ps->p >= ps->end) {
      fail(ps, ps->p, "unterminated array");
      goto err;
    }
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p == ']') {
      ps->p++;
      break;
    }
    fail(ps, ps->p, "expected ',' or ']' in array");
    goto err;
  }
  v->u.arr.items = arena_alloc(ps->doc, n * sizeof *items);
  if (!v->u.arr.items) {
    nomem(ps);
    goto err;
  }
  memcpy(v->u.arr.items, items, n * sizeof *items);
  v->u.arr.n = n;
  free(items);
  return v;
err:
  free(items);
  return NULL;
}

static cp_json *parse_object(parser *ps) {
  cp_json *v = node(ps, CP_JSON_OBJECT, ps->p);
  if (!v) return NULL;
  ps->p++;
  cp_json_member *ms = NULL;
  size_t n = 0, cap = 0;
  keyset seen = {NULL, 0};
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    return v;
  }
  for (;;) {
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') {
      fail(ps, ps->p, "expected a string key in object");
      goto err;
    }
    const char *key_at = ps->p;
    if (parse_string_raw(ps)) goto err;
    cp_json_member m;
    m.key = arena_str(ps, &m.key_len);
    if (!m.key) goto err;
    ps->path[ps->depth] = (seg){m.key, m.key_len, 0};
    if (n == cap) {
      size_t ncap = cap ? cap * 2 : 8;
      cp_json_member *grown = cp_reallocarray(ms, ncap, sizeof *ms);
      if (!grown) {
        nomem(ps);
        goto err;
      }
      ms = grown;
      cap = ncap;
    }
    ms[n] = m;
    int dup = keyset_add(&seen, ms, n);
    if (dup < 0) {
      nomem(ps);
      goto err;
    }
    if (dup) {
      /* Parsers disagree on which copy wins; a record that says two things
       * must not be read as either. */
      char where[96];
      format_path(ps, where, sizeof where);
      fail(ps, key_at, "duplicate key at %s", where);
      goto err;
    }
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
      fail(ps, ps->p, "expected ':' after object key");
      goto err;
    }
    ps->p++;
    m.value = parse_value(ps);
    if (!m.value) goto err;
    ms[n++] = m;
    skip_ws(ps);
    if (ps->p >= ps->end) {
      fail(ps, ps->p, "unterminated object");
      goto err;
    }
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p == '}') {
      ps->p++;
      break;
    }
    fail(ps, ps->p, "expected ',' or '}' in object");
    goto err;
  }
  v->u.obj.members = arena_alloc(ps->doc, n * sizeof *ms);
  if (!v->u.obj.members) {
    nomem(ps);
    goto err;
  }
  memcpy(v->u.obj.members, ms, n * sizeof *ms);
  v->u.obj.n = n;
  free(ms);
  free(seen.slots);
  return v;
err:
  free(ms);
  free(seen.slots);
  return NULL;
}

static cp_json *parse_value(parser *ps) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, ps->p, "unexpected end of input"), NULL;
  const char *at = ps->p;
  cp_json *v;
  switch (*ps->p) {
  case '{':
  case '[':
    if (++ps->depth > MAX_DEPTH)
      return fail(ps, at, "nesting deeper than %d", MAX_DEPTH), NULL;
    v = *ps->p == '{' ? parse_object(ps) : parse_array(ps);
    ps->depth--;
    return v;
  case '"':
    if (parse_string_raw(ps)) return NULL;
    v = node(ps, CP_JSON_STRING, at);
    if (v) v->u.str.s = arena_str(ps, &v->u.str.len);
    return v && v->u.str.s ? v : NULL;
  case 't': return expect_word(ps, "true") ? NULL : node(ps, CP_JSON_TRUE, at);
  case 'f': return expect_word(ps, "false") ? NULL : node(ps, CP_JSON_FALSE, at);
  case 'n': return expect_word(ps, "null") ? NULL : node(ps, CP_JSON_NULL, at);
  default:
    if (*ps->p == '-' || (*ps->p >= '0' && *ps->p <= '9')) return parse_number(ps);
    return fail(ps, at, "unexpected character '%c'", *ps->p), NULL;
  }
}

cp_json_doc *cp_json_parse(const char *text, size_t len, cp_json_error *err) {
  parser ps = {.s = text, .end = text + len, .p = text, .err = err};
  if (err) memset(err, 0, sizeof *err);
  ps.doc = cp_calloc(1, sizeof *ps.doc); /* the caller's: cp_json_doc_free */
  if (!ps.doc) return nomem(&ps), NULL;
  cp_json *root = parse_value(&ps);
  if (root) {
    skip_ws(&ps);
    if (ps.p < ps.end) {
      fail(&ps, ps.p, "unexpected data after the JSON value");
      root = NULL;
    }
  }
  cp_buf_free(&ps.scratch);
  if (!root) {
    cp_json_doc_free(ps.doc);
    return NULL;
  }
  ps.doc->root = root;
  return ps.doc;
}

const cp_json *cp_json_root(const cp_json_doc *doc) { return doc->root; }

void cp_json_doc_free(cp_json_doc *doc) {
  if (!doc) return;
  block *b = doc->blocks;
  while (b) {
    block *next = b->next;
    free(b);
    b = next;
  }
  free(doc);
}

const cp_json *cp_json_get(const cp_json *v, const char *key) {
  if (!v || v->type != CP_JSON_OBJECT) return NULL;
  size_t klen = strlen(key);
  for (size_t i = v->u.obj.n; i-- > 0;) {
    const cp_json_member *m = &v->u.obj.members[i];
    if (m->key_len == klen && memcmp(m->key, key, klen) == 0) return m->value;
  }
  return NULL;
}

const char *cp_json_type_name(cp_json_type t) {
  switch (t) {
  case CP_JSON_NULL: return "null";
  case CP_JSON_FALSE:
  case CP_JSON_TRUE: return "boolean";
  case CP_JSON_INT: return "integer";
  case CP_JSON_NUMBER: return "number";
  case CP_JSON_STRING: return "string";
  case CP_JSON_ARRAY: return "array";
  case CP_JSON_OBJECT: return "object";
  }
  return "?";
}

int cp_json_add_string(cp_buf *b, const char *s, size_t len) {
  const unsigned char *p = (const unsigned char *)s, *end = p + len;
  size_t start = b->len;
  cp_buf_reserve(b, len + 2);
  cp_buf_addc(b, '"');
  while (p < end) {
    const unsigned char *run = p;
    while (p < end && *p >= 0x20 && *p < 0x80 && *p != '"' && *p != '\\') p++;
    cp_buf_add(b, run, (size_t)(p - run));
    if (p >= end) break;
    unsigned char c = *p;
    if (c >= 0x80) {
      size_t n = utf8_len(p, end);
      if (!n) {
        b->len = start;
        if (b->data) b->data[start] = '\0';
        return -1;
      }
      cp_buf_add(b, p, n);
      p += n;
      continue;
    }
    switch (c) {
    case '"': cp_buf_add(b, "\\\"", 2); break;
    case '\\': cp_buf_add(b, "\\\\", 2); break;
    case '\n': cp_buf_add(b, "\\n", 2); break;
    case '\r': cp_buf_add(b, "\\r", 2); break;
    case '\t': cp_buf_add(b, "\\t", 2); break;
    case '\b': cp_buf_add(b, "\\b", 2); break;
    case '\f': cp_buf_add(b, "\\f", 2); break;
    default: cp_buf_printf(b, "\\u%04x", c); break;
    }
    p++;
  }
  cp_buf_addc(b, '"');
  return 0;
}

int cp_json_add_number(cp_buf *b, double d) {
  if (isnan(d) || isinf(d)) return -1;
  char tmp[32];
  /* The shortest of %.15g..%.17g that reads back exactly. */
  for (int prec = 15; prec <= 17; prec++) {
    snprintf(tmp, sizeof tmp, "%.*g", prec, d);
    if (strtod(tmp, NULL) == d) break;
  }
  cp_buf_adds(b, tmp);
  /* Keep a float a float on the wire: 150.0 must not read back as 150. */
  if (!strpbrk(tmp, ".eEn")) cp_buf_add(b, ".0", 2);
  return 0;
}
