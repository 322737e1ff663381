/*
 * reader.c -- the line, JSON Lines and CSV readers and the file mapping
 * they stream through (see reader.h). Owns the wording of syntax problems
 * and the mapping from a decoded text back to file positions; the content
 * checks themselves are validate.c's, the annotation rules schema.c's.
 */
#include "reader.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "normalize.h"
#include "schema.h"
#include "utf8.h"

/* ---- formats -------------------------------------------------------------- */

int cp_format_parse(const char *name, cp_format *fmt) {
  if (strcmp(name, "lines") == 0) *fmt = CP_FMT_LINES;
  else if (strcmp(name, "jsonl") == 0) *fmt = CP_FMT_JSONL;
  else if (strcmp(name, "csv") == 0) *fmt = CP_FMT_CSV;
  else return -1;
  return 0;
}

const char *cp_format_name(cp_format fmt) {
  switch (fmt) {
  case CP_FMT_LINES: return "lines";
  case CP_FMT_JSONL: return "jsonl";
  case CP_FMT_CSV: return "csv";
  }
  return "?";
}

static int ends_with(const char *s, const char *suffix) {
  size_t n = strlen(s), k = strlen(suffix);
  return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

cp_format cp_format_guess(const char *path) {
  if (ends_with(path, ".jsonl") || ends_with(path, ".ndjson")) return CP_FMT_JSONL;
  if (ends_with(path, ".csv")) return CP_FMT_CSV;
  return CP_FMT_LINES;
}

/* ---- decoding ------------------------------------------------------------- */

static int hex4(const char *p, const char *end, unsigned *out) {
  if (end - p < 4) return -1;
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = p[i];
    v <<= 4;
    if (c >= '0' && c <= '9') v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f') v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F') v |= (unsigned)(c - 'A' + 10);
    else return -1;
  }
  *out = v;
  return 0;
}

/* One step of a JSON string body: decodes the character or escape at *p
 * into out (1..4 bytes) and advances *p. Malformed escapes and lone
 * surrogates come out as U+FFFD; the parser has rejected the former. */
static size_t json_step(const char **p, const char *end, char out[4]) {
  const char *q = *p;
  if (*q != '\\' || q + 1 >= end) {
    *p = q + 1;
    out[0] = *q;
    return 1;
  }
  char e = q[1];
  *p = q + 2;
  switch (e) {
  case 'b': out[0] = '\b'; return 1;
  case 'f': out[0] = '\f'; return 1;
  case 'n': out[0] = '\n'; return 1;
  case 'r': out[0] = '\r'; return 1;
  case 't': out[0] = '\t'; return 1;
  case 'u': {
    unsigned v;
    if (hex4(q + 2, end, &v)) return cp_utf8_encode(0xFFFD, out);
    *p = q + 6;
    if (v >= 0xD800 && v <= 0xDBFF) {
      unsigned lo;
      if (end - *p >= 6 && (*p)[0] == '\\' && (*p)[1] == 'u' &&
          !hex4(*p + 2, end, &lo) && lo >= 0xDC00 && lo <= 0xDFFF) {
        *p += 6;
        return cp_utf8_encode(0x10000 + ((v - 0xD800) << 10) + (lo - 0xDC00), out);
      }
      return cp_utf8_encode(0xFFFD, out);
    }
    if (v >= 0xDC00 && v <= 0xDFFF) return cp_utf8_encode(0xFFFD, out);
    return cp_utf8_encode(v, out);
  }
  default: out[0] = e; return 1; /* \" \\ \/ */
  }
}

void cp_text_decode(cp_text_enc enc, const char *raw, size_t len,
                    cp_buf *scratch, const char **out, size_t *out_len) {
  if (enc == CP_TEXT_RAW) {
    *out = raw;
    *out_len = len;
    return;
  }
  cp_buf_reset(scratch);
  if (cp_buf_reserve(scratch, len + 1)) {
    *out = "";
    *out_len = 0;
    return;
  }
  const char *p = raw, *end = raw + len;
  char *d = scratch->data;
  size_t n = 0;
  if (enc == CP_TEXT_JSON) {
    while (p < end) {
      const char *bs = memchr(p, '\\', (size_t)(end - p));
      size_t run = (size_t)((bs ? bs : end) - p);
      memcpy(d + n, p, run);
      n += run;
      p += run;
      if (p < end) n += json_step(&p, end, d + n); /* never longer than raw */
    }
  } else {
    while (p < end) {
      d[n++] = *p;
      p += (*p == '"' && p + 1 < end && p[1] == '"') ? 2 : 1;
    }
  }
  scratch->len = n;
  d[n] = '\0';
  *out = scratch->data;
  *out_len = n;
}

/* Raw offset of the decoded byte offset `want` in a text written in enc. */
static size_t raw_offset(cp_text_enc enc, const char *raw, size_t len,
                         size_t want) {
  if (enc == CP_TEXT_RAW) return want;
  const char *p = raw, *end = raw + len;
  size_t n = 0;
  char tmp[4];
  while (p < end && n < want) {
    if (enc == CP_TEXT_JSON) {
      size_t k = json_step(&p, end, tmp);
      n += k;
    } else {
      p += (*p == '"' && p + 1 < end && p[1] == '"') ? 2 : 1;
      n++;
    }
  }
  return (size_t)(p - raw);
}

