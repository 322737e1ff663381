/*
 * test_reader.c -- unit tests of reader.c: the line, JSON Lines and CSV
 * readers (records, line numbers, where each problem is), decoding a text
 * again from its raw bytes, format guessing and the file mapping.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "reader.h"

typedef struct rec {
  char text[256];
  char intent[64];
  int has_intent;
  uint64_t line, offset;
  int blank, invalid, has_annotations;
  char raw_decoded[256]; /* the text decoded again from its raw bytes */
} rec;

static rec recs[64];
static size_t nrecs;
static cp_problems probs;

static void read_all(const char *data, size_t len, cp_format fmt,
                     size_t max_chars, uint64_t max_bytes) {
  cp_problems_free(&probs);
  cp_problems_init(&probs, 50);
  cp_limits lim;
  cp_limits_init(&lim);
  lim.max_chars = max_chars;
  lim.max_bytes = max_bytes;
  cp_reader *r = cp_reader_new("in", data, len, fmt, &lim, &probs);
  cp_record x;
  cp_buf scratch = CP_BUF_INIT;
  nrecs = 0;
  while (cp_reader_next(r, &x) && nrecs < 64) {
    rec *o = &recs[nrecs++];
    memset(o, 0, sizeof *o);
    snprintf(o->text, sizeof o->text, "%.*s", (int)x.len, x.text);
    if (x.intent) {
      o->has_intent = 1;
      snprintf(o->intent, sizeof o->intent, "%.*s", (int)x.intent_len, x.intent);
    }
    o->line = x.line;
    o->offset = x.offset;
    o->blank = x.blank;
    o->invalid = x.invalid;
    o->has_annotations = x.annotations != NULL;
    if (!x.blank && !x.invalid) {
      const char *p;
      size_t n;
      cp_text_decode(x.enc, x.raw, x.raw_len, &scratch, &p, &n);
      snprintf(o->raw_decoded, sizeof o->raw_decoded, "%.*s", (int)n, p);
    }
  }
  cp_buf_free(&scratch);
  cp_reader_free(r);
}

static void rd(const char *data, cp_format fmt) {
  read_all(data, strlen(data), fmt, 500, 52428800);
}

#define PROBLEM(i, l, c, o, k)              \
  do {                                      \
    CHECK((size_t)(i) < probs.n);           \
    if ((size_t)(i) < probs.n) {            \
      CHECK_INT(probs.items[i].line, l);    \
      CHECK_INT(probs.items[i].column, c);  \
      CHECK_INT(probs.items[i].offset, o);  \
      CHECK_INT(probs.items[i].kind, k);    \
    }                                       \
  } while (0)

static void test_lines(void) {
  rd("hello\n\n  \nbook a flight\nlast", CP_FMT_LINES);
  CHECK_INT(nrecs, 5);
  CHECK_STR(recs[0].text, "hello");
  CHECK_INT(recs[0].line, 1);
  CHECK(recs[1].blank);
  CHECK(recs[2].blank);
  CHECK_INT(recs[3].line, 4);
  CHECK_INT(recs[3].offset, 10);
  CHECK_STR(recs[4].text, "last");
  CHECK_INT(recs[4].line, 5);
  CHECK_STR(recs[4].raw_decoded, "last");
  CHECK_INT(probs.total, 0);
  rd("", CP_FMT_LINES);
  CHECK_INT(nrecs, 0);
  rd("\n", CP_FMT_LINES);
  CHECK_INT(nrecs, 1);
  CHECK(recs[0].blank);
}

static void test_lines_problems(void) {
  rd("\xEF\xBB\xBFone\ntwo\x01\nthr\xFF" "ee\ncr\r\n", CP_FMT_LINES);
  CHECK_INT(nrecs, 4);
  CHECK_INT(probs.total, 4);
  PROBLEM(0, 1, 1, 0, CP_PROB_BOM);
  PROBLEM(1, 2, 4, 10, CP_PROB_CONTROL);
  PROBLEM(2, 3, 4, 15, CP_PROB_UTF8);
  PROBLEM(3, 4, 3, 21, CP_PROB_CONTROL);
  CHECK(recs[0].invalid && recs[1].invalid && recs[2].invalid && recs[3].invalid);
  /* Too long, in a plain line and in one with a tab. */
  read_all("abcdef\na\tcdef\nabc\n", 18, CP_FMT_LINES, 4, 0);
  CHECK_INT(probs.total, 2);
  PROBLEM(0, 1, 5, 4, CP_PROB_TOO_LONG);
  PROBLEM(1, 2, 5, 11, CP_PROB_TOO_LONG);
  CHECK(!recs[2].invalid);
}

