/*
 * test_audit.c -- the audit log: chain continuity across reopen and
 * rotation, every kind of tampering found at the right line (the end of
 * the chain through the head file), torn last lines tolerated and
 * recovered, several writers on one file, and writes that fail stopping
 * the log instead of leaving a torn or silently incomplete chain.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "audit.h"
#include "buf.h"
#include "check.h"

static char dir[256];

static const char *path_in(const char *name) {
  static char p[512];
  snprintf(p, sizeof p, "%s/%s", dir, name);
  return p;
}

static cp_audit_record rec(const char *event, const char *fields) {
  cp_audit_record r = {"run-1", "acme", "intents",
                       event,   fields, fields ? strlen(fields) : 0};
  return r;
}

/* Removes the log at name and its head file: a new chain starts there. */
static void remove_log(const char *name) {
  char head[600];
  snprintf(head, sizeof head, "%s.head", path_in(name));
  unlink(head);
  unlink(path_in(name));
}

/* Writes n records "i":1..n to a fresh log at name. */
static void write_log(const char *name, int n, uint64_t max_bytes) {
  const char *p = path_in(name);
  remove_log(name);
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, max_bytes};
  char *err = NULL;
  cp_audit *a = cp_audit_open(p, &o, &err);
  CHECK(a != NULL);
  for (int i = 1; i <= n; i++) {
    char f[64];
    snprintf(f, sizeof f, "\"i\":%d,\"text\":\"example %d\"", i, i);
    cp_audit_record r = rec("request", f);
    CHECK_INT(cp_audit_append(a, &r, &err), 0);
  }
  CHECK_INT(cp_audit_close(a, &err), 0);
}

/* ---- files as arrays of lines ---------------------------------------------
 */

typedef struct lines {
  char *items[256];
  int n;
  int trailing_nl;
} lines;

static void read_lines(const char *name, lines *l) {
  FILE *f = fopen(path_in(name), "rb");
  memset(l, 0, sizeof *l);
  if (!f) return;
  char buf[8192];
  size_t len = 0;
  int c;
  while ((c = fgetc(f)) != EOF) {
    if (c == '\n') {
      l->items[l->n++] = cp_strndup(buf, len);
      len = 0;
    } else if (len < sizeof buf - 1) {
      buf[len++] = (char)c;
    }
  }
  l->trailing_nl = len == 0;
  if (len) l->items[l->n++] = cp_strndup(buf, len);
  fclose(f);
}

static void write_lines(const char *name, const lines *l) {
  FILE *f = fopen(path_in(name), "wb");
  for (int i = 0; i < l->n; i++) {
    fputs(l->items[i], f);
    if (i + 1 < l->n || l->trailing_nl) fputc('\n', f);
  }
  fclose(f);
}

static void free_lines(lines *l) {
  for (int i = 0; i < l->n; i++)
    free(l->items[i]);
  l->n = 0;
}

/* Verifies files; returns the rc and leaves the report in *r. */
static int verify(cp_audit_report *r, int n, ...) {
  const char *paths[8];
  char bufs[8][512];
  va_list ap;
  va_start(ap, n);
  for (int i = 0; i < n; i++) {
    snprintf(bufs[i], sizeof bufs[i], "%s", path_in(va_arg(ap, const char *)));
    paths[i] = bufs[i];
  }
  va_end(ap);
  return cp_audit_verify(paths, (size_t)n, NULL, r);
}

static int broken_at(const char *name, uint64_t line, const char *why) {
  cp_audit_report r;
  int rc = verify(&r, 1, name);
  int ok = rc == 1 && r.broken && r.problem.line == line &&
           strstr(r.problem.message, why) != NULL;
  if (!ok)
    fprintf(stderr, "  %s: rc %d, line %llu: %s (wanted line %llu: %s)\n", name,
            rc, (unsigned long long)r.problem.line,
            r.problem.message ? r.problem.message : "-",
            (unsigned long long)line, why);
  cp_audit_report_free(&r);
  return ok;
}

/* ---- tests ------------------------------------------------------------------
 */

static void test_format_and_genesis(void) {
  write_log("fmt.log", 3, 0);
  lines l;
  read_lines("fmt.log", &l);
  CHECK_INT(l.n, 3);
  CHECK(l.trailing_nl);
  CHECK(strncmp(l.items[0], "{\"ts\":\"", 7) == 0);
  CHECK(strstr(l.items[0], "\"genesis\":true"));
  CHECK(strstr(
      l.items[0],
      "\"prev\":\""
      "0000000000000000000000000000000000000000000000000000000000000000\"}"));
  CHECK(strstr(l.items[1], "\"genesis\"") == NULL);
  CHECK(strstr(l.items[0], "\"run_id\":\"run-1\",\"tenant\":\"acme\","
                           "\"pipeline\":\"intents\",\"event\":\"request\","
                           "\"i\":1,"));
  char h[65], want[80];
  CHECK_INT(cp_audit_sha256_hex(l.items[0], strlen(l.items[0]), h, NULL), 0);
  snprintf(want, sizeof want, "\"prev\":\"%s\"}", h);
  CHECK(strstr(l.items[1], want) != NULL);
  CHECK(strstr(l.items[2], "\"seq\":3,"));
  /* ts: RFC 3339, UTC, milliseconds */
  char ts[32];
  cp_audit_timestamp(ts);
  CHECK_INT(strlen(ts), 24);
  CHECK(ts[10] == 'T' && ts[19] == '.' && ts[23] == 'Z');
  free_lines(&l);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "fmt.log"), 0);
  CHECK_INT(r.total_records, 3);
  CHECK_INT(r.last_seq, 3);
  CHECK_INT(r.n_warnings, 0);
  cp_audit_report_free(&r);
}