/* ---- the reader ------------------------------------------------------------ */

typedef struct field {
  const char *start; /* content, without quotes */
  size_t len;
  int quoted;
  int escaped; /* contains "" */
} field;

struct cp_reader {
  char *name;
  const char *data;
  size_t len, pos; /* len: the bytes read, never past the size limit */
  uint64_t total;  /* the input's size, which len may fall short of */
  int cut;         /* total is over the limit: len stops at it */
  int cut_reported;
  struct cp_file_map *drop_map; /* see cp_reader_drop_long */
  size_t drop_over;             /* 0: nothing is dropped */
  uint64_t line;   /* line of data[pos] */
  cp_format fmt;
  cp_limits lim;
  cp_problems *sink;
  cp_buf text_buf, intent_buf;
  cp_json_doc *doc;
  /* CSV */
  int header_done, stop;
  size_t ncols, col_text, col_intent;
  field *fields;
  size_t nfields, fcap;
  field spare; /* written when fields cannot grow; the reader then stops */
  int failed;  /* memory ran out: no more records */
};

cp_reader *cp_reader_new(const char *name, const char *data, size_t len,
                         cp_format fmt, const cp_limits *lim,
                         cp_problems *sink) {
  cp_reader *r = cp_calloc(1, sizeof *r);
  if (r) r->name = cp_strdup(name);
  if (!r || !r->name) {
    free(r);
    return NULL;
  }
  r->data = data;
  r->line = 1;
  r->fmt = fmt;
  if (lim) r->lim = *lim;
  else cp_limits_init(&r->lim);
  r->sink = sink;
  cp_problems_set_file(sink, name);
  r->len = len;
  cp_reader_set_size(r, len);
  return r;
}

void cp_reader_set_size(cp_reader *r, uint64_t size) {
  uint64_t max = r->lim.max_bytes;
  r->total = size;
  r->cut = max && size > max;
  if (r->cut && r->len > max) r->len = (size_t)max;
}

void cp_reader_free(cp_reader *r) {
  if (!r) return;
  cp_json_doc_free(r->doc);
  cp_buf_free(&r->text_buf);
  cp_buf_free(&r->intent_buf);
  free(r->fields);
  free(r->name);
  free(r);
}

size_t cp_reader_pos(const cp_reader *r) { return r->pos; }

void cp_reader_drop_long(cp_reader *r, cp_file_map *m, size_t longer_than) {
  r->drop_map = m;
  r->drop_over = longer_than ? longer_than : 1;
}

/* The piece a long record is read in, whose pages are then dropped. */
#define DROP_PIECE ((size_t)1 << 20)

static void drop(const cp_reader *r, size_t from, size_t to) {
  cp_file_map_release(r->drop_map, from, to);
}

/* Line and column (code points, 1-based) of p, walking from the start of a
 * record that begins at `from` on line `line`. */
static void locate(const char *from, uint64_t line, const char *p,
                   uint64_t *out_line, uint64_t *out_col) {
  const char *ls = from;
  for (const char *q = from; q < p; q++)
    if (*q == '\n') {
      line++;
      ls = q + 1;
    }
  *out_line = line;
  *out_col = cp_utf8_count(ls, (size_t)(p - ls)) + 1;
}

static void problem_at(cp_reader *r, const char *from, uint64_t line,
                       const char *p, cp_problem_kind kind, const char *fmt,
                       ...) __attribute__((format(printf, 6, 7)));

/* locate over a record longer than r->drop_over: a piece at a time, each
 * piece's pages dropped behind (pieces end before a character, so that
 * the code points add up). */
static void locate_long(cp_reader *r, const char *from, uint64_t line,
                        const char *p, uint64_t *out_line, uint64_t *out_col) {
  const char *a = from;
  size_t chars = 0;
  while (a < p) {
    size_t k = (size_t)(p - a) < DROP_PIECE ? (size_t)(p - a) : DROP_PIECE;
    for (int b = 0; b < 3 && a + k < p && k > 1 &&
                    ((unsigned char)a[k] & 0xC0) == 0x80;
         b++)
      k--;
    const char *e = a + k, *ls = NULL, *nl;
    for (const char *q = a; (nl = memchr(q, '\n', (size_t)(e - q)));
         q = nl + 1) {
      line++;
      ls = nl + 1;
    }
    if (ls) chars = cp_utf8_count(ls, (size_t)(e - ls));
    else chars += cp_utf8_count(a, k);
    drop(r, (size_t)(a - r->data), (size_t)(e - r->data));
    a = e;
  }
  *out_line = line;
  *out_col = chars + 1;
}