static void test_size_limit(void) {
  /* The limit falls inside line 2 at byte 7 ("cd|ef"): reading stops
   * before that line, which is not checked. */
  read_all("ab\ncd\x01" "f\ngh\n", 11, CP_FMT_LINES, 500, 7);
  CHECK_INT(nrecs, 1);
  CHECK_STR(recs[0].text, "ab");
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 2, 5, 7, CP_PROB_TOO_LARGE);
  CHECK(strstr(probs.items[0].reason, "11 bytes") != NULL);
  read_all("ab\ncd\n", 6, CP_FMT_LINES, 500, 6);
  CHECK_INT(probs.total, 0);
  CHECK_INT(nrecs, 2);
  /* At a line boundary: the next line starts past the limit. */
  read_all("ab\ncd\nef\n", 9, CP_FMT_LINES, 500, 6);
  CHECK_INT(nrecs, 2);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 3, 1, 6, CP_PROB_TOO_LARGE);
  /* A line ending past the limit is cut even when only its newline is. */
  read_all("ab\ncd\n", 6, CP_FMT_LINES, 500, 5);
  CHECK_INT(nrecs, 1);
  PROBLEM(0, 2, 3, 5, CP_PROB_TOO_LARGE);
  /* Columns are code points: "é" is one. */
  read_all("\xC3\xA9\xC3\xA9xyz\n", 8, CP_FMT_LINES, 500, 5);
  CHECK_INT(nrecs, 0);
  PROBLEM(0, 1, 4, 5, CP_PROB_TOO_LARGE);
  /* Only the first max_bytes are there to read (ASan sees any byte past
   * them): the reader is told the input's real size. */
  char *cut = malloc(7);
  memcpy(cut, "ab\ncdef", 7);
  cp_problems_free(&probs);
  cp_problems_init(&probs, 50);
  cp_limits lim;
  cp_limits_init(&lim);
  lim.max_bytes = 7;
  cp_reader *r = cp_reader_new("in", cut, 7, CP_FMT_LINES, &lim, &probs);
  cp_reader_set_size(r, 300u << 20);
  cp_record x;
  CHECK_INT(cp_reader_next(r, &x), 1);
  CHECK_INT(cp_reader_next(r, &x), 0);
  CHECK_INT(cp_reader_next(r, &x), 0);
  CHECK_INT(probs.total, 1);
  CHECK(strstr(probs.items[0].reason, "file is 314572800 bytes") != NULL);
  cp_reader_free(r);
  free(cut);
}

static void test_size_limit_formats(void) {
  const char *j = "{\"text\":\"a\",\"intent\":\"x\"}\n"
                  "{\"text\":\"b\",\"intent\":\"x\"}\n";
  read_all(j, strlen(j), CP_FMT_JSONL, 500, 40);
  CHECK_INT(nrecs, 1);
  CHECK_INT(probs.total, 1); /* not "invalid JSON" for the cut line */
  PROBLEM(0, 2, 15, 40, CP_PROB_TOO_LARGE);
  /* CSV: the limit inside a quoted field that spans lines, which closes
   * past it: no "never closed". */
  const char *c = "text,intent\n\"one\ntwo\",x\nthree,y\n";
  read_all(c, strlen(c), CP_FMT_CSV, 500, 16);
  CHECK_INT(nrecs, 0);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 2, 5, 16, CP_PROB_TOO_LARGE);
  read_all(c, strlen(c), CP_FMT_CSV, 500, 24);
  CHECK_INT(nrecs, 1);
  CHECK_STR(recs[0].text, "one\ntwo");
  PROBLEM(probs.n - 1, 4, 1, 24, CP_PROB_TOO_LARGE);
  /* The header itself cut. */
  read_all(c, strlen(c), CP_FMT_CSV, 500, 6);
  CHECK_INT(nrecs, 0);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 1, 7, 6, CP_PROB_TOO_LARGE);
}

