/*
 * schema.c -- payload validators (see schema.h). Owns the wording of schema
 * violations and how JSON paths are written; must not parse JSON text (the
 * caller hands a tree) nor decide anything about sending.
 */
#include "schema.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "normalize.h"
#include "utf8.h"

void cp_schema_errors_init(cp_schema_errors *e) { memset(e, 0, sizeof *e); }

void cp_schema_errors_free(cp_schema_errors *e) {
  for (size_t i = 0; i < e->n; i++) {
    free(e->items[i].path);
    free(e->items[i].message);
  }
  free(e->items);
  memset(e, 0, sizeof *e);
}

void cp_batch_opts_init(cp_batch_opts *o) {
  o->existing_active = 0;
  o->cap = CP_DEFAULT_INTENT_CAP;
  o->max_chars = 500;
  o->max_examples = CP_DEFAULT_BATCH_MAX;
}

/* The walk keeps the current path in one buffer; each step appends and
 * truncates back, so no path is built unless an error needs it. */
typedef struct walk {
  cp_buf path;
  cp_schema_errors *errs;
} walk;

static void report(walk *w, const cp_json *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* A violation that cannot be kept for want of memory marks the errors
 * out_of_memory instead. */
static void report(walk *w, const cp_json *at, const char *fmt, ...) {
  cp_schema_errors *e = w->errs;
  if (e->n == e->cap) {
    size_t cap = e->cap ? e->cap * 2 : 8;
    cp_schema_error *items = cp_reallocarray(e->items, cap, sizeof *items);
    if (!items) {
      e->out_of_memory = 1;
      return;
    }
    e->items = items;
    e->cap = cap;
  }
  cp_buf msg = CP_BUF_INIT;
  va_list ap;
  va_start(ap, fmt);
  cp_buf_vprintf(&msg, fmt, ap);
  va_end(ap);
  char *path = cp_buf_ok(&w->path) ? cp_strdup(w->path.len ? w->path.data : "$") : NULL;
  char *message = cp_buf_steal(&msg, NULL);
  if (!path || !message) {
    free(path);
    free(message);
    e->out_of_memory = 1;
    return;
  }
  cp_schema_error *it = &e->items[e->n++];
  it->path = path;
  it->message = message;
  it->offset = at ? at->offset : 0;
}

static int ident_like(const char *k, size_t n) {
  if (!n || !((k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z') ||
              k[0] == '_'))
    return 0;
  for (size_t i = 1; i < n; i++) {
    char c = k[i];
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
          (c >= '0' && c <= '9') || c == '_'))
      return 0;
  }
  return 1;
}

static size_t push_key(walk *w, const char *k, size_t n) {
  size_t old = w->path.len;
  if (ident_like(k, n)) {
    if (old) cp_buf_addc(&w->path, '.');
    cp_buf_add(&w->path, k, n);
  } else {
    cp_buf_addc(&w->path, '[');
    if (cp_json_add_string(&w->path, k, n)) cp_buf_adds(&w->path, "\"?\"");
    cp_buf_addc(&w->path, ']');
  }
  return old;
}

static size_t push_index(walk *w, size_t i) {
  size_t old = w->path.len;
  cp_buf_printf(&w->path, "[%zu]", i);
  return old;
}

static void pop(walk *w, size_t old) {
  w->path.len = old;
  if (w->path.data) w->path.data[old] = '\0';
}

static const char *tname(const cp_json *v) { return cp_json_type_name(v->type); }

/* Looks up a member, reporting it when absent (required) or null. Returns
 * NULL when there is nothing to check further. */
static const cp_json *member(walk *w, const cp_json *obj, const char *key,
                             int required) {
  const cp_json *v = cp_json_get(obj, key);
  if (!v && !required) return NULL;
  size_t old = push_key(w, key, strlen(key));
  if (!v) report(w, obj, "is required");
  else if (v->type == CP_JSON_NULL && required) report(w, v, "is required (got null)");
  pop(w, old);
  return (v && v->type != CP_JSON_NULL) ? v : (required ? NULL : v);
}

/* A string that is present and not only white space; v may be NULL. */
static int check_nonempty_string(walk *w, const cp_json *v) {
  if (!v) return 0;
  if (v->type != CP_JSON_STRING) {
    report(w, v, "must be a string, got %s", tname(v));
    return 0;
  }
  if (v->u.str.len == 0 || cp_is_blank(v->u.str.s, v->u.str.len)) {
    report(w, v, "must not be empty");
    return 0;
  }
  return 1;
}