static void problem_at(cp_reader *r, const char *from, uint64_t line,
                       const char *p, cp_problem_kind kind, const char *fmt,
                       ...) {
  uint64_t l, c;
  if (r->drop_over && (size_t)(p - from) > r->drop_over)
    locate_long(r, from, line, p, &l, &c);
  else locate(from, line, p, &l, &c);
  char why[160];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof why, fmt, ap);
  va_end(ap);
  cp_problems_add(r->sink, l, c, (uint64_t)(p - r->data), kind, "%s", why);
}

/* The record at rec_start runs past the size limit: the input ends here
 * for the reader, which reports it once, at the first byte past the limit
 * (what lies beyond is never read, so the record is not checked: a cut
 * record would show problems it does not have). Returns 0, for "no more
 * records". */
static int cut_here(cp_reader *r, const char *rec_start, uint64_t line) {
  r->cut_reported = 1;
  problem_at(r, rec_start, line, r->data + r->len, CP_PROB_TOO_LARGE,
             "file is %llu bytes; the limit is %llu bytes, exceeded from here",
             (unsigned long long)r->total,
             (unsigned long long)r->lim.max_bytes);
  r->pos = r->len;
  r->stop = 1;
  return 0;
}

/* Maps problems of a decoded text (JSON string or CSV field) back to the
 * file through the raw bytes the text was decoded from. */
typedef struct text_ctx {
  cp_reader *r;
  const char *rec_start;
  uint64_t rec_line;
  const char *raw;
  size_t raw_len;
  cp_text_enc enc;
} text_ctx;

static void text_issue(void *ud, size_t byte_off, size_t char_idx,
                       cp_problem_kind kind, const char *reason) {
  text_ctx *c = ud;
  (void)char_idx;
  const char *p = c->raw + raw_offset(c->enc, c->raw, c->raw_len, byte_off);
  problem_at(c->r, c->rec_start, c->rec_line, p, kind, "%s", reason);
}

static void check_text(cp_reader *r, cp_record *rec, const char *rec_start) {
  text_ctx c = {r, rec_start, rec->line, rec->raw, rec->raw_len, rec->enc};
  cp_text_info info;
  cp_text_check(&r->lim, rec->text, rec->len, 0, text_issue, &c, &info);
  rec->chars = info.chars;
  rec->plain = info.plain;
  if (info.issues) rec->invalid = 1;
  rec->blank = cp_is_blank(rec->text, rec->len);
}

/* line_end for a line longer than r->drop_over: finds its end a piece at
 * a time, dropping each piece's pages (the record is not looked at). */
static size_t long_line_end(const cp_reader *r, size_t pos, size_t *next) {
  size_t at = pos;
  for (;;) {
    size_t n = r->len - at < DROP_PIECE ? r->len - at : DROP_PIECE;
    const char *nl = memchr(r->data + at, '\n', n);
    if (nl) {
      *next = (size_t)(nl - r->data) + 1;
      return (size_t)(nl - r->data);
    }
    drop(r, at, at + n);
    at += n;
    if (at >= r->len) {
      *next = r->len;
      return r->len;
    }
  }
}

/* Finds the end of the line starting at pos; sets *plain when the line is
 * printable ASCII only, found by the same scan. Returns the line's end
 * (before '\n'); *next is where the following line starts. A line longer
 * than r->drop_over (when set) is never plain: long_line_end takes it. */
static size_t line_end(const cp_reader *r, size_t pos, int *plain,
                       size_t *next) {
  const char *s = r->data + pos;
  size_t rem = r->len - pos;
  size_t win = r->drop_over && rem > r->drop_over ? r->drop_over : rem;
  size_t k = cp_utf8_plain_prefix(s, win);
  if (k < win && s[k] == '\n') {
    *plain = 1;
    *next = pos + k + 1;
    return pos + k;
  }
  if (k == rem) {
    *plain = 1;
    *next = r->len;
    return r->len;
  }
  *plain = 0;
  const char *nl = k < win ? memchr(s + k, '\n', win - k) : NULL;
  if (nl) {
    *next = (size_t)(nl - r->data) + 1;
    return (size_t)(nl - r->data);
  }
  if (win == rem) {
    *next = r->len;
    return r->len;
  }
  return long_line_end(r, pos + win, next);
}

/* cp_line_check's problems of a piece of a line, placed in the line. */
typedef struct piece_ctx {
  cp_problems *sink;
  uint64_t line, offset; /* of the piece */
  size_t chars;          /* code points before the piece */
  size_t over_off;       /* where the piece's length limit was passed */
  int over;
} piece_ctx;

static void piece_issue(void *ud, size_t byte_off, size_t char_idx,
                        cp_problem_kind kind, const char *reason) {
  piece_ctx *c = ud;
  if (kind == CP_PROB_TOO_LONG) { /* said once, for the whole line */
    c->over_off = byte_off;
    c->over = 1;
    return;
  }
  cp_problems_add(c->sink, c->line, c->chars + char_idx + 1,
                  c->offset + byte_off, kind, "%s", reason);
}

/* cp_line_check over a line longer than r->drop_over, a piece at a time,
 * each piece's pages dropped behind it. Pieces end before a character,
 * never inside one; the problems and their places are cp_line_check's. */