static void test_jsonl(void) {
  rd("{\"text\":\"book a flight\",\"intent\":\"travel\"}\n"
     "\n"
     "{\"intent\":\"greet\",\"text\":\"say \\\"hi\\\" \\u00e9\",\"annotations\":[]}\r\n",
     CP_FMT_JSONL);
  CHECK_INT(nrecs, 3);
  CHECK_INT(probs.total, 0);
  CHECK_STR(recs[0].text, "book a flight");
  CHECK_STR(recs[0].intent, "travel");
  CHECK_STR(recs[0].raw_decoded, "book a flight");
  CHECK(recs[1].blank);
  CHECK_STR(recs[2].text, "say \"hi\" \xC3\xA9");
  CHECK_STR(recs[2].raw_decoded, "say \"hi\" \xC3\xA9");
  CHECK_STR(recs[2].intent, "greet");
  CHECK(recs[2].has_annotations);
  CHECK_INT(recs[2].line, 3);
}

static void test_jsonl_problems(void) {
  rd("{\"text\":\"a\",\"intent\":\"x\"\n"          /* 1: syntax */
     "[1,2]\n"                                   /* 2: not an object */
     "{\"intent\":\"x\"}\n"                      /* 3: no text */
     "{\"text\":5,\"intent\":\"x\"}\n"           /* 4: text not a string */
     "{\"text\":\"ok\"}\n"                       /* 5: no intent */
     "{\"text\":\"ok\",\"intent\":\" \"}\n"      /* 6: empty intent */
     "{\"text\":\"a\\u0001b\",\"intent\":\"x\"}\n" /* 7: control via escape */
     "{\"text\":\"ab\",\"intent\":\"x\",\"annotations\":[{\"entity_id\":\"e\",\"start\":1,\"end\":3}]}\n"
     "{\"text\":\"caf\xC3\xA9\",\"intent\":\"\xFF\"}\n", /* 9: invalid UTF-8 */
     CP_FMT_JSONL);
  CHECK_INT(nrecs, 9);
  for (size_t i = 0; i < 9; i++) CHECK(recs[i].invalid);
  CHECK_INT(probs.total, 9);
  PROBLEM(0, 1, 25, 24, CP_PROB_SYNTAX);
  CHECK(strstr(probs.items[0].reason, "invalid JSON") != NULL);
  PROBLEM(1, 2, 1, 25, CP_PROB_FIELD);
  PROBLEM(2, 3, 1, 31, CP_PROB_FIELD);
  CHECK(strstr(probs.items[2].reason, "missing \"text\"") != NULL);
  PROBLEM(3, 4, 9, 54, CP_PROB_FIELD);
  CHECK(strstr(probs.items[3].reason, "must be a string, got integer") != NULL);
  PROBLEM(4, 5, 1, 70, CP_PROB_FIELD);
  CHECK(strstr(probs.items[4].reason, "missing \"intent\"") != NULL);
  PROBLEM(5, 6, 23, 106, CP_PROB_FIELD);
  /* The escape \u0001 starts at column 11 of line 7. */
  PROBLEM(6, 7, 11, 121, CP_PROB_CONTROL);
  PROBLEM(7, 8, 75, 218, CP_PROB_ANNOTATION);
  CHECK(strstr(probs.items[7].reason, "annotations[0].end") != NULL);
  CHECK(strstr(probs.items[7].reason, "(2 characters)") != NULL);
  PROBLEM(8, 9, 26, 249, CP_PROB_UTF8);
}

static void test_jsonl_bom(void) {
  rd("\xEF\xBB\xBF{\"text\":\"a\",\"intent\":\"x\"}\n", CP_FMT_JSONL);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 1, 1, 0, CP_PROB_BOM);
  CHECK_STR(recs[0].text, "a"); /* still parsed, to find other problems */
}