static void test_reopen_continues(void) {
  write_log("re.log", 2, 0);
  cp_audit_options o = {CP_AUDIT_FSYNC_BATCH, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("re.log"), &o, &err);
  CHECK(a != NULL);
  CHECK_INT(cp_audit_seq(a), 2);
  cp_audit_record r = rec("run_end", "\"ok\":true");
  CHECK_INT(cp_audit_append(a, &r, &err), 0);
  CHECK_INT(cp_audit_sync(a, &err), 0);
  CHECK_INT(cp_audit_seq(a), 3);
  CHECK_INT(cp_audit_close(a, &err), 0);
  cp_audit_report rep;
  CHECK_INT(verify(&rep, 1, "re.log"), 0);
  CHECK_INT(rep.total_records, 3);
  cp_audit_report_free(&rep);
}

static void test_run_id(void) {
  char a[37], b[37];
  cp_audit_run_id(a);
  cp_audit_run_id(b);
  CHECK_INT(strlen(a), 36);
  CHECK(a[14] == '7'); /* version 7 */
  CHECK(strchr("89ab", a[19]) != NULL);
  CHECK(strcmp(a, b) != 0);
}

static void test_edited(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  char *p = strstr(l.items[4], "example 5");
  p[8] = '9'; /* "example 9" */
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "changed"));
}

static void test_removed(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  free(l.items[4]);
  memmove(&l.items[4], &l.items[5], (size_t)(l.n - 5) * sizeof l.items[0]);
  l.n--;
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "missing"));
}

static void test_removed_first(void) {
  write_log("t.log", 4, 0);
  lines l;
  read_lines("t.log", &l);
  free(l.items[0]);
  memmove(&l.items[0], &l.items[1], (size_t)(l.n - 1) * sizeof l.items[0]);
  l.n--;
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 1, "earlier records were removed"));
}

static void insert_line(lines *l, int at, char *text) {
  memmove(&l->items[at + 1], &l->items[at],
          (size_t)(l->n - at) * sizeof l->items[0]);
  l->items[at] = text;
  l->n++;
}

static void test_inserted_forged(void) {
  /* a forger who computes the right prev for the line they add */
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  char h[65];
  CHECK_INT(cp_audit_sha256_hex(l.items[3], strlen(l.items[3]), h, NULL), 0);
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b,
                "{\"ts\":\"2024-01-01T00:00:00.000Z\",\"seq\":5,\"run_id\":"
                "\"run-1\",\"tenant\":\"acme\",\"pipeline\":\"intents\","
                "\"event\":\"request\",\"i\":99,\"prev\":\"%s\"}",
                h);
  insert_line(&l, 4, cp_buf_steal(&b, NULL));
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "inserted"));
}

static void test_inserted_plain(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  insert_line(&l, 4,
              cp_strdup("{\"ts\":\"2024-01-01T00:00:00.000Z\",\"seq\":5,"
                        "\"event\":\"request\",\"prev\":\""
                        "111111111111111111111111111111111111111111111111111111"
                        "1111111111\"}"));
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "inserted"));
}

static void test_inserted_copy(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  insert_line(&l, 4, cp_strdup(l.items[2]));
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "repeats line 3"));
}

static void test_reordered(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  char *t = l.items[4];
  l.items[4] = l.items[5];
  l.items[5] = t;
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 5, "out of order"));
}

static void test_not_json(void) {
  write_log("t.log", 10, 0);
  lines l;
  read_lines("t.log", &l);
  l.items[6][3] = '\0'; /* cut in the middle, newline kept */
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 7, "not valid JSON"));
}

static void test_not_record(void) {
  write_log("t.log", 3, 0);
  lines l;
  read_lines("t.log", &l);
  free(l.items[1]);
  l.items[1] = cp_strdup("{\"hello\":1}");
  write_lines("t.log", &l);
  free_lines(&l);
  CHECK(broken_at("t.log", 2, "not an audit record"));
}

