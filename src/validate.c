/*
 * validate.c -- per-text checks and the problem sink (see validate.h).
 * Owns the wording of every content problem; must not parse formats or
 * decide what is a duplicate. The common case -- a line of printable ASCII
 * -- is settled by one vectorised scan with no decoding.
 */
#include "validate.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "utf8.h"

void cp_limits_init(cp_limits *lim) {
  lim->max_bytes = CP_DEFAULT_MAX_BYTES;
  lim->max_chars = CP_DEFAULT_MAX_CHARS;
}

const char *cp_problem_kind_name(cp_problem_kind kind) {
  static const char *const names[CP_PROB_KINDS] = {
      "too_large", "bom",    "utf8",  "control",
      "too_long",  "syntax", "field", "annotation"};
  return (unsigned)kind < CP_PROB_KINDS ? names[kind] : "?";
}

void cp_problems_init(cp_problems *p, size_t max_kept) {
  memset(p, 0, sizeof *p);
  p->max_kept = max_kept;
}

void cp_problems_free(cp_problems *p) {
  for (size_t i = 0; i < p->nfiles; i++) free(p->files[i]);
  free(p->files);
  free(p->items);
  memset(p, 0, sizeof *p);
}

/* A file name that cannot be kept stops the keeping of problems, so that
 * none is ever listed under the wrong file. */
static void lose(cp_problems *p) {
  p->out_of_memory = 1;
  p->max_kept = p->n;
}

void cp_problems_set_file(cp_problems *p, const char *file) {
  if (p->nfiles && strcmp(p->files[p->nfiles - 1], file) == 0) return;
  char **files = cp_reallocarray(p->files, p->nfiles + 1, sizeof *files);
  if (!files) {
    lose(p);
    return;
  }
  p->files = files;
  if (!(p->files[p->nfiles] = cp_strdup(file))) {
    lose(p);
    return;
  }
  p->nfiles++;
}

void cp_problems_add(cp_problems *p, uint64_t line, uint64_t column,
                     uint64_t offset, cp_problem_kind kind, const char *fmt,
                     ...) {
  p->total++;
  if ((unsigned)kind < CP_PROB_KINDS) p->by_kind[kind]++;
  if (p->n >= p->max_kept) return;
  if (!p->items && !(p->items = cp_calloc(p->max_kept, sizeof *p->items))) {
    lose(p);
    return;
  }
  if (!p->nfiles) cp_problems_set_file(p, "<input>");
  if (p->n >= p->max_kept) return;
  cp_problem *q = &p->items[p->n++];
  q->file = p->files[p->nfiles - 1];
  q->line = line;
  q->column = column;
  q->offset = offset;
  q->kind = kind;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(q->reason, sizeof q->reason, fmt, ap);
  va_end(ap);
}

void cp_text_check(const cp_limits *lim, const char *s, size_t len,
                   int file_start, cp_issue_fn fn, void *ud,
                   cp_text_info *info) {
  info->issues = 0;
  size_t plain = cp_utf8_plain_prefix(s, len);
  size_t max = lim->max_chars;
  char why[128];
  if (plain == len) {
    info->chars = len;
    info->plain = 1;
    if (max && len > max) {
      snprintf(why, sizeof why, "text is %zu characters long; the limit is %zu",
               len, max);
      fn(ud, max, max, CP_PROB_TOO_LONG, why);
      info->issues++;
    }
    return;
  }
  info->plain = 0;
  size_t i = plain, n = plain;
  size_t over_off = 0; /* where the character past the limit starts */
  if (max && n > max) over_off = max;
  while (i < len) {
    if (max && n == max && !over_off) over_off = i;
    size_t run = cp_utf8_plain_prefix(s + i, len - i);
    if (run) {
      if (max && n < max && n + run > max) over_off = i + (max - n);
      i += run;
      n += run;
      continue;
    }
    uint32_t cp;
    cp_utf8_err err;
    size_t k = cp_utf8_decode(s + i, len - i, &cp, &err);
    if (err) {
      snprintf(why, sizeof why, "invalid UTF-8: %s (byte 0x%02X)",
               cp_utf8_err_text(err), (unsigned)(unsigned char)s[i]);
      fn(ud, i, n, CP_PROB_UTF8, why);
      info->issues++;
      /* Each byte of the ill-formed part is one column, as the count says. */
      if (max && n < max && n + k > max) over_off = i + (max - n);
      n += k;
      i += k;
      continue;
    }
    if (cp == 0xFEFF) {
      if (file_start && i == 0)
        snprintf(why, sizeof why,
                 "byte order mark (U+FEFF) at the start of the file; "
                 "save the file as UTF-8 without BOM");
      else
        snprintf(why, sizeof why,
                 "byte order mark (U+FEFF) inside the text");
      fn(ud, i, n, CP_PROB_BOM, why);
      info->issues++;
    } else if (cp != '\t' && cp_utf8_is_control(cp)) {
      if (cp == '\r')
        snprintf(why, sizeof why,
                 "control character U+000D (carriage return, as in CRLF "
                 "line endings)");
      else if (cp == '\n')
        snprintf(why, sizeof why, "control character U+000A (line feed)");
      else
        snprintf(why, sizeof why, "control character U+%04X", (unsigned)cp);
      fn(ud, i, n, CP_PROB_CONTROL, why);
      info->issues++;
    }
    i += k;
    n++;
  }
  info->chars = n;
  if (max && n > max) {
    snprintf(why, sizeof why, "text is %zu characters long; the limit is %zu",
             n, max);
    fn(ud, over_off, max, CP_PROB_TOO_LONG, why);
    info->issues++;
  }
}

typedef struct line_ctx {
  cp_problems *sink;
  uint64_t line, offset;
} line_ctx;

static void line_issue(void *ud, size_t byte_off, size_t char_idx,
                       cp_problem_kind kind, const char *reason) {
  line_ctx *c = ud;
  cp_problems_add(c->sink, c->line, char_idx + 1, c->offset + byte_off, kind,
                  "%s", reason);
}

void cp_line_check(const cp_limits *lim, cp_problems *sink, const char *s,
                   size_t len, uint64_t line, uint64_t offset,
                   cp_text_info *info) {
  line_ctx c = {sink, line, offset};
  cp_text_check(lim, s, len, offset == 0, line_issue, &c, info);
}