static void test_csv(void) {
  rd("Intent,text,source\r\n"
     "travel,book a flight,web\r\n"
     "greet,\"hello, world\",app\r\n"
     "greet,\"she said \"\"hi\"\"\",app\n"
     "\n"
     "note,\"two\nlines\",x\n"
     "travel, padded ,web",
     CP_FMT_CSV);
  CHECK_INT(nrecs, 6);
  CHECK_STR(recs[0].text, "book a flight");
  CHECK_STR(recs[0].intent, "travel");
  CHECK_INT(recs[0].line, 2);
  CHECK_STR(recs[1].text, "hello, world");
  CHECK_STR(recs[1].raw_decoded, "hello, world");
  CHECK_STR(recs[2].text, "she said \"hi\"");
  CHECK_STR(recs[2].raw_decoded, "she said \"hi\"");
  CHECK_INT(recs[2].line, 4);
  CHECK(recs[3].blank);
  CHECK_INT(recs[3].line, 5);
  /* An embedded newline is read, and is a control character in a text. */
  CHECK_STR(recs[4].text, "two\nlines");
  CHECK(recs[4].invalid);
  CHECK_INT(recs[4].line, 6);
  CHECK_STR(recs[5].text, " padded ");
  CHECK_INT(recs[5].line, 8);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 6, 10, 110, CP_PROB_CONTROL);
}

static void test_csv_embedded_newline_other_column(void) {
  rd("text,intent,notes\n"
     "hi,greet,\"line one\nline two\"\n"
     "bye,farewell,x\n",
     CP_FMT_CSV);
  CHECK_INT(nrecs, 2);
  CHECK_INT(probs.total, 0);
  CHECK_STR(recs[1].text, "bye");
  CHECK_INT(recs[1].line, 4);
}

static void test_csv_problems(void) {
  rd("text,intent\n"
     "a \"quoted\" word,x\n"   /* 2: bare quote */
     "\"closed\"junk,x\n"      /* 3: after the closing quote */
     "only one field\n"       /* 4: too few */
     "a,b,c\n"                /* 5: too many */
     "text here,\n"           /* 6: empty intent */
     "\"never closed,x\n",    /* 7: unterminated */
     CP_FMT_CSV);
  CHECK_INT(probs.total, 6);
  PROBLEM(0, 2, 3, 14, CP_PROB_SYNTAX);
  CHECK(strstr(probs.items[0].reason, "unquoted") != NULL);
  PROBLEM(1, 3, 9, 38, CP_PROB_SYNTAX);
  PROBLEM(2, 4, 15, 59, CP_PROB_FIELD);
  CHECK(strstr(probs.items[2].reason, "row has 1 field; the header has 2") != NULL);
  PROBLEM(3, 5, 4, 63, CP_PROB_FIELD);
  PROBLEM(4, 6, 11, 76, CP_PROB_FIELD);
  PROBLEM(5, 7, 1, 77, CP_PROB_SYNTAX);
  CHECK(strstr(probs.items[5].reason, "never closed") != NULL);
  for (size_t i = 0; i < nrecs; i++) CHECK(recs[i].invalid);
}

static void test_csv_header(void) {
  rd("utterance,label\nhi,greet\n", CP_FMT_CSV);
  CHECK_INT(nrecs, 0);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 1, 1, 0, CP_PROB_FIELD);
  CHECK(strstr(probs.items[0].reason, "missing both") != NULL);
  rd("text,label\nhi,greet\n", CP_FMT_CSV);
  CHECK(strstr(probs.items[0].reason, "\"intent\"") != NULL);
  rd("", CP_FMT_CSV);
  CHECK_INT(nrecs, 0);
  CHECK_INT(probs.total, 0);
  rd("\xEF\xBB\xBFtext,intent\nhi,greet\n", CP_FMT_CSV);
  CHECK_INT(nrecs, 1);
  CHECK_INT(probs.total, 1);
  PROBLEM(0, 1, 1, 0, CP_PROB_BOM);
}