static void test_torn_last_line(void) {
  write_log("torn.log", 5, 0);
  FILE *f = fopen(path_in("torn.log"), "ab");
  fputs("{\"ts\":\"2024-01-01T00:00:00.000Z\",\"seq\":6,\"run_i", f);
  fclose(f);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "torn.log"), 0);
  CHECK_INT(r.total_records, 5);
  CHECK_INT(r.n_warnings, 1);
  if (r.n_warnings) {
    CHECK_INT(r.warnings[0].line, 6);
    CHECK(strstr(r.warnings[0].message, "incomplete last line") != NULL);
  }
  cp_audit_report_free(&r);

  /* the next writer closes the cut line and accounts for it */
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("torn.log"), &o, &err);
  CHECK(a != NULL);
  cp_audit_record x = rec("run_start", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_seq(a), 7); /* 5, the recovery record, this one */
  CHECK_INT(cp_audit_close(a, &err), 0);
  lines l;
  read_lines("torn.log", &l);
  CHECK_INT(l.n, 8);
  CHECK(strstr(l.items[6], "\"event\":\"audit.recovered\"") != NULL);
  CHECK(strstr(l.items[6], "\"torn_bytes\":") != NULL);
  free_lines(&l);
  CHECK_INT(verify(&r, 1, "torn.log"), 0);
  CHECK_INT(r.total_records, 7);
  CHECK_INT(r.n_warnings, 1);
  if (r.n_warnings) {
    CHECK_INT(r.warnings[0].line, 6);
    CHECK(strstr(r.warnings[0].message, "audit.recovered") != NULL);
  }
  cp_audit_report_free(&r);
}

static void test_torn_first_line(void) {
  FILE *f = fopen(path_in("torn1.log"), "wb");
  fputs("{\"ts\":\"2024", f);
  fclose(f);
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("torn1.log"), &o, &err);
  CHECK(a != NULL);
  cp_audit_record x = rec("run_start", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "torn1.log"), 0);
  CHECK_INT(r.total_records, 3);
  cp_audit_report_free(&r);
}

static void test_damaged_last_record_refused(void) {
  FILE *f = fopen(path_in("bad.log"), "wb");
  fputs("not a record\n", f);
  fclose(f);
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("bad.log"), &o, &err);
  CHECK(a == NULL);
  CHECK(err && strstr(err, "not a cogpipe audit record"));
  free(err);
}

/* Verifies the rotated series rot.log.000001 ... rot.log, skipping the file
 * at index skip (-1: none) or swapping the first two when swap. */
static int verify_series(cp_audit_report *r, int nfiles, int skip, int swap) {
  char bufs[16][512];
  const char *paths[16];
  int n = 0;
  for (int i = 1; i <= nfiles; i++) {
    if (i - 1 == skip) continue;
    if (i < nfiles) {
      int w =
          snprintf(bufs[n], sizeof bufs[n], "%s.%06d", path_in("rot.log"), i);
      if (w < 0 || (size_t)w >= sizeof bufs[n]) return -1; /* path too long */
    } else
      snprintf(bufs[n], sizeof bufs[n], "%s", path_in("rot.log"));
    paths[n] = bufs[n];
    n++;
  }
  if (swap) {
    const char *t = paths[0];
    paths[0] = paths[1];
    paths[1] = t;
  }
  return cp_audit_verify(paths, (size_t)n, NULL, r);
}

static void test_rotation(void) {
  char name[64];
  for (int i = 1; i < 16; i++) {
    snprintf(name, sizeof name, "rot.log.%06d", i);
    unlink(path_in(name));
  }
  write_log("rot.log", 12, 700);
  int rotated = 0;
  for (int i = 1; i < 16; i++) {
    snprintf(name, sizeof name, "rot.log.%06d", i);
    if (access(path_in(name), F_OK) == 0) rotated = i;
  }
  CHECK(rotated >= 3);
  int nfiles = rotated + 1;
  lines l;
  read_lines("rot.log.000002", &l);
  CHECK(l.n > 0 && strstr(l.items[0], "\"event\":\"audit.continued\"") &&
        strstr(l.items[0], "\"previous_file\":\"rot.log.000001\""));
  free_lines(&l);
  cp_audit_report r;
  CHECK_INT(verify_series(&r, nfiles, -1, 0), 0);
  /* every record, and a continuation at the head of each new file */
  CHECK_INT(r.total_records, 12 + rotated);
  CHECK_INT(r.last_seq, 12 + rotated);
  CHECK_INT(r.n_warnings, 0);
  cp_audit_report_free(&r);
  /* each file alone: the link to its predecessor is named, not checked */
  CHECK_INT(verify(&r, 1, "rot.log"), 0);
  CHECK_INT(r.n_warnings, 1);
  cp_audit_report_free(&r);
  /* a file missing between two others */
  CHECK_INT(verify_series(&r, nfiles, 1, 0), 1);
  CHECK_INT(r.problem.file, 1);
  CHECK_INT(r.problem.line, 1);
  CHECK(r.problem.message && strstr(r.problem.message, "does not continue"));
  cp_audit_report_free(&r);
  /* files out of order */
  CHECK_INT(verify_series(&r, nfiles, -1, 1), 1);
  cp_audit_report_free(&r);
  /* reopening after rotation continues in the live file */
  cp_audit_options o = {CP_AUDIT_FSYNC_ALWAYS, 700};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("rot.log"), &o, &err);
  CHECK_INT(cp_audit_seq(a), 12 + rotated);
  cp_audit_record x = rec("run_end", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  snprintf(name, sizeof name, "rot.log.%06d", nfiles);
  if (access(path_in(name), F_OK) == 0) nfiles++;
  CHECK_INT(verify_series(&r, nfiles, -1, 0), 0);
  CHECK(r.last_seq >= (uint64_t)(15 + rotated));
  cp_audit_report_free(&r);
}