static void field_string(walk *w, const cp_json *obj, const char *key) {
  const cp_json *v = member(w, obj, key, 1);
  size_t old = push_key(w, key, strlen(key));
  check_nonempty_string(w, v);
  pop(w, old);
}

/* Returns 1 and *out when v is an integer within [lo, hi]. */
static int check_int(walk *w, const cp_json *v, int64_t lo, int64_t hi,
                     int64_t *out) {
  if (!v) return 0;
  if (v->type != CP_JSON_INT) {
    if (v->type == CP_JSON_NUMBER)
      report(w, v, "must be an integer, got %g", v->u.d);
    else
      report(w, v, "must be an integer, got %s", tname(v));
    return 0;
  }
  if (v->u.i < lo || v->u.i > hi) {
    if (hi == INT64_MAX)
      report(w, v, "must be at least %lld, got %lld", (long long)lo,
             (long long)v->u.i);
    else
      report(w, v, "must be between %lld and %lld, got %lld", (long long)lo,
             (long long)hi, (long long)v->u.i);
    return 0;
  }
  if (out) *out = v->u.i;
  return 1;
}

static int expect_type(walk *w, const cp_json *v, cp_json_type t,
                       const char *what) {
  if (!v) return 0;
  if (v->type != t) {
    report(w, v, "must be %s, got %s", what, tname(v));
    return 0;
  }
  return 1;
}

/* ---- §4.1 dataset upload metadata --------------------------------------- */

int cp_schema_dataset_payload(const cp_json *root, cp_schema_errors *errs) {
  walk w = {CP_BUF_INIT, errs};
  size_t before = errs->n;
  if (!expect_type(&w, root, CP_JSON_OBJECT, "an object")) goto done;

  field_string(&w, root, "datasetIdReference");

  const cp_json *m = member(&w, root, "utteranceCountMatrix", 1);
  size_t old = push_key(&w, "utteranceCountMatrix", 20);
  if (expect_type(&w, m, CP_JSON_OBJECT, "an object of label -> count")) {
    for (size_t i = 0; i < m->u.obj.n; i++) {
      const cp_json_member *mm = &m->u.obj.members[i];
      size_t o2 = push_key(&w, mm->key, mm->key_len);
      if (mm->key_len == 0 || cp_is_blank(mm->key, mm->key_len))
        report(&w, mm->value, "label must not be empty");
      check_int(&w, mm->value, 0, CP_DATASET_COUNT_MAX, NULL);
      pop(&w, o2);
    }
  }
  pop(&w, old);

  const cp_json *d = member(&w, root, "labelTaxonomyDirectives", 1);
  old = push_key(&w, "labelTaxonomyDirectives", 23);
  if (expect_type(&w, d, CP_JSON_ARRAY, "an array")) {
    if (d->u.arr.n == 0) report(&w, d, "must have at least one directive");
    for (size_t i = 0; i < d->u.arr.n; i++) {
      const cp_json *it = d->u.arr.items[i];
      size_t o2 = push_index(&w, i);
      if (expect_type(&w, it, CP_JSON_OBJECT, "an object {label, type, priority}")) {
        field_string(&w, it, "label");
        field_string(&w, it, "type");
        const cp_json *p = member(&w, it, "priority", 1);
        size_t o3 = push_key(&w, "priority", 8);
        check_int(&w, p, 0, INT64_MAX, NULL);
        pop(&w, o3);
      }
      pop(&w, o2);
    }
  }
  pop(&w, old);

  const cp_json *md = member(&w, root, "metadata", 1);
  old = push_key(&w, "metadata", 8);
  if (expect_type(&w, md, CP_JSON_OBJECT, "an object of string -> string")) {
    for (size_t i = 0; i < md->u.obj.n; i++) {
      const cp_json_member *mm = &md->u.obj.members[i];
      size_t o2 = push_key(&w, mm->key, mm->key_len);
      expect_type(&w, mm->value, CP_JSON_STRING, "a string");
      pop(&w, o2);
    }
  }
  pop(&w, old);

done:
  if (!cp_buf_ok(&w.path)) errs->out_of_memory = 1;
  cp_buf_free(&w.path);
  return errs->n == before && !errs->out_of_memory;
}

/* ---- §4.2 intent example batches ---------------------------------------- */