static void long_line_check(cp_reader *r, const char *s, size_t n,
                            uint64_t line, size_t start, cp_text_info *info) {
  size_t max = r->lim.max_chars;
  cp_limits lim = r->lim;
  piece_ctx c = {r->sink, line, start, 0, 0, 0};
  size_t done = 0, over_off = 0;
  int over = 0;
  info->issues = 0;
  info->plain = 1;
  while (done < n) {
    size_t k = n - done < DROP_PIECE ? n - done : DROP_PIECE;
    for (int b = 0; b < 3 && done + k < n && k > 1 &&
                    ((unsigned char)s[done + k] & 0xC0) == 0x80;
         b++)
      k--;
    /* The character past the limit: this piece has it when the limit
     * falls within it, found by checking the piece against what is left. */
    lim.max_chars = max && !over && c.chars < max ? max - c.chars : 0;
    if (max && !over && c.chars == max) {
      over = 1;
      over_off = done;
    }
    c.offset = start + done;
    c.over = 0;
    cp_text_info pi;
    cp_text_check(&lim, s + done, k, start == 0 && done == 0, piece_issue, &c,
                  &pi);
    if (c.over) {
      over = 1;
      over_off = done + c.over_off;
      pi.issues--;
    }
    c.chars += pi.chars;
    info->issues += pi.issues;
    info->plain &= pi.plain;
    drop(r, start + done, start + done + k);
    done += k;
  }
  info->chars = c.chars;
  if (max && c.chars > max) {
    cp_problems_add(r->sink, line, max + 1, start + over_off, CP_PROB_TOO_LONG,
                    "text is %zu characters long; the limit is %zu", c.chars,
                    max);
    info->issues++;
  }
}

static void start_record(cp_reader *r, cp_record *rec, size_t start) {
  memset(rec, 0, sizeof *rec);
  rec->line = r->line;
  rec->offset = start;
}

static int next_line(cp_reader *r, cp_record *rec) {
  size_t start = r->pos, next;
  int plain;
  size_t end = line_end(r, start, &plain, &next);
  const char *s = r->data + start;
  if (end == r->len && r->cut) return cut_here(r, s, r->line);
  size_t n = end - start;
  /* Field by field, not start_record: for a struct this size compilers
   * zero with `rep stos`, whose start-up costs more than a short line's
   * whole scan. */
  rec->text = rec->raw = s;
  rec->len = rec->raw_len = n;
  rec->intent = NULL;
  rec->intent_len = 0;
  rec->annotations = NULL;
  rec->line = r->line;
  rec->offset = start;
  rec->enc = CP_TEXT_RAW;
  rec->invalid = 0;
  if (plain) {
    rec->plain = 1;
    rec->chars = n;
    rec->blank = n == 0 || (s[0] == ' ' && cp_is_blank(s, n));
    size_t max = r->lim.max_chars;
    if (max && n > max) {
      cp_problems_add(r->sink, rec->line, max + 1, start + max,
                      CP_PROB_TOO_LONG,
                      "text is %zu characters long; the limit is %zu", n, max);
      rec->invalid = 1;
    }
  } else {
    cp_text_info info;
    if (r->drop_over && n > r->drop_over) {
      long_line_check(r, s, n, rec->line, start, &info);
      rec->blank = 0; /* not looked at again: a blank one is just long */
    } else {
      cp_line_check(&r->lim, r->sink, s, n, rec->line, start, &info);
      rec->blank = cp_is_blank(s, n);
    }
    rec->plain = 0;
    rec->chars = info.chars;
    rec->invalid = info.issues > 0;
  }
  rec->span = next - start;
  r->pos = next;
  r->line++;
  return 1;
}

/* ---- JSON Lines ------------------------------------------------------------ */

/* Reports ill-formed UTF-8 in a raw JSON line (the parser would only say
 * "invalid JSON"); returns how many. */
static unsigned raw_utf8(cp_reader *r, const char *s, size_t n, uint64_t line) {
  unsigned bad = 0;
  size_t i = 0;
  while (i < n) {
    size_t run = cp_utf8_plain_prefix(s + i, n - i);
    i += run;
    if (i >= n) break;
    uint32_t cp;
    cp_utf8_err err;
    size_t k = cp_utf8_decode(s + i, n - i, &cp, &err);
    if (err) {
      problem_at(r, s, line, s + i, CP_PROB_UTF8,
                 "invalid UTF-8: %s (byte 0x%02X)", cp_utf8_err_text(err),
                 (unsigned)(unsigned char)s[i]);
      bad++;
    }
    i += k;
  }
  return bad;
}

/* The body of the JSON string literal whose opening quote is at q. */
static size_t string_body(const char *q, const char *end, int *escaped) {
  const char *p = q + 1;
  *escaped = 0;
  while (p < end && *p != '"') {
    if (*p == '\\') {
      *escaped = 1;
      p++;
    }
    p++;
  }
  if (p > end) p = end;
  return (size_t)(p - (q + 1));
}