static void test_two_writers(void) {
  remove_log("two.log");
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("two.log"), &o, &err);
  cp_audit *b = cp_audit_open(path_in("two.log"), &o, &err);
  for (int i = 0; i < 10; i++) {
    cp_audit_record x = rec(i % 2 ? "from_a" : "from_b", NULL);
    CHECK_INT(cp_audit_append(i % 3 ? a : b, &x, &err), 0);
  }
  cp_audit_close(a, NULL);
  cp_audit_close(b, NULL);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "two.log"), 0);
  CHECK_INT(r.total_records, 10);
  cp_audit_report_free(&r);
}

static void test_bad_text(void) {
  remove_log("utf.log");
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("utf.log"), NULL, &err);
  cp_audit_record x = {"run", "\xff\xfe", NULL, "ev", NULL, 0};
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  CHECK(err && strstr(err, "UTF-8"));
  free(err);
  cp_audit_record y = {"run", NULL, NULL, NULL, NULL, 0};
  CHECK_INT(cp_audit_append(a, &y, &err), -1);
  free(err);
  cp_audit_close(a, NULL);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "utf.log"), 0);
  CHECK_INT(r.total_records, 0);
  cp_audit_report_free(&r);
}

static void test_fsync_parse(void) {
  cp_audit_fsync f;
  CHECK_INT(cp_audit_fsync_parse("always", &f), 0);
  CHECK_INT(f, CP_AUDIT_FSYNC_ALWAYS);
  CHECK_INT(cp_audit_fsync_parse("batch", &f), 0);
  CHECK_INT(f, CP_AUDIT_FSYNC_BATCH);
  CHECK_INT(cp_audit_fsync_parse("off", &f), 0);
  CHECK_INT(f, CP_AUDIT_FSYNC_OFF);
  CHECK_INT(cp_audit_fsync_parse("sometimes", &f), -1);
}

static void test_unreadable(void) {
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "does-not-exist.log"), -1);
  CHECK(r.unreadable);
  CHECK(strstr(r.problem.message, "cannot read") != NULL);
  cp_audit_report_free(&r);
}

/* ---- the head file and the end of the chain --------------------------------
 */

static char *slurp(const char *name) {
  FILE *f = fopen(path_in(name), "rb");
  if (!f) return NULL;
  cp_buf b = CP_BUF_INIT;
  char chunk[4096];
  size_t got;
  while ((got = fread(chunk, 1, sizeof chunk, f)) > 0)
    cp_buf_add(&b, chunk, got);
  fclose(f);
  cp_buf_adds(&b, "");
  return cp_buf_steal(&b, NULL);
}