static void annotations(walk *w, const cp_json *anns, long long chars) {
  if (!expect_type(w, anns, CP_JSON_ARRAY, "an array")) return;
  for (size_t i = 0; i < anns->u.arr.n; i++) {
    const cp_json *a = anns->u.arr.items[i];
    size_t old = push_index(w, i);
    if (expect_type(w, a, CP_JSON_OBJECT, "an object {entity_id, start, end}")) {
      field_string(w, a, "entity_id");
      int64_t start = 0, end = 0;
      const cp_json *s = member(w, a, "start", 1);
      size_t o2 = push_key(w, "start", 5);
      int start_ok = check_int(w, s, 0, INT64_MAX, &start);
      if (start_ok && chars >= 0 && start >= chars)
        report(w, s,
               "must be less than the text's length (%lld characters), got %lld",
               chars, (long long)start);
      pop(w, o2);
      const cp_json *e = member(w, a, "end", 1);
      o2 = push_key(w, "end", 3);
      if (check_int(w, e, INT64_MIN, INT64_MAX, &end)) {
        if (start_ok && end <= start)
          report(w, e, "must be greater than start (%lld), got %lld",
                 (long long)start, (long long)end);
        else if (end <= 0 && !start_ok)
          report(w, e, "must be greater than 0, got %lld", (long long)end);
        if (chars >= 0 && end > chars)
          report(w, e,
                 "must be at most the text's length (%lld characters), got %lld",
                 chars, (long long)end);
      }
      pop(w, o2);
    }
    pop(w, old);
  }
}

void cp_schema_annotations(const cp_json *anns, long long text_chars,
                           const char *path, cp_schema_errors *errs) {
  walk w = {CP_BUF_INIT, errs};
  if (path && *path) cp_buf_adds(&w.path, path);
  annotations(&w, anns, text_chars);
  cp_buf_free(&w.path);
}

/* Checks one example; returns the text (for the case-folding comparison)
 * or NULL when it is unusable. */
static const cp_json *example(walk *w, const cp_json *ex,
                              const cp_batch_opts *o) {
  if (!expect_type(w, ex, CP_JSON_OBJECT, "an object {text, annotations, is_active}"))
    return NULL;
  const cp_json *t = member(w, ex, "text", 1);
  long long chars = -1;
  size_t old = push_key(w, "text", 4);
  if (expect_type(w, t, CP_JSON_STRING, "a string")) {
    const char *s = t->u.str.s;
    size_t len = t->u.str.len;
    size_t n = cp_utf8_count(s, len);
    chars = (long long)n;
    if (!cp_utf8_valid(s, len)) report(w, t, "is not valid UTF-8");
    if (n == 0) {
      report(w, t, "must not be empty");
    } else {
      if (n > o->max_chars)
        report(w, t, "is %zu characters long; at most %zu are allowed", n,
               o->max_chars);
      size_t a, b;
      cp_trim_span(s, len, &a, &b);
      if (a == b) {
        report(w, t, "must not be only white space");
      } else {
        if (a > 0) report(w, t, "must not start with white space");
        if (b < len) report(w, t, "must not end with white space");
      }
    }
  } else {
    t = NULL;
  }
  pop(w, old);
  const cp_json *anns = member(w, ex, "annotations", 0);
  if (anns) {
    old = push_key(w, "annotations", 11);
    if (anns->type == CP_JSON_NULL)
      report(w, anns, "must be an array ([] when there are none), got null");
    else
      annotations(w, anns, chars);
    pop(w, old);
  }
  const cp_json *act = member(w, ex, "is_active", 0);
  if (act && act->type != CP_JSON_TRUE && act->type != CP_JSON_FALSE) {
    old = push_key(w, "is_active", 9);
    report(w, act, "must be a boolean, got %s", tname(act));
    pop(w, old);
  }
  return t;
}

typedef struct folded {
  char *s;
  size_t len;
  size_t index;
} folded;

static int cmp_folded(const void *a, const void *b) {
  const folded *x = a, *y = b;
  size_t n = x->len < y->len ? x->len : y->len;
  int c = memcmp(x->s, y->s, n);
  if (c) return c;
  if (x->len != y->len) return x->len < y->len ? -1 : 1;
  return x->index < y->index ? -1 : (x->index > y->index);
}