static int next_jsonl(cp_reader *r, cp_record *rec) {
  size_t start = r->pos, next;
  int plain;
  size_t end = line_end(r, start, &plain, &next);
  const char *s = r->data + start;
  if (end == r->len && r->cut) return cut_here(r, s, r->line);
  start_record(r, rec, start);
  rec->span = next - start;
  size_t n = end - start;
  if (n && s[n - 1] == '\r') n--; /* JSON allows CR as white space */
  uint64_t line = rec->line;
  r->pos = next;
  r->line++;
  cp_json_doc_free(r->doc);
  r->doc = NULL;
  rec->text = rec->raw = s;
  if (r->drop_over && n > r->drop_over) {
    /* Parsing would hold it, and more, in memory. */
    cp_problems_add(r->sink, line, 1, start, CP_PROB_TOO_LONG,
                    "line is %zu bytes long; JSON Lines records of more than "
                    "%zu bytes are not read",
                    n, r->drop_over);
    rec->invalid = 1;
    rec->text = "";
    return 1;
  }
  if (cp_is_blank(s, n)) {
    rec->blank = 1;
    return 1;
  }
  const char *body = s;
  if (start == 0 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
    problem_at(r, s, line, s, CP_PROB_BOM,
               "byte order mark (U+FEFF) at the start of the file; save the "
               "file as UTF-8 without BOM");
    rec->invalid = 1;
    body = s + 3;
  }
  size_t bn = n - (size_t)(body - s);
  if (!plain && raw_utf8(r, body, bn, line)) {
    rec->invalid = 1;
    return 1;
  }
  cp_json_error jerr;
  r->doc = cp_json_parse(body, bn, &jerr);
  if (!r->doc && jerr.out_of_memory) {
    r->failed = 1; /* not a problem of the line's */
    return 1;
  }
  if (!r->doc) {
    problem_at(r, s, line, body + jerr.offset, CP_PROB_SYNTAX,
               "invalid JSON: %s", jerr.message);
    rec->invalid = 1;
    return 1;
  }
  const cp_json *root = cp_json_root(r->doc);
  if (root->type != CP_JSON_OBJECT) {
    problem_at(r, s, line, body, CP_PROB_FIELD,
               "expected an object {\"text\", \"intent\"}, got %s",
               cp_json_type_name(root->type));
    rec->invalid = 1;
    return 1;
  }
  const cp_json *t = cp_json_get(root, "text");
  const cp_json *in = cp_json_get(root, "intent");
  const cp_json *an = cp_json_get(root, "annotations");
  int text_ok = 0;
  if (!t) {
    problem_at(r, s, line, body, CP_PROB_FIELD, "missing \"text\"");
  } else if (t->type != CP_JSON_STRING) {
    problem_at(r, s, line, body + t->offset, CP_PROB_FIELD,
               "\"text\" must be a string, got %s", cp_json_type_name(t->type));
  } else {
    text_ok = 1;
  }
  if (!in) {
    problem_at(r, s, line, body, CP_PROB_FIELD, "missing \"intent\"");
    rec->invalid = 1;
  } else if (in->type != CP_JSON_STRING) {
    problem_at(r, s, line, body + in->offset, CP_PROB_FIELD,
               "\"intent\" must be a string, got %s",
               cp_json_type_name(in->type));
    rec->invalid = 1;
  } else if (cp_is_blank(in->u.str.s, in->u.str.len)) {
    problem_at(r, s, line, body + in->offset, CP_PROB_FIELD,
               "\"intent\" must not be empty");
    rec->invalid = 1;
  } else {
    rec->intent = in->u.str.s;
    rec->intent_len = in->u.str.len;
  }
  if (!text_ok) {
    rec->invalid = 1;
    rec->text = "";
    return 1;
  }
  rec->text = t->u.str.s;
  rec->len = t->u.str.len;
  const char *q = body + t->offset;
  int escaped = 0;
  if (q >= s + n || *q != '"') {
    /* The parser promises the offset of the opening quote; without it the
     * text could not be read again for dedupe, so refuse the record. */
    problem_at(r, s, line, body, CP_PROB_SYNTAX,
               "cannot locate the \"text\" string in the line");
    rec->invalid = 1;
    return 1;
  }
  rec->raw = q + 1;
  rec->raw_len = string_body(q, s + n, &escaped);
  rec->enc = escaped ? CP_TEXT_JSON : CP_TEXT_RAW;
  check_text(r, rec, s);
  if (an) {
    rec->annotations = an;
    cp_schema_errors errs;
    cp_schema_errors_init(&errs);
    if (an->type == CP_JSON_NULL) {
      problem_at(r, s, line, body + an->offset, CP_PROB_ANNOTATION,
                 "\"annotations\" must be an array ([] when there are none), "
                 "got null");
      rec->invalid = 1;
    } else {
      cp_schema_annotations(an, (long long)rec->chars, "annotations", &errs);
    }
    if (errs.out_of_memory) r->failed = 1;
    for (size_t i = 0; i < errs.n; i++)
      problem_at(r, s, line, body + errs.items[i].offset, CP_PROB_ANNOTATION,
                 "%s: %s", errs.items[i].path, errs.items[i].message);
    if (errs.n) rec->invalid = 1;
    cp_schema_errors_free(&errs);
  }
  return 1;
}