static void test_head_file(void) {
  write_log("h.log", 4, 0);
  char *head = slurp("h.log.head");
  CHECK(head != NULL);
  lines l;
  read_lines("h.log", &l);
  char h[65], want[200];
  CHECK_INT(cp_audit_sha256_hex(l.items[3], strlen(l.items[3]), h, NULL), 0);
  snprintf(want, sizeof want, "\"seq\":4,\"hash\":\"%s\",\"records\":4,", h);
  CHECK(head && strstr(head, want));
  CHECK(head && strstr(head, "\"run_id\":\"run-1\""));
  CHECK(head && strstr(head, path_in("h.log")));
  CHECK(head && head[strlen(head) - 1] == '\n');
  free(head);
  /* no temporary file is left beside it */
  CHECK(access(path_in("h.log.head.tmp"), F_OK) != 0);

  /* the handle says the same, and follows every record */
  cp_audit_options o = {CP_AUDIT_FSYNC_BATCH, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("h.log"), &o, &err);
  CHECK(a != NULL);
  cp_audit_head hd;
  cp_audit_head_get(a, &hd);
  CHECK_INT(hd.seq, 4);
  CHECK_STR(hd.hash, h);
  CHECK_INT(hd.records, 4);
  cp_audit_record r = rec("run_end", NULL);
  CHECK_INT(cp_audit_append(a, &r, &err), 0);
  cp_audit_head_get(a, &hd);
  CHECK_INT(hd.seq, 5);
  head = slurp("h.log.head");
  CHECK(head && strstr(head, hd.hash) && strstr(head, "\"seq\":5,"));
  free(head);
  CHECK_INT(cp_audit_sync(a, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  free_lines(&l);
  cp_audit_report rep;
  CHECK_INT(verify(&rep, 1, "h.log"), 0);
  CHECK(rep.end_checked);
  CHECK_INT(rep.n_warnings, 0);
  CHECK_INT(rep.head.seq, 5);
  cp_audit_report_free(&rep);
}

/* The log at name, its last `drop` lines removed. */
static void drop_last(const char *name, int drop) {
  lines l;
  read_lines(name, &l);
  for (int i = 0; i < drop; i++)
    free(l.items[--l.n]);
  write_lines(name, &l);
  free_lines(&l);
}

static void test_end_tampering(void) {
  /* the last record edited */
  write_log("e.log", 10, 0);
  lines l;
  read_lines("e.log", &l);
  char *p = strstr(l.items[9], "example 10");
  p[8] = '2';
  write_lines("e.log", &l);
  free_lines(&l);
  CHECK(broken_at("e.log", 10, "this record was changed"));

  /* the last record removed */
  write_log("e.log", 10, 0);
  drop_last("e.log", 1);
  CHECK(broken_at("e.log", 10, "ends at record 9, but its head file"));

  /* cut at a line boundary */
  write_log("e.log", 10, 0);
  drop_last("e.log", 4);
  CHECK(broken_at("e.log", 7, "records were removed or the file was cut"));

  /* emptied */
  write_log("e.log", 10, 0);
  FILE *f = fopen(path_in("e.log"), "wb");
  fclose(f);
  CHECK(broken_at("e.log", 1, "the log has no records"));

  /* a record added past the head */
  write_log("e.log", 10, 0);
  read_lines("e.log", &l);
  char h[65];
  CHECK_INT(cp_audit_sha256_hex(l.items[9], strlen(l.items[9]), h, NULL), 0);
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b,
                "{\"ts\":\"2024-01-01T00:00:00.000Z\",\"seq\":11,\"run_id\":"
                "\"run-1\",\"tenant\":\"acme\",\"pipeline\":\"intents\","
                "\"event\":\"request\",\"prev\":\"%s\"}",
                h);
  l.items[l.n++] = cp_buf_steal(&b, NULL);
  write_lines("e.log", &l);
  free_lines(&l);
  CHECK(broken_at("e.log", 11, "goes on past its head file"));

  /* a torn last line is still only a crash when the head agrees */
  write_log("e.log", 10, 0);
  f = fopen(path_in("e.log"), "ab");
  fputs("{\"ts\":\"2024-01-01T00:00:00.000Z\",\"seq\":11,", f);
  fclose(f);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "e.log"), 0);
  CHECK_INT(r.n_warnings, 1);
  CHECK(r.end_checked);
  cp_audit_report_free(&r);
  /* ... and not when the record it names is the one that was torn */
  write_log("e.log", 10, 0);
  read_lines("e.log", &l);
  l.items[9][20] = '\0';
  l.trailing_nl = 0;
  write_lines("e.log", &l);
  free_lines(&l);
  CHECK(broken_at("e.log", 10, "ends at record 9, but its head file"));

  /* a head file that is not one */
  write_log("e.log", 3, 0);
  f = fopen(path_in("e.log.head"), "wb");
  fputs("{\"seq\":\"three\"}\n", f);
  fclose(f);
  CHECK(broken_at("e.log", 0, "is not valid"));

  /* no head file: intact, with a warning that the end was not checked */
  write_log("e.log", 3, 0);
  unlink(path_in("e.log.head"));
  drop_last("e.log", 1);
  CHECK_INT(verify(&r, 1, "e.log"), 0);
  CHECK(!r.end_checked);
  CHECK_INT(r.n_warnings, 1);
  CHECK(r.n_warnings &&
        strstr(r.warnings[0].message, "end of the chain was not checked"));
  cp_audit_report_free(&r);
}

static void test_anchor_given(void) {
  write_log("an.log", 6, 0);
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("an.log"), &o, &err);
  cp_audit_head anchor;
  cp_audit_head_get(a, &anchor);
  cp_audit_record x = rec("later", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  const char *paths[] = {path_in("an.log")};
  char path[512];
  snprintf(path, sizeof path, "%s", paths[0]);
  paths[0] = path;
  /* a run's anchor, with later runs after it */
  cp_audit_report r;
  CHECK_INT(cp_audit_verify(paths, 1, &anchor, &r), 0);
  CHECK_INT(r.anchor_line, 6);
  CHECK_INT(r.after_anchor, 2);
  cp_audit_report_free(&r);
  /* the head file gone: the anchor still finds a cut */
  unlink(path_in("an.log.head"));
  drop_last("an.log", 3);
  CHECK_INT(cp_audit_verify(paths, 1, &anchor, &r), 1);
  CHECK_INT(r.problem.line, 6);
  CHECK(r.problem.message &&
        strstr(r.problem.message, "ends at record 5, but the anchor given"));
  cp_audit_report_free(&r);
  /* an anchor whose hash is not the record's: that record was changed */
  cp_audit_head wrong = anchor;
  wrong.seq = 3;
  CHECK_INT(cp_audit_verify(paths, 1, &wrong, &r), 1);
  CHECK_INT(r.problem.line, 3);
  CHECK(r.problem.message && strstr(r.problem.message, "was changed"));
  cp_audit_report_free(&r);
}