static void test_decode(void) {
  cp_buf b = CP_BUF_INIT;
  const char *p;
  size_t n;
  const char *j = "a\\\"b\\\\c\\/d\\n\\t\\u00e9\\ud83d\\ude00\\ud800x";
  cp_text_decode(CP_TEXT_JSON, j, strlen(j), &b, &p, &n);
  CHECK_INT(n, 19);
  CHECK(memcmp(p, "a\"b\\c/d\n\t\xC3\xA9\xF0\x9F\x98\x80\xEF\xBF\xBDx", n) == 0);
  cp_text_decode(CP_TEXT_CSV, "say \"\"hi\"\"", 10, &b, &p, &n);
  CHECK_INT(n, 8);
  CHECK(memcmp(p, "say \"hi\"", 8) == 0);
  cp_text_decode(CP_TEXT_RAW, "xyz", 3, &b, &p, &n);
  CHECK_INT(n, 3);
  cp_buf_free(&b);
}

static void test_formats(void) {
  cp_format f;
  CHECK_INT(cp_format_guess("data/x.jsonl"), CP_FMT_JSONL);
  CHECK_INT(cp_format_guess("x.NDJSON"), CP_FMT_JSONL);
  CHECK_INT(cp_format_guess("x.csv"), CP_FMT_CSV);
  CHECK_INT(cp_format_guess("x.txt"), CP_FMT_LINES);
  CHECK_INT(cp_format_guess("csv"), CP_FMT_LINES);
  CHECK_INT(cp_format_parse("jsonl", &f), 0);
  CHECK_INT(f, CP_FMT_JSONL);
  CHECK_INT(cp_format_parse("json", &f), -1);
  CHECK_STR(cp_format_name(CP_FMT_CSV), "csv");
}