/* ---- CSV ---------------------------------------------------------------- */

/* Fields of a row past the header's count and one more are only counted:
 * they share the last slot, so that a row of a million commas takes no
 * memory. */
static field *add_field(cp_reader *r) {
  size_t i = r->nfields++;
  if (r->header_done && i > r->ncols + 1) i = r->ncols + 1;
  if (i >= r->fcap) {
    size_t cap = r->fcap ? r->fcap * 2 : 8;
    field *grown = cp_reallocarray(r->fields, cap, sizeof *grown);
    if (!grown) { /* the row ends here for the reader: it stops */
      r->nfields--;
      r->failed = 1;
      memset(&r->spare, 0, sizeof r->spare);
      return &r->spare;
    }
    r->fields = grown;
    r->fcap = cap;
  }
  field *f = &r->fields[i];
  memset(f, 0, sizeof *f);
  return f;
}

/* Splits the record at r->pos into r->fields (RFC 4180: "," separates,
 * CRLF or LF ends a record, quoted fields may hold both, "" is a quote).
 * Returns 0, 1 when a syntax problem was reported, 2 when a quoted field
 * runs to the end of the input (nothing after it means anything). */
static int read_csv_record(cp_reader *r, const char *rec_start,
                           uint64_t line) {
  const char *p = rec_start, *end = r->data + r->len;
  int bad = 0;
  r->nfields = 0;
  for (;;) {
    field *f = add_field(r);
    if (p < end && *p == '"') {
      const char *open = p++;
      f->quoted = 1;
      f->start = p;
      for (;;) {
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q) {
          if (!r->cut) /* else it may close past the limit */
            problem_at(r, rec_start, line, open, CP_PROB_SYNTAX,
                       "quoted field is never closed");
          f->len = (size_t)(end - f->start);
          r->pos = r->len;
          return 2;
        }
        if (q + 1 < end && q[1] == '"') {
          f->escaped = 1;
          p = q + 2;
          continue;
        }
        f->len = (size_t)(q - f->start);
        p = q + 1;
        break;
      }
      if (p < end && *p != ',' && *p != '\n' &&
          !(*p == '\r' && p + 1 < end && p[1] == '\n')) {
        problem_at(r, rec_start, line, p, CP_PROB_SYNTAX,
                   "unexpected character after a closing quote (a quote "
                   "inside a quoted field is written \"\")");
        bad = 1;
        while (p < end && *p != ',' && *p != '\n') p++;
      }
    } else {
      f->start = p;
      while (p < end && *p != ',' && *p != '\n') {
        if (*p == '"' && !bad) {
          problem_at(r, rec_start, line, p, CP_PROB_SYNTAX,
                     "quote inside an unquoted field (quote the whole field "
                     "and write the quote as \"\")");
          bad = 1;
        }
        p++;
      }
      f->len = (size_t)(p - f->start);
      if (p < end && *p == '\n' && f->len && f->start[f->len - 1] == '\r')
        f->len--;
      else if (p == end && f->len && f->start[f->len - 1] == '\r')
        f->len--;
    }
    if (p < end && *p == ',') {
      p++;
      continue;
    }
    if (p < end && *p == '\r') p++;
    if (p < end && *p == '\n') p++;
    break;
  }
  r->pos = (size_t)(p - r->data);
  return bad;
}

/* Whether the record just read (read_csv_record's result `bad`) runs past
 * the size limit: it reaches the end of what may be read without its line
 * ending. */
static int csv_cut(const cp_reader *r, int bad) {
  return r->cut &&
         (bad == 2 || (r->pos == r->len && r->data[r->len - 1] != '\n'));
}

static uint64_t count_newlines(const char *s, size_t n) {
  uint64_t k = 0;
  const char *e = s + n;
  while ((s = memchr(s, '\n', (size_t)(e - s)))) {
    k++;
    s++;
  }
  return k;
}

/* Decoded field content into buf (when it has "" escapes) or in place. */
static void field_text(const field *f, cp_buf *buf, const char **out,
                       size_t *out_len) {
  cp_text_decode(f->escaped ? CP_TEXT_CSV : CP_TEXT_RAW, f->start, f->len, buf,
                 out, out_len);
}