static void test_open_refuses_a_cut_log(void) {
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  write_log("c.log", 5, 0);
  drop_last("c.log", 2);
  cp_audit *a = cp_audit_open(path_in("c.log"), &o, &err);
  CHECK(a == NULL);
  CHECK(err && strstr(err, "ends at record 3, but its head file"));
  free(err);
  /* emptied, or removed with its head file left */
  write_log("c.log", 5, 0);
  unlink(path_in("c.log"));
  a = cp_audit_open(path_in("c.log"), &o, &err);
  CHECK(a == NULL);
  CHECK(err && strstr(err, "has no records, but its head file"));
  free(err);
  /* the last record changed */
  write_log("c.log", 5, 0);
  lines l;
  read_lines("c.log", &l);
  strstr(l.items[4], "example 5")[8] = '6';
  write_lines("c.log", &l);
  free_lines(&l);
  a = cp_audit_open(path_in("c.log"), &o, &err);
  CHECK(a == NULL);
  CHECK(err && strstr(err, "the record was changed"));
  free(err);
  /* cut while another handle was writing it: that handle stops too */
  write_log("c.log", 5, 0);
  a = cp_audit_open(path_in("c.log"), &o, &err);
  CHECK(a != NULL);
  drop_last("c.log", 1);
  cp_audit_record x = rec("next", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  CHECK(err && strstr(err, "records were removed"));
  free(err);
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  free(err);
  CHECK_INT(cp_audit_close(a, &err), -1);
  free(err);
}

/* The size of the file at name, or -1. */
static long long size_of(const char *name) {
  struct stat st;
  return stat(path_in(name), &st) == 0 ? (long long)st.st_size : -1;
}

static void test_write_failure_stops_the_log(void) {
  write_log("w.log", 3, 0);
  long long before = size_of("w.log");
  char *head_before = slurp("w.log.head");
  cp_audit_options o = {CP_AUDIT_FSYNC_BATCH, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("w.log"), &o, &err);
  CHECK(a != NULL);
  /* a file size limit lets part of the record in, then fails the write */
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit old, lim;
  getrlimit(RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = (rlim_t)before + 40;
  CHECK_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
  cp_audit_record x = rec("batch", "\"uploaded\":220");
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  setrlimit(RLIMIT_FSIZE, &old);
  CHECK(err && strstr(err, path_in("w.log")) && strstr(err, strerror(EFBIG)));
  CHECK(err && strstr(err, "after 40 of the record's"));
  free(err);
  /* the partial record was taken back out; the head did not move */
  CHECK_INT(size_of("w.log"), before);
  char *head_after = slurp("w.log.head");
  CHECK(head_before && head_after && strcmp(head_before, head_after) == 0);
  free(head_after);
  CHECK_INT(cp_audit_seq(a), 3);
  /* and nothing after it succeeds, with the first failure in every answer */
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  CHECK(err && strstr(err, "stopped after an earlier failure") &&
        strstr(err, strerror(EFBIG)));
  free(err);
  CHECK_INT(cp_audit_sync(a, &err), -1);
  CHECK(err && strstr(err, strerror(EFBIG)));
  free(err);
  CHECK(cp_audit_sync_start(a, &err) == NULL);
  CHECK(err && strstr(err, strerror(EFBIG)));
  free(err);
  CHECK_INT(cp_audit_close(a, &err), -1);
  CHECK(err && strstr(err, strerror(EFBIG)));
  free(err);
  CHECK_INT(size_of("w.log"), before);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "w.log"), 0);
  CHECK_INT(r.n_warnings, 0);
  cp_audit_report_free(&r);
  /* reopened, the log goes on from what is on disk */
  a = cp_audit_open(path_in("w.log"), &o, &err);
  CHECK(a != NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  CHECK_INT(verify(&r, 1, "w.log"), 0);
  CHECK_INT(r.last_seq, 4);
  cp_audit_report_free(&r);
  free(head_before);
}

static void test_head_failure_takes_the_record_back(void) {
  write_log("hf.log", 2, 0);
  long long before = size_of("hf.log");
  cp_audit_options o = {CP_AUDIT_FSYNC_ALWAYS, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("hf.log"), &o, &err);
  CHECK(a != NULL);
  /* the temporary head file cannot be created */
  CHECK_INT(mkdir(path_in("hf.log.head.tmp"), 0700), 0);
  cp_audit_record x = rec("batch", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  CHECK(err && strstr(err, "cannot write audit head file") &&
        strstr(err, "hf.log.head") && strstr(err, strerror(EISDIR)));
  free(err);
  CHECK_INT(size_of("hf.log"), before);
  CHECK_INT(cp_audit_seq(a), 2);
  rmdir(path_in("hf.log.head.tmp"));
  CHECK_INT(cp_audit_append(a, &x, &err), -1);
  CHECK(err && strstr(err, "stopped after an earlier failure"));
  free(err);
  CHECK_INT(cp_audit_close(a, &err), -1);
  free(err);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "hf.log"), 0);
  CHECK_INT(r.last_seq, 2);
  cp_audit_report_free(&r);
}

