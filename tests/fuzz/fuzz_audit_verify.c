/*
 * fuzz_audit_verify.c -- libFuzzer target for the audit log verifier and
 * the writer's reading of a log it continues (audit.c): any bytes as a
 * log (or a rotated pair), with any bytes as its head file and an anchor.
 * Checks that the verdict is consistent -- a broken chain names a line
 * that exists, an intact one agrees with its head file -- and that the
 * writer continues a log the verifier calls intact, which stays intact.
 *
 * Input: flags, head length (2 bytes, little-endian), split point, the
 * head file's bytes, then the log's bytes. flags: 1 split the log into
 * two files at the line boundary after the split point (split/255 of the
 * way in), 2 write the head file, 4 give an anchor
 * (the hash of the log's first line, seq from the upper bits), 8 append
 * a record through the writer and verify again.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char dir[64];
static char path_a[128], path_b[128], head_b[160];

static void put(const char *path, const uint8_t *p, size_t n) {
  FILE *f = fopen(path, "wb");
  if (!f) abort();
  if (n && fwrite(p, 1, n, f) != n) abort();
  if (fclose(f) != 0) abort();
}

static size_t count_lines(const char *path) {
  FILE *f = fopen(path, "rb");
  if (!f) abort();
  size_t n = 0;
  int c, last = '\n';
  while ((c = fgetc(f)) != EOF) {
    if (c == '\n') n++;
    last = c;
  }
  fclose(f);
  return n + (last != '\n');
}

/* Verifies and checks what every verdict must satisfy; returns rc. */
static int check(const char *const *paths, size_t n, const cp_audit_head *an,
                 int head_written) {
  cp_audit_report r;
  int rc = cp_audit_verify(paths, n, an, &r);
  if (rc < -1 || rc > 1) abort();
  if (rc == -1) abort(); /* every file here is readable */
  if ((rc == 1) != (r.broken == 1)) abort();
  if (rc == 1) {
    if (!r.problem.message || r.problem.file >= n) abort();
    if (r.problem.line > count_lines(paths[r.problem.file]) + 1) abort();
  } else {
    uint64_t total = 0;
    for (size_t i = 0; i < n; i++)
      total += r.records[i];
    if (total != r.total_records) abort();
    if (r.total_records && strlen(r.last_hash) != 64) abort();
    /* intact means the chain ends where its head file says */
    if (r.head_path && !r.end_checked) abort();
    if (r.head_path &&
        (r.head.seq != r.last_seq || strcmp(r.head.hash, r.last_hash) != 0))
      abort();
    if (!r.end_checked && !r.n_warnings) abort();
    if (head_written && !r.head_path) abort();
  }
  for (size_t i = 0; i < r.n_warnings; i++)
    if (!r.warnings[i].message || r.warnings[i].file >= n) abort();
  for (size_t i = 0; i < r.n_interrupted; i++)
    if (!r.interrupted[i].run_id || r.interrupted[i].line < 1) abort();
  cp_audit_report_free(&r);
  return rc;
}

/* The files the target writes, removed when the fuzzer exits. */
static void remove_files(void) {
  char p[200];
  snprintf(p, sizeof p, "%s.tmp", head_b);
  unlink(p);
  unlink(head_b);
  unlink(path_a);
  unlink(path_b);
  rmdir(dir);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!dir[0]) {
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, sizeof dir, "%s/cp-fuzz-audit-XXXXXX",
             tmp && *tmp && strlen(tmp) < 30 ? tmp : "/tmp");
    if (!mkdtemp(dir)) abort();
    snprintf(path_a, sizeof path_a, "%s/a.log", dir);
    snprintf(path_b, sizeof path_b, "%s/b.log", dir);
    snprintf(head_b, sizeof head_b, "%s/b.log.head", dir);
    atexit(remove_files);
  }
  if (size < 4) return 0;
  unsigned flags = data[0];
  size_t hl = (size_t)(data[1] | data[2] << 8);
  size_t split = data[3];
  data += 4;
  size -= 4;
  if (hl > size) hl = size;
  const uint8_t *head = data, *log = data + hl;
  size_t log_len = size - hl;

  const char *paths[2];
  size_t n = 0;
  if (flags & 1) {
    /* at a line boundary: rotation never splits a line */
    size_t at = log_len * split / 255;
    const uint8_t *nl =
        at < log_len ? memchr(log + at, '\n', log_len - at) : NULL;
    at = nl ? (size_t)(nl - log) + 1 : log_len;
    put(path_a, log, at);
    put(path_b, log + at, log_len - at);
    paths[n++] = path_a;
  } else {
    put(path_b, log, log_len);
  }
  paths[n++] = path_b;
  unlink(head_b);
  if (flags & 2) put(head_b, head, hl);

  cp_audit_head anchor, *an = NULL;
  if (flags & 4) {
    const uint8_t *nl = memchr(log, '\n', log_len);
    size_t first = nl ? (size_t)(nl - log) : log_len;
    if (cp_audit_sha256_hex(log, first, anchor.hash, NULL) != 0) abort();
    anchor.seq = (flags >> 4) + 1;
    anchor.records = UINT64_MAX;
    an = &anchor;
  }
  int rc = check(paths, n, an, (flags & 2) != 0);

  if (flags & 8) {
    cp_audit_options o = {CP_AUDIT_FSYNC_OFF, 0};
    char *err = NULL;
    cp_audit *a = cp_audit_open(path_b, &o, &err);
    free(err);
    /* what the verifier calls intact, the writer can continue (a file of
     * a split pair alone may lack the chain the pair holds) */
    if (!a && rc == 0 && n == 1) abort();
    if (a) {
      cp_audit_record rec = {"run-f", "acme", "fuzz", "batch", "\"n\":1", 5};
      int app = cp_audit_append(a, &rec, &err);
      free(err);
      if (cp_audit_close(a, &err) != 0 && app == 0) abort();
      free(err);
      /* continuing an intact log whose end was checked keeps it intact,
       * and the head file it leaves agrees with it */
      int again = check(paths, n, NULL, app == 0 || (flags & 2));
      if (app == 0 && rc == 0 && n == 1 && again != 0) abort();
    }
  }
  return 0;
}