static int csv_header(cp_reader *r) {
  const char *s = r->data;
  if (r->len >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
    cp_problems_add(r->sink, 1, 1, 0, CP_PROB_BOM,
                    "byte order mark (U+FEFF) at the start of the file; save "
                    "the file as UTF-8 without BOM");
    r->pos = 3;
  }
  const char *start = r->data + r->pos;
  uint64_t line = r->line;
  if (csv_cut(r, read_csv_record(r, start, line))) {
    cut_here(r, start, line);
    return -1;
  }
  r->line += count_newlines(start, (size_t)(r->data + r->pos - start));
  int have_text = 0, have_intent = 0;
  for (size_t i = 0; i < r->nfields; i++) {
    const char *t;
    size_t n, a, b;
    field_text(&r->fields[i], &r->text_buf, &t, &n);
    cp_trim_span(t, n, &a, &b);
    if (b - a == 4 && strncasecmp(t + a, "text", 4) == 0 && !have_text) {
      r->col_text = i;
      have_text = 1;
    } else if (b - a == 6 && strncasecmp(t + a, "intent", 6) == 0 &&
               !have_intent) {
      r->col_intent = i;
      have_intent = 1;
    }
  }
  r->ncols = r->nfields;
  r->header_done = 1;
  if (!have_text || !have_intent) {
    problem_at(r, start, line, start, CP_PROB_FIELD,
               "the CSV header must name the columns \"text\" and \"intent\" "
               "(missing %s)",
               !have_text && !have_intent ? "both"
               : !have_text              ? "\"text\""
                                         : "\"intent\"");
    r->stop = 1;
    return -1;
  }
  return 0;
}

static int next_csv(cp_reader *r, cp_record *rec) {
  if (!r->header_done) {
    /* An empty file has no rows to check, so no header to ask for. */
    if (r->len == 0 ||
        (r->len == 3 && !r->cut && memcmp(r->data, "\xEF\xBB\xBF", 3) == 0)) {
      if (r->len) csv_header(r);
      r->stop = 1;
      return 0;
    }
    if (csv_header(r)) return 0;
  }
  if (r->stop || r->pos >= r->len) return 0;
  size_t start = r->pos;
  const char *s = r->data + start;
  start_record(r, rec, start);
  uint64_t line = r->line;
  rec->text = rec->raw = s;
  int bad = read_csv_record(r, s, line);
  if (csv_cut(r, bad)) return cut_here(r, s, line);
  rec->span = r->pos - start;
  r->line += count_newlines(s, r->pos - start);
  if (bad) rec->invalid = 1;
  if (bad == 2) {
    rec->text = "";
    return 1;
  }
  if (r->nfields == 1 && !r->fields[0].quoted && r->fields[0].len == 0) {
    rec->blank = 1; /* an empty line */
    return 1;
  }
  if (r->nfields != r->ncols) {
    /* Too many: at the comma before the first extra field; too few: where
     * the row ends. */
    const char *at;
    if (r->nfields > r->ncols) {
      const field *x = &r->fields[r->ncols];
      at = x->start - (x->quoted ? 2 : 1);
    } else {
      at = r->data + r->pos;
      if (at > s && at[-1] == '\n') at--;
      if (at > s && at[-1] == '\r') at--;
    }
    problem_at(r, s, line, at, CP_PROB_FIELD,
               "row has %zu field%s; the header has %zu", r->nfields,
               r->nfields == 1 ? "" : "s", r->ncols);
    rec->invalid = 1;
  }
  if (r->col_intent < r->nfields) {
    const field *f = &r->fields[r->col_intent];
    const char *t;
    size_t n, a, b;
    field_text(f, &r->intent_buf, &t, &n);
    cp_trim_span(t, n, &a, &b);
    if (a == b) {
      problem_at(r, s, line, f->start, CP_PROB_FIELD, "intent is empty");
      rec->invalid = 1;
    } else if (!cp_utf8_valid(t + a, b - a)) {
      problem_at(r, s, line, f->start, CP_PROB_UTF8,
                 "intent is not valid UTF-8");
      rec->invalid = 1;
    } else {
      rec->intent = t + a;
      rec->intent_len = b - a;
    }
  }
  if (r->col_text < r->nfields) {
    const field *f = &r->fields[r->col_text];
    rec->raw = f->start;
    rec->raw_len = f->len;
    rec->enc = f->escaped ? CP_TEXT_CSV : CP_TEXT_RAW;
    field_text(f, &r->text_buf, &rec->text, &rec->len);
    check_text(r, rec, s);
  } else {
    rec->invalid = 1;
    rec->text = "";
  }
  return 1;
}

static int next(cp_reader *r, cp_record *rec) {
  int got;
  if (r->fmt == CP_FMT_CSV) got = next_csv(r, rec);
  else if (r->pos < r->len)
    got = r->fmt == CP_FMT_JSONL ? next_jsonl(r, rec) : next_line(r, rec);
  else got = 0;
  /* The limit fell between two records (or after a CSV header that ended
   * the reading): the input still goes on past it. */
  if (!got && r->cut && !r->cut_reported)
    cut_here(r, r->data + r->pos, r->line);
  return got;
}

int cp_reader_next(cp_reader *r, cp_record *rec) {
  if (r->failed) return 0;
  int got = next(r, rec);
  /* a record read for want of memory is not what the input holds */
  if (!cp_buf_ok(&r->text_buf) || !cp_buf_ok(&r->intent_buf) ||
      r->sink->out_of_memory)
    r->failed = 1;
  return r->failed ? 0 : got;
}

int cp_reader_failed(const cp_reader *r) { return r->failed; }

/* ---- file mapping -------------------------------------------------------- */