static void test_cut_lines_whatever_they_hold(void) {
  /* what is left of a cut line may parse (a number, even a whole record
   * without its newline): it is still a cut line, before and after the
   * next writer closes it */
  const char *cuts[] = {"280", NULL};
  char whole[400];
  for (int k = 0; k < 2; k++) {
    write_log("cut.log", 3, 0);
    lines l;
    read_lines("cut.log", &l);
    if (cuts[k]) {
      snprintf(whole, sizeof whole, "%s", cuts[k]);
    } else { /* the last record, its newline lost */
      snprintf(whole, sizeof whole, "%s", l.items[2]);
      free(l.items[--l.n]);
    }
    free_lines(&l);
    if (!cuts[k]) drop_last("cut.log", 1);
    FILE *f = fopen(path_in("cut.log"), "ab");
    fputs(whole, f);
    fclose(f);
    cp_audit_report r;
    CHECK_INT(verify(&r, 1, "cut.log"), cuts[k] ? 0 : 1);
    cp_audit_report_free(&r);
    /* the head named the record whose newline is gone: the writer
     * refuses; with the head moved aside it closes the line */
    if (!cuts[k]) {
      char head[600];
      snprintf(head, sizeof head, "%s.head", path_in("cut.log"));
      unlink(head);
    }
    cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
    char *err = NULL;
    cp_audit *a = cp_audit_open(path_in("cut.log"), &o, &err);
    CHECK(a != NULL);
    free(err);
    if (!a) continue;
    cp_audit_record x = rec("batch", NULL);
    CHECK_INT(cp_audit_append(a, &x, &err), 0);
    CHECK_INT(cp_audit_close(a, &err), 0);
    CHECK_INT(verify(&r, 1, "cut.log"), 0);
    CHECK_INT(r.n_warnings, 1);
    CHECK(r.n_warnings &&
          strstr(r.warnings[0].message, "accounted for by the audit."));
    cp_audit_report_free(&r);
  }
}

static void test_sync_job(void) {
  remove_log("job.log");
  cp_audit_options o = {CP_AUDIT_FSYNC_BATCH, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("job.log"), &o, &err);
  CHECK(cp_audit_sync_start(a, &err) == NULL && err == NULL); /* clean */
  cp_audit_record x = rec("batch", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  cp_audit_sync_job *j = cp_audit_sync_start(a, &err);
  CHECK(j != NULL);
  cp_audit_sync_run(j);
  CHECK_INT(cp_audit_sync_finish(j, &err), 0);
  /* a job may outlive the handle's close */
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  j = cp_audit_sync_start(a, &err);
  CHECK(j != NULL);
  CHECK_INT(cp_audit_close(a, &err), 0);
  cp_audit_sync_run(j);
  CHECK_INT(cp_audit_sync_finish(j, &err), 0);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "job.log"), 0);
  CHECK_INT(r.total_records, 2);
  cp_audit_report_free(&r);
}

static void test_interrupted_runs(void) {
  remove_log("runs.log");
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("runs.log"), &o, &err);
  const char *ids[] = {"run-a", "run-b", "run-c"};
  for (int i = 0; i < 3; i++) {
    cp_audit_record s = {ids[i], "acme", "intents", "run_start", NULL, 0};
    CHECK_INT(cp_audit_append(a, &s, &err), 0);
    cp_audit_record b = {ids[i], "acme", "intents", "batch", NULL, 0};
    CHECK_INT(cp_audit_append(a, &b, &err), 0);
    if (i != 1) {
      cp_audit_record e = {ids[i], "acme", "intents", "run_end", NULL, 0};
      CHECK_INT(cp_audit_append(a, &e, &err), 0);
    }
  }
  CHECK_INT(cp_audit_close(a, &err), 0);
  cp_audit_report r;
  CHECK_INT(verify(&r, 1, "runs.log"), 0);
  CHECK_INT(r.n_interrupted, 1);
  if (r.n_interrupted) {
    CHECK_STR(r.interrupted[0].run_id, "run-b");
    CHECK_INT(r.interrupted[0].line, 4);
  }
  cp_audit_report_free(&r);
}

static void test_rotation_cut_short(void) {
  /* a rotation that moved the full file aside and stopped before the new
   * file's first record: the next writer continues from the moved file */
  char name[64];
  for (int i = 1; i < 8; i++) {
    snprintf(name, sizeof name, "rc.log.%06d", i);
    unlink(path_in(name));
  }
  write_log("rc.log", 3, 0);
  char moved[600];
  snprintf(moved, sizeof moved, "%s.000001", path_in("rc.log"));
  CHECK_INT(rename(path_in("rc.log"), moved), 0);
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
  char *err = NULL;
  cp_audit *a = cp_audit_open(path_in("rc.log"), &o, &err);
  CHECK(a != NULL);
  free(err);
  if (!a) return;
  CHECK_INT(cp_audit_seq(a), 3);
  cp_audit_record x = rec("batch", NULL);
  CHECK_INT(cp_audit_append(a, &x, &err), 0);
  CHECK_INT(cp_audit_close(a, &err), 0);
  lines l;
  read_lines("rc.log", &l);
  CHECK(l.n == 2 && strstr(l.items[0], "\"previous_file\":\"rc.log.000001\""));
  free_lines(&l);
  cp_audit_report r;
  CHECK_INT(verify(&r, 2, "rc.log.000001", "rc.log"), 0);
  CHECK_INT(r.total_records, 5);
  CHECK(r.end_checked);
  cp_audit_report_free(&r);
}