int cp_schema_intent_batch(const cp_json *root, const cp_batch_opts *o,
                           cp_schema_errors *errs) {
  walk w = {CP_BUF_INIT, errs};
  size_t before = errs->n;
  folded *f = NULL;
  size_t nf = 0;
  if (!expect_type(&w, root, CP_JSON_OBJECT, "an object {examples, trigger_retrain}"))
    goto done;
  const cp_json *tr = member(&w, root, "trigger_retrain", 0);
  if (tr && tr->type != CP_JSON_TRUE && tr->type != CP_JSON_FALSE) {
    size_t old = push_key(&w, "trigger_retrain", 15);
    report(&w, tr, "must be a boolean, got %s", tname(tr));
    pop(&w, old);
  }
  const cp_json *ex = member(&w, root, "examples", 1);
  size_t old = push_key(&w, "examples", 8);
  if (!expect_type(&w, ex, CP_JSON_ARRAY, "an array")) {
    pop(&w, old);
    goto done;
  }
  size_t n = ex->u.arr.n;
  if (n == 0) report(&w, ex, "must have at least 1 example");
  if (n > o->max_examples)
    report(&w, ex, "has %zu examples; at most %zu are allowed in one batch",
           n, o->max_examples);
  f = cp_calloc(n, sizeof *f);
  if (!f) {
    errs->out_of_memory = 1;
    pop(&w, old);
    goto done;
  }
  int64_t active = 0;
  cp_buf scratch = CP_BUF_INIT;
  for (size_t i = 0; i < n; i++) {
    const cp_json *e = ex->u.arr.items[i];
    size_t o2 = push_index(&w, i);
    const cp_json *t = example(&w, e, o);
    pop(&w, o2);
    if (e->type == CP_JSON_OBJECT) {
      const cp_json *act = cp_json_get(e, "is_active");
      if (!act || act->type != CP_JSON_FALSE) active++;
    }
    if (t && t->u.str.len) {
      const char *fs;
      size_t fl;
      cp_casefold(t->u.str.s, t->u.str.len, &scratch, &fs, &fl);
      f[nf].s = cp_buf_ok(&scratch) ? cp_strndup(fs, fl) : NULL;
      if (!f[nf].s) { /* a repeat could go unseen: no verdict */
        errs->out_of_memory = 1;
        continue;
      }
      f[nf].len = fl;
      f[nf].index = i;
      nf++;
    }
  }
  cp_buf_free(&scratch);
  /* Sorting by folded text (then index) puts each repeat right after the
   * example it repeats; report each against the first of its group. */
  qsort(f, nf, sizeof *f, cmp_folded);
  for (size_t i = 1, first = 0; i < nf; i++) {
    if (f[i].len == f[first].len && memcmp(f[i].s, f[first].s, f[i].len) == 0) {
      size_t o2 = push_index(&w, f[i].index);
      size_t o3 = push_key(&w, "text", 4);
      report(&w, cp_json_get(ex->u.arr.items[f[i].index], "text"),
             "equals examples[%zu].text after case folding", f[first].index);
      pop(&w, o3);
      pop(&w, o2);
    } else {
      first = i;
    }
  }
  if (o->existing_active + active > o->cap)
    report(&w, ex,
           "would make %lld active examples for the intent (%lld already "
           "there + %lld in this batch); the cap is %lld",
           (long long)(o->existing_active + active),
           (long long)o->existing_active, (long long)active,
           (long long)o->cap);
  pop(&w, old);
done:
  for (size_t i = 0; i < nf; i++) free(f[i].s);
  free(f);
  if (!cp_buf_ok(&w.path)) errs->out_of_memory = 1;
  cp_buf_free(&w.path);
  return errs->n == before && !errs->out_of_memory;
}

/* ---- §4.3 v2 sentences --------------------------------------------------- */

int cp_schema_v2_sentence(const cp_json *root, cp_schema_errors *errs) {
  walk w = {CP_BUF_INIT, errs};
  size_t before = errs->n;
  if (!expect_type(&w, root, CP_JSON_OBJECT, "an object {text, localeId, slots}"))
    goto done;
  field_string(&w, root, "text");
  const cp_json *t = cp_json_get(root, "text");
  if (t && t->type == CP_JSON_STRING && !cp_utf8_valid(t->u.str.s, t->u.str.len)) {
    size_t old = push_key(&w, "text", 4);
    report(&w, t, "is not valid UTF-8");
    pop(&w, old);
  }
  field_string(&w, root, "localeId");
  const cp_json *s = member(&w, root, "slots", 1);
  size_t old = push_key(&w, "slots", 5);
  if (expect_type(&w, s, CP_JSON_ARRAY, "an array ([] when empty)")) {
    for (size_t i = 0; i < s->u.arr.n; i++) {
      size_t o2 = push_index(&w, i);
      expect_type(&w, s->u.arr.items[i], CP_JSON_OBJECT, "an object");
      pop(&w, o2);
    }
  }
  pop(&w, old);
done:
  if (!cp_buf_ok(&w.path)) errs->out_of_memory = 1;
  cp_buf_free(&w.path);
  return errs->n == before && !errs->out_of_memory;
}