static void test_file_map(void) {
  char path[512];
  const char *tmp = getenv("TMPDIR");
  snprintf(path, sizeof path, "%s/cp_reader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  const char *body = "one\ntwo\n";
  CHECK_INT(write(fd, body, 8), 8);
  close(fd);
  cp_file_map m;
  char err[256];
  CHECK_INT(cp_file_map_open(&m, path, 0, err, sizeof err), 0);
  CHECK_INT(m.size, 8);
  CHECK(memcmp(m.data, body, 8) == 0);
  cp_file_map_release(&m, 0, m.size);
  CHECK(memcmp(m.data, body, 8) == 0); /* dropped pages come back */
  cp_file_map_release(&m, 0, m.size);
  cp_file_map_prefetch(&m, 0, m.size);
  CHECK(memcmp(m.data, body, 8) == 0);
  char part[8] = {0};
  cp_file_map_copy(&m, 4, 100, part); /* clipped at the end of the file */
  CHECK(memcmp(part, "two\n", 4) == 0 && part[4] == 0);
  cp_file_map_close(&m);
  unlink(path);
  CHECK_INT(cp_file_map_open(&m, path, 0, err, sizeof err), -1);
  CHECK(strstr(err, "No such file") != NULL);
  CHECK_INT(cp_file_map_open(&m, ".", 0, err, sizeof err), -1);
  CHECK(strstr(err, "not a regular file") != NULL);
}

/* A temporary file holding data[0..len); the path goes in path. */
static void temp_file(char *path, size_t size, const char *data, size_t len) {
  const char *tmp = getenv("TMPDIR");
  snprintf(path, size, "%s/cp_reader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  int fd = mkstemp(path);
  CHECK(fd >= 0);
  CHECK_INT(write(fd, data, len), len);
  close(fd);
}

typedef struct seen {
  cp_problem items[64];
  size_t n;
  uint64_t chars[4];
  int invalid[4];
} seen;

/* Reads the mapped file at path as lines, dropping records longer than
 * drop_over (0: none), and keeps what it found. */
static void read_mapped(const char *path, size_t drop_over, size_t max_chars,
                        seen *out) {
  cp_file_map m;
  char err[256];
  CHECK_INT(cp_file_map_open(&m, path, 0, err, sizeof err), 0);
  cp_problems p;
  cp_problems_init(&p, 64);
  cp_limits lim;
  cp_limits_init(&lim);
  lim.max_chars = max_chars;
  cp_reader *r = cp_reader_new("in", m.data, m.size, CP_FMT_LINES, &lim, &p);
  if (drop_over) cp_reader_drop_long(r, &m, drop_over);
  cp_record x;
  size_t k = 0;
  memset(out, 0, sizeof *out);
  while (cp_reader_next(r, &x)) {
    if (k < 4) {
      out->chars[k] = x.chars;
      out->invalid[k] = x.invalid;
    }
    k++;
  }
  CHECK_INT(k, 4);
  out->n = p.n;
  memcpy(out->items, p.items, p.n * sizeof *p.items);
  cp_reader_free(r);
  cp_problems_free(&p);
  cp_file_map_close(&m);
}

/* A line read in pieces with its pages dropped behind gets the problems,
 * columns and offsets of one read whole: characters across the pieces'
 * ends, a control character, ill-formed UTF-8 and the length limit far
 * in. */
static void test_long_lines_dropped(void) {
  size_t piece = (size_t)1 << 20, n = 3 * piece + 4096;
  char *data = malloc(n + 64);
  size_t len = 0;
  len += (size_t)sprintf(data, "short\n");
  size_t start = len;
  for (; len < start + n; len++) data[len] = (char)('a' + len % 7);
  memcpy(data + start + piece - 1, "\xE2\x82\xAC", 3);          /* across */
  memcpy(data + start + 2 * piece - 2, "\xF0\x9F\x98\x80", 4); /* across */
  data[start + piece + 77] = '\x01';
  data[start + 2 * piece + 5] = '\xFF';
  memcpy(data + start + 3 * piece - 1, "\xC3", 1); /* cut short at the end */
  data[start + 3 * piece] = 'q';
  data[len++] = '\n';
  len += (size_t)sprintf(data + len, "x\tplain but long %s\n", "tail");
  len += (size_t)sprintf(data + len, "last\n");
  char path[512];
  temp_file(path, sizeof path, data, len);
  size_t limits[2] = {0, piece + 100};
  for (int k = 0; k < 2; k++) {
    seen whole, pieces;
    read_mapped(path, 0, limits[k], &whole);
    read_mapped(path, 64 << 10, limits[k], &pieces);
    CHECK_INT(whole.n, limits[k] ? 4 : 3);
    CHECK_INT(pieces.n, whole.n);
    for (size_t i = 0; i < whole.n && i < pieces.n; i++) {
      CHECK_INT(pieces.items[i].line, whole.items[i].line);
      CHECK_INT(pieces.items[i].column, whole.items[i].column);
      CHECK_INT(pieces.items[i].offset, whole.items[i].offset);
      CHECK_INT(pieces.items[i].kind, whole.items[i].kind);
      CHECK_STR(pieces.items[i].reason, whole.items[i].reason);
    }
    for (int i = 0; i < 4; i++) {
      CHECK_INT(pieces.chars[i], whole.chars[i]);
      CHECK_INT(pieces.invalid[i], whole.invalid[i]);
    }
  }
  unlink(path);
  free(data);
}

/* A row of many fields is counted, not kept field by field. */
static void test_csv_many_fields(void) {
  size_t commas = 100000;
  char *data = malloc(commas + 64);
  size_t len = (size_t)sprintf(data, "text,intent\nhi,greet");
  memset(data + len, ',', commas);
  len += commas;
  data[len++] = '\n';
  read_all(data, len, CP_FMT_CSV, 500, 0);
  CHECK_INT(nrecs, 1);
  CHECK_INT(probs.total, 1);
  CHECK(strstr(probs.items[0].reason, "row has 100002 fields; the header has 2") != NULL);
  PROBLEM(0, 2, 9, 20, CP_PROB_FIELD);
  free(data);
}

static void test_file_map_limit(void) {
  char path[512];
  temp_file(path, sizeof path, "one\ntwo\nthree\n", 14);
  cp_file_map m;
  char err[256];
  CHECK_INT(cp_file_map_open(&m, path, 5, err, sizeof err), 0);
  CHECK_INT(m.size, 5);
  CHECK_INT(m.file_size, 14);
  cp_file_map_close(&m);
  CHECK_INT(cp_file_map_open(&m, path, 100, err, sizeof err), 0);
  CHECK_INT(m.size, 14);
  CHECK_INT(m.file_size, 14);
  cp_file_map_close(&m);
  unlink(path);
}

/* What is not a regular file is refused at once, saying what it is: a
 * FIFO nobody writes to would block an open for good. */
static void test_file_map_refuses(void) {
  char dir[512], fifo[600];
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/cp_reader_XXXXXX", tmp && *tmp ? tmp : "/tmp");
  CHECK(mkdtemp(dir) != NULL);
  snprintf(fifo, sizeof fifo, "%s/fifo", dir);
  CHECK_INT(mkfifo(fifo, 0600), 0);
  cp_file_map m;
  char err[700];
  CHECK_INT(cp_file_map_open(&m, fifo, 0, err, sizeof err), -1);
  CHECK(strstr(err, "not a regular file but a named pipe (FIFO)") != NULL);
  CHECK(strstr(err, fifo) != NULL);
  CHECK_INT(cp_file_map_open(&m, "/dev/null", 0, err, sizeof err), -1);
  CHECK(strstr(err, "a character device") != NULL);
  CHECK_INT(cp_file_map_open(&m, dir, 0, err, sizeof err), -1);
  CHECK(strstr(err, "not a regular file but a directory") != NULL);
  unlink(fifo);
  rmdir(dir);
}

/* Reads all of data; returns the records read, with the problems counted
 * in *problems and whether the reader stopped for want of memory. */
static int read_counting(const char *data, cp_format fmt, uint64_t *problems,
                         int *failed) {
  cp_problems p;
  cp_problems_init(&p, 100);
  cp_reader *r = cp_reader_new("oom", data, strlen(data), fmt, NULL, &p);
  int n = 0;
  cp_record one;
  while (r && cp_reader_next(r, &one)) n++;
  *failed = !r || cp_reader_failed(r) || p.out_of_memory;
  *problems = p.total;
  cp_reader_free(r);
  cp_problems_free(&p);
  return n;
}

/* A reader that runs out of memory stops and says so, so that what it
 * found is not taken for a result (a field that would not decode looks
 * empty); unless what failed was not needed, and then all is as without. */
static void test_out_of_memory(void) {
  static const char *const inputs[] = {
      "text,intent,a,b,c,d,e,f,g,h,i,j\n"
      "\"say \"\"hi\"\"\",greet,1,2,3,4,5,6,7,8,9,10\n"
      "\"book, a flight\",\"travel \"\"now\"\"\",1,2,3,4,5,6,7,8,9,10\n",
      "{\"text\":\"book a flight\",\"intent\":\"travel\",\"annotations\":[]}\n"
      "{\"text\":\"caf\\u00e9 please\",\"intent\":\"food\"}\n"
      "{\"text\":\"x\",\"intent\":\"y\",\"annotations\":[{\"entity_id\":\"e\",\"start\":0,\"end\":1}]}\n"};
  static const cp_format fmts[] = {CP_FMT_CSV, CP_FMT_JSONL};
  for (int t = 0; t < 2; t++) {
    uint64_t want_problems;
    int failed;
    int want = read_counting(inputs[t], fmts[t], &want_problems, &failed);
    CHECK(!failed && want_problems == 0);
    for (long k = 1;; k++) {
      uint64_t problems;
      cp_alloc_fail_at(k);
      int n = read_counting(inputs[t], fmts[t], &problems, &failed);
      int pending = cp_alloc_fail_pending();
      cp_alloc_fail_at(0);
      if (pending) {
        CHECK_INT(n, want);
        break;
      }
      /* stopped short (what it found is then no result), or -- a path for a
       * message it did not need -- whole and without a made-up problem */
      if (failed) {
        CHECK(n < want);
      } else {
        CHECK_INT(n, want);
        CHECK_INT(problems, 0);
      }
    }
  }
}

int main(void) {
  RUN(test_lines);
  RUN(test_lines_problems);
  RUN(test_size_limit);
  RUN(test_size_limit_formats);
  RUN(test_long_lines_dropped);
  RUN(test_csv_many_fields);
  RUN(test_jsonl);
  RUN(test_jsonl_problems);
  RUN(test_jsonl_bom);
  RUN(test_csv);
  RUN(test_csv_embedded_newline_other_column);
  RUN(test_csv_problems);
  RUN(test_csv_header);
  RUN(test_decode);
  RUN(test_formats);
  RUN(test_file_map);
  RUN(test_file_map_limit);
  RUN(test_file_map_refuses);
  cp_problems_free(&probs);
  RUN(test_out_of_memory);
  DONE();
}