/* Memory that runs out while a log is verified gives no verdict: the
 * verification fails as unreadable, and never reports an intact log as
 * broken (a line it could not parse or hash is not a tampered one). */
static void test_verify_out_of_memory(void) {
  write_log("oom.log", 20, 0);
  int hits = 0;
  for (long k = 1;; k++) {
    cp_audit_report r;
    cp_alloc_fail_at(k);
    int rc = verify(&r, 1, "oom.log");
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (pending) { /* every allocation of a verification was failed once */
      CHECK_INT(rc, 0);
      cp_audit_report_free(&r);
      break;
    }
    hits++;
    CHECK(rc == 0 || rc == -1);
    CHECK(!r.broken);
    if (rc == -1)
      CHECK(r.unreadable && (!r.problem.message ||
                             strstr(r.problem.message, "out of memory") != NULL));
    cp_audit_report_free(&r);
  }
  CHECK(hits > 5);
}

/* Memory that runs out while records are written never leaves a log that
 * does not verify: a record is written whole or not at all. */
static void test_append_out_of_memory(void) {
  const char *p = path_in("oom-append.log");
  remove_log("oom-append.log");
  cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 6000};
  char *err = NULL;
  cp_audit *a = cp_audit_open(p, &o, &err);
  CHECK(a != NULL);
  int written = 0, refused = 0;
  for (long k = 1; k < 400 && a; k++) {
    char f[64];
    snprintf(f, sizeof f, "\"i\":%ld,\"text\":\"example %ld\"", k, k);
    cp_audit_record r = rec("request", f);
    cp_alloc_fail_at(k % 13 + 1);
    int rc = cp_audit_append(a, &r, &err);
    int pending = cp_alloc_fail_pending();
    cp_alloc_fail_at(0);
    if (rc == 0) written++;
    else refused++;
    CHECK(rc == 0 || !pending); /* only the failed allocation makes it fail */
    free(err);
    err = NULL;
    if (rc != 0 && cp_audit_append(a, &r, &err) != 0) {
      /* a record lost on the way stops the handle: reopen to go on */
      free(err);
      err = NULL;
      cp_audit_close(a, NULL);
      a = cp_audit_open(p, &o, &err);
      CHECK(a != NULL);
    }
  }
  if (a) CHECK_INT(cp_audit_close(a, &err), 0);
  free(err);
  if (!(written > 0 && refused > 0))
    fprintf(stderr, "  written %d, refused %d\n", written, refused);
  CHECK(written > 0 && refused > 0);
  lines l;
  read_lines("oom-append.log", &l);
  CHECK(l.n > 0);
  free_lines(&l);
  const char *paths[64];
  char names[64][600];
  size_t n = 0;
  for (unsigned i = 1; i < 63; i++) {
    snprintf(names[n], sizeof names[n], "%s.%06u", p, i);
    if (access(names[n], F_OK) != 0) break;
    paths[n] = names[n];
    n++;
  }
  snprintf(names[n], sizeof names[n], "%s", p);
  paths[n] = names[n];
  n++;
  cp_audit_report rep;
  int rc = cp_audit_verify(paths, n, NULL, &rep);
  if (rc != 0)
    fprintf(stderr, "  verify: rc %d: %s\n", rc,
            rep.problem.message ? rep.problem.message : "-");
  CHECK_INT(rc, 0);
  cp_audit_report_free(&rep);
}

static void cleanup(void) {
  char cmd[600];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
}

int main(void) {
  const char *tmp = getenv("TMPDIR");
  snprintf(dir, sizeof dir, "%s/cp-audit-XXXXXX", tmp && *tmp ? tmp : "/tmp");
  if (!mkdtemp(dir)) return 1;
  RUN(test_format_and_genesis);
  RUN(test_reopen_continues);
  RUN(test_run_id);
  RUN(test_edited);
  RUN(test_removed);
  RUN(test_removed_first);
  RUN(test_inserted_forged);
  RUN(test_inserted_plain);
  RUN(test_inserted_copy);
  RUN(test_reordered);
  RUN(test_not_json);
  RUN(test_not_record);
  RUN(test_torn_last_line);
  RUN(test_torn_first_line);
  RUN(test_damaged_last_record_refused);
  RUN(test_rotation);
  RUN(test_two_writers);
  RUN(test_bad_text);
  RUN(test_fsync_parse);
  RUN(test_unreadable);
  RUN(test_head_file);
  RUN(test_end_tampering);
  RUN(test_anchor_given);
  RUN(test_open_refuses_a_cut_log);
  RUN(test_write_failure_stops_the_log);
  RUN(test_head_failure_takes_the_record_back);
  RUN(test_cut_lines_whatever_they_hold);
  RUN(test_sync_job);
  RUN(test_interrupted_runs);
  RUN(test_rotation_cut_short);
  RUN(test_verify_out_of_memory);
  RUN(test_append_out_of_memory);
  cleanup();
  DONE();
}