/* What a file that is not a regular one is, for the message refusing it. */
static const char *file_kind(mode_t mode) {
  if (S_ISDIR(mode)) return "a directory";
  if (S_ISFIFO(mode)) return "a named pipe (FIFO)";
  if (S_ISCHR(mode)) return "a character device";
  if (S_ISBLK(mode)) return "a block device";
  if (S_ISSOCK(mode)) return "a socket";
  return "not a file";
}

/* Why path could not be opened, in err: the process or the system out of
 * file descriptors is said in words a user acts on. Returns -2 when the
 * process or the system ran out of something, else -1 (see reader.h). */
static int open_error(const char *path, int e, char *err, size_t errlen) {
  struct rlimit rl;
  if (e == EMFILE && getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
      rl.rlim_cur != RLIM_INFINITY)
    snprintf(err, errlen,
             "%s: cannot open: too many open files (this process may have "
             "%llu; raise the limit with ulimit -n)",
             path, (unsigned long long)rl.rlim_cur);
  else if (e == EMFILE)
    snprintf(err, errlen, "%s: cannot open: too many open files", path);
  else if (e == ENFILE)
    snprintf(err, errlen,
             "%s: cannot open: too many open files in the system", path);
  else snprintf(err, errlen, "%s: %s", path, strerror(e));
  return e == EMFILE || e == ENFILE || e == ENOMEM ? -2 : -1;
}

int cp_file_map_open(cp_file_map *m, const char *path, uint64_t limit,
                     char *err, size_t errlen) {
  memset(m, 0, sizeof *m);
  m->fd = -1;
  /* Refused before opening: opening a FIFO waits for a writer, and
   * opening a device can do things. */
  struct stat st;
  if (stat(path, &st) != 0) return open_error(path, errno, err, errlen);
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file but %s", path,
             file_kind(st.st_mode));
    return -1;
  }
  /* O_NONBLOCK: should it have become a FIFO meanwhile, open returns at
   * once, and fstat below refuses it. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY);
  if (fd < 0) return open_error(path, errno, err, errlen);
  if (fstat(fd, &st) != 0) {
    int rc = open_error(path, errno, err, errlen);
    close(fd);
    return rc;
  }
  if (!S_ISREG(st.st_mode)) {
    snprintf(err, errlen, "%s: not a regular file but %s", path,
             file_kind(st.st_mode));
    close(fd);
    return -1;
  }
  m->fd = fd;
  m->file_size = (uint64_t)st.st_size;
  uint64_t want = limit && m->file_size > limit ? limit : m->file_size;
  if (want > SIZE_MAX) {
    snprintf(err, errlen, "%s: too large to map (%llu bytes)", path,
             (unsigned long long)m->file_size);
    close(fd);
    m->fd = -1;
    return -1;
  }
  m->size = (size_t)want;
  if (m->size == 0) {
    m->data = "";
    return 0;
  }
  void *p = mmap(NULL, m->size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (p == MAP_FAILED && errno == ENOMEM) {
    cp_alloc_note_failure();
    snprintf(err, errlen, "%s: cannot map: out of memory", path);
    close(fd);
    m->fd = -1;
    return -2;
  }
  if (p == MAP_FAILED) {
    snprintf(err, errlen, "%s: cannot map: %s", path, strerror(errno));
    close(fd);
    m->fd = -1;
    return -1;
  }
  m->data = p;
  m->mapped = 1;
  return 0;
}

void cp_file_map_release(cp_file_map *m, size_t from, size_t to) {
  if (!m->mapped) return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (to > m->size) to = m->size;
  from = (from + page - 1) / page * page;
  to = to / page * page;
  if (to > from) madvise((void *)(uintptr_t)(m->data + from), to - from, MADV_DONTNEED);
}

void cp_file_map_prefetch(cp_file_map *m, size_t from, size_t to) {
  if (!m->mapped) return;
  size_t page = (size_t)sysconf(_SC_PAGESIZE);
  if (to > m->size) to = m->size;
  from = from / page * page;
  if (to <= from) return;
#ifdef MADV_POPULATE_READ
  if (madvise((void *)(uintptr_t)(m->data + from), to - from,
              MADV_POPULATE_READ) == 0)
    return;
#endif
  madvise((void *)(uintptr_t)(m->data + from), to - from, MADV_WILLNEED);
}

void cp_file_map_copy(const cp_file_map *m, size_t from, size_t to, char *dst) {
  if (to > m->size) to = m->size;
  while (m->mapped && from < to) {
    ssize_t got = pread(m->fd, dst, to - from, (off_t)from);
    if (got <= 0) break; /* the file shrank, or EINTR: the mapping answers */
    from += (size_t)got;
    dst += got;
  }
  if (from < to) memcpy(dst, m->data + from, to - from);
}

void cp_file_map_close(cp_file_map *m) {
  if (m->mapped) munmap((void *)(uintptr_t)m->data, m->size);
  if (m->fd >= 0) close(m->fd);
  memset(m, 0, sizeof *m);
  m->fd = -1;
}
