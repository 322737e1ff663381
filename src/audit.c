/*
 * audit.c -- the audit log writer and verifier (see audit.h for the record
 * format and the head file). Owns the log's file descriptor, its chain
 * state, its head file and rotation; never redacts, never calls into Lua,
 * never leaves a partial line on purpose, and never goes on writing after
 * a write it could not complete.
 */
#include "audit.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "buf.h"
#include "json.h"

#define ZERO_HASH                                                              \
  "0000000000000000000000000000000000000000000000000000000000000000"
#define MAX_LINE ((uint64_t)64 << 20)
#define MAX_HEAD 65536 /* a head file is a few hundred bytes */
#define EV_CONTINUED "audit.continued"
#define EV_RECOVERED "audit.recovered"

struct cp_audit {
  char *path;      /* owned */
  char *head_path; /* owned: PATH.head */
  int fd;
  cp_audit_options o;
  dev_t dev;
  ino_t ino;
  uint64_t size;  /* the file's size as of our last look; UINT64_MAX: unknown */
  int have_chain; /* a record exists to chain from */
  char prev[65];  /* hash of the line the next record chains from */
  uint64_t seq;   /* seq of the last record */
  uint64_t first_seq; /* seq of the first record in this file; 0: none */
  char last_ts[32];   /* the last record's ts and run_id, for the head */
  char *last_run_id;  /* owned; NULL when the record had none */
  /* A tail cut short by a crash, found when reading the file: closed and
   * accounted for by the next append. */
  int torn;
  uint64_t torn_bytes;
  char resumes[65]; /* hash of the last whole record before it */
  char *from_file;  /* the file an empty new one continues; NULL: unknown */
  int dirty;        /* written since the last sync */
  /* Set once a record was lost, so nothing after it may be written as if
   * it had not been; failure says why (owned; NULL when even that could
   * not be kept for want of memory). */
  int stopped;
  char *failure;
  int jobs;   /* sync jobs started and not finished keep this allocated */
  int closed; /* cp_audit_close ran; freed when jobs reaches 0 */
};

/* ---- small helpers
 * ------------------------------------------------------------ */

static char *errf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *errf(const char *fmt, ...) {
  cp_buf b = CP_BUF_INIT;
  va_list ap;
  va_start(ap, fmt);
  cp_buf_vprintf(&b, fmt, ap);
  va_end(ap);
  return cp_buf_steal(&b, NULL);
}

static void set_err(char **err, char *msg) {
  if (err)
    *err = msg;
  else
    free(msg);
}

static void to_hex(const unsigned char *d, size_t n, char *out) {
  static const char hex[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = hex[d[i] >> 4];
    out[2 * i + 1] = hex[d[i] & 15];
  }
  out[2 * n] = '\0';
}

/* 0, or -1 when libcrypto cannot digest (it allocates a context: memory;
 * counted as an allocation failure). A hash that was not computed must
 * never stand for one: it would read as a broken chain. */
static int sha256(const void *data, size_t len, unsigned char md[32]) {
  unsigned int mdlen = 32;
  if (EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) == 1 &&
      mdlen == 32)
    return 0;
  cp_alloc_note_failure();
  return -1;
}

static int sha256_hex(const void *data, size_t len, char hex[65]) {
  unsigned char md[32];
  if (sha256(data, len, md)) return -1;
  to_hex(md, 32, hex);
  return 0;
}

/* The record of why a handle stopped: msg (taken), or none when memory ran
 * out even for that. */
static void stop(cp_audit *a, char *msg) {
  if (a->stopped) {
    free(msg);
    return;
  }
  a->stopped = 1;
  free(a->failure);
  a->failure = msg;
}

int cp_audit_sha256_hex(const void *data, size_t len, char hex[65],
                        char **err) {
  if (err) *err = NULL;
  if (sha256_hex(data, len, hex) == 0) return 0;
  set_err(err, errf("out of memory while hashing"));
  return -1;
}

void cp_audit_timestamp(char out[32]) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  size_t n = strftime(out, 32, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(out + n, 32 - n, ".%03dZ", (int)(ts.tv_nsec / 1000000));
}

void cp_audit_run_id(char out[37]) {
  unsigned char b[16];
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t ms = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
  if (RAND_bytes(b, sizeof b) != 1) {
    /* no entropy source: the clock and the pid still tell runs apart */
    uint64_t mix = (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    for (size_t i = 0; i < sizeof b; i++)
      b[i] = (unsigned char)(mix >> (i % 8 * 8));
  }
  for (int i = 0; i < 6; i++)
    b[i] = (unsigned char)(ms >> (40 - 8 * i));
  b[6] = (unsigned char)(0x70 | (b[6] & 0x0f)); /* version 7 */
  b[8] = (unsigned char)(0x80 | (b[8] & 0x3f)); /* RFC 4122 variant */
  char hex[33];
  to_hex(b, 16, hex);
  snprintf(out, 37, "%.8s-%.4s-%.4s-%.4s-%.12s", hex, hex + 8, hex + 12,
           hex + 16, hex + 20);
}

int cp_audit_fsync_parse(const char *s, cp_audit_fsync *out) {
  if (strcmp(s, "batch") == 0)
    *out = CP_AUDIT_FSYNC_BATCH;
  else if (strcmp(s, "always") == 0)
    *out = CP_AUDIT_FSYNC_ALWAYS;
  else if (strcmp(s, "off") == 0)
    *out = CP_AUDIT_FSYNC_OFF;
  else
    return -1;
  return 0;
}

/* The directory part of path ("." when there is none); caller frees; NULL
 * when out of memory. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return cp_strdup(".");
  if (slash == path) return cp_strdup("/");
  return cp_strndup(path, (size_t)(slash - path));
}

static const char *base_of(const char *path) {
  const char *slash = strrchr(path, '/');
  return slash ? slash + 1 : path;
}

static int fsync_dir(const char *path) {
  char *dir = dir_of(path);
  if (!dir) {
    errno = ENOMEM;
    return -1;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int r = fsync(fd);
  close(fd);
  return r;
}

static int hex_decode(const char *s, size_t len, unsigned char out[32]) {
  if (len != 64) return -1;
  for (size_t i = 0; i < 64; i++) {
    char c = s[i];
    int d = c >= '0' && c <= '9'   ? c - '0'
            : c >= 'a' && c <= 'f' ? c - 'a' + 10
                                   : -1;
    if (d < 0) return -1;
    if (i % 2 == 0)
      out[i / 2] = (unsigned char)(d << 4);
    else
      out[i / 2] |= (unsigned char)d;
  }
  return 0;
}

/* Writes all n bytes, looping if the kernel takes fewer. Returns 0, or -1
 * with errno; *done (when not NULL) says how many bytes got in. */
static int write_all(int fd, const char *p, size_t n, size_t *done) {
  size_t total = 0;
  int rc = 0;
  while (total < n) {
    ssize_t w = write(fd, p + total, n - total);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      if (w == 0) errno = EIO; /* not for a regular file; never loop on it */
      rc = -1;
      break;
    }
    total += (size_t)w;
  }
  if (done) *done = total;
  return rc;
}

char *cp_audit_head_path(const char *path) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b, "%s.head", path);
  return cp_buf_steal(&b, NULL);
}

/* Reads a small file into *data (malloc'd, NUL-terminated; the caller
 * frees): all of it, or a little more than max bytes, enough for the
 * caller to refuse it. Returns 0, 1 when it does not exist, -1 with
 * *err. */
static int read_small(const char *path, size_t max, char **data, size_t *len,
                      char **err) {
  *data = NULL;
  *len = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0 && errno == ENOENT) return 1;
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    set_err(err, errf("cannot read %s: %s", path, strerror(errno)));
    if (fd >= 0) close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    set_err(err, errf("cannot read %s: not a regular file", path));
    close(fd);
    return -1;
  }
  cp_buf b = CP_BUF_INIT;
  char chunk[4096];
  for (;;) {
    ssize_t got = read(fd, chunk, sizeof chunk);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) {
      set_err(err, errf("cannot read %s: %s", path, strerror(errno)));
      cp_buf_free(&b);
      close(fd);
      return -1;
    }
    if (got == 0) break;
    cp_buf_add(&b, chunk, (size_t)got);
    if (b.len > max) break; /* the parser says it is too long */
  }
  close(fd);
  *data = cp_buf_steal(&b, len);
  if (!*data) {
    set_err(err, errf("cannot read %s: out of memory", path));
    return -1;
  }
  return 0;
}

/* Parses a head file's text. Returns 0, -1 with *why (malloc'd), or -2
 * when memory ran out (*why NULL). A head without "records" (an anchor
 * written by hand) leaves records at UINT64_MAX: not checked. */
static int parse_head(const char *text, size_t len, cp_audit_head *h,
                      char **why) {
  memset(h, 0, sizeof *h);
  if (len > MAX_HEAD) {
    *why = errf("longer than %d bytes", MAX_HEAD);
    return -1;
  }
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(text, len, &jerr);
  if (!doc && jerr.out_of_memory) {
    *why = NULL;
    return -2;
  }
  if (!doc) {
    *why = errf("not valid JSON: %s at column %d", jerr.message, jerr.column);
    return -1;
  }
  const cp_json *root = cp_json_root(doc);
  const cp_json *seq = cp_json_get(root, "seq");
  const cp_json *hash = cp_json_get(root, "hash");
  const cp_json *records = cp_json_get(root, "records");
  unsigned char bin[32];
  const char *bad =
      root->type != CP_JSON_OBJECT ? "not a JSON object"
      : !seq || seq->type != CP_JSON_INT || seq->u.i < 1
          ? "it has no valid seq (an integer from 1)"
      : !hash || hash->type != CP_JSON_STRING ||
              hex_decode(hash->u.str.s, hash->u.str.len, bin)
          ? "it has no valid hash (64 lower-case hex digits)"
      : records && (records->type != CP_JSON_INT || records->u.i < 0)
          ? "its records is not a count"
          : NULL;
  if (bad) {
    *why = errf("%s", bad);
    cp_json_doc_free(doc);
    return -1;
  }
  h->seq = (uint64_t)seq->u.i;
  memcpy(h->hash, hash->u.str.s, 65);
  h->records = records ? (uint64_t)records->u.i : UINT64_MAX;
  cp_json_doc_free(doc);
  return 0;
}

/* ---- reading the ends of the file
 * ----------------------------------------------- */

/* Offset of the last '\n' in [0, pos), -1 when there is none, -2 on a read
 * error. */
static int64_t find_nl_before(int fd, int64_t pos) {
  char buf[65536];
  int64_t end = pos;
  while (end > 0) {
    size_t n = end < (int64_t)sizeof buf ? (size_t)end : sizeof buf;
    int64_t start = end - (int64_t)n;
    ssize_t got = pread(fd, buf, n, (off_t)start);
    if (got != (ssize_t)n) return -2;
    for (size_t i = n; i-- > 0;)
      if (buf[i] == '\n') return start + (int64_t)i;
    end = start;
  }
  return -1;
}

/* Offset of the first '\n' in [pos, end), -1 when there is none, -2 on a
 * read error. */
static int64_t find_nl_from(int fd, int64_t pos, int64_t end) {
  char buf[65536];
  while (pos < end) {
    size_t n =
        end - pos < (int64_t)sizeof buf ? (size_t)(end - pos) : sizeof buf;
    if (pread(fd, buf, n, (off_t)pos) != (ssize_t)n) return -2;
    const char *nl = memchr(buf, '\n', n);
    if (nl) return pos + (nl - buf);
    pos += (int64_t)n;
  }
  return -1;
}

/* 0, or -1 with errno: a read error, or ENOMEM when libcrypto cannot
 * digest. */
static int hash_range(int fd, int64_t start, int64_t len, char hex[65]) {
  EVP_MD_CTX *ctx = EVP_MD_CTX_new();
  if (!ctx || EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) {
    EVP_MD_CTX_free(ctx);
    cp_alloc_note_failure();
    errno = ENOMEM;
    return -1;
  }
  char buf[65536];
  int rc = 0;
  while (len > 0) {
    size_t n = len < (int64_t)sizeof buf ? (size_t)len : sizeof buf;
    if (pread(fd, buf, n, (off_t)start) != (ssize_t)n) {
      rc = -1;
      break;
    }
    if (EVP_DigestUpdate(ctx, buf, n) != 1) {
      cp_alloc_note_failure();
      errno = ENOMEM;
      rc = -1;
      break;
    }
    start += (int64_t)n;
    len -= (int64_t)n;
  }
  unsigned char md[32];
  unsigned int mdlen = 32;
  if (rc == 0 && (EVP_DigestFinal_ex(ctx, md, &mdlen) != 1 || mdlen != 32)) {
    cp_alloc_note_failure();
    errno = ENOMEM;
    rc = -1;
  }
  EVP_MD_CTX_free(ctx);
  if (rc == 0) to_hex(md, 32, hex);
  return rc;
}

int cp_audit_sha256_file(const char *path, char hex[65], char **err) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    set_err(err, errf("cannot read %s: %s", path, strerror(errno)));
    if (fd >= 0) close(fd);
    return -1;
  }
  int rc = hash_range(fd, 0, (int64_t)st.st_size, hex);
  if (rc) set_err(err, errf("cannot read %s: %s", path, strerror(errno)));
  close(fd);
  return rc;
}

/* What the ends of a log file say. */
typedef struct tail {
  int torn; /* the file ends in a line without its newline */
  uint64_t torn_bytes;
  char torn_hash[65];
  int have; /* a whole record comes before that (or ends the file) */
  uint64_t seq;
  char hash[65];
  char ts[32];
  char *run_id;       /* owned; NULL when the record has none */
  uint64_t first_seq; /* of the file's first record; 0 when not found */
} tail;

/* Reads the line [start, end) and the fields of it the writer needs.
 * Returns 0, 1 when it is not an audit record, -1 on a read error or
 * (errno ENOMEM) when memory runs out -- never 1 for that. */
static int read_record(int fd, int64_t start, int64_t end, uint64_t *seq,
                       char hash[65], char ts[32], char **run_id) {
  size_t len = (size_t)(end - start);
  char *line = cp_malloc(len + 1);
  if (!line) {
    errno = ENOMEM;
    return -1;
  }
  if (pread(fd, line, len, (off_t)start) != (ssize_t)len) {
    free(line);
    return -1;
  }
  if (hash && sha256_hex(line, len, hash)) {
    free(line);
    errno = ENOMEM;
    return -1;
  }
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(line, len, &jerr);
  free(line);
  if (!doc && jerr.out_of_memory) {
    errno = ENOMEM;
    return -1;
  }
  const cp_json *root = doc ? cp_json_root(doc) : NULL;
  const cp_json *s = root ? cp_json_get(root, "seq") : NULL;
  const cp_json *prev = root ? cp_json_get(root, "prev") : NULL;
  int rc = 1;
  if (s && s->type == CP_JSON_INT && s->u.i >= 1 && prev &&
      prev->type == CP_JSON_STRING) {
    rc = 0;
    *seq = (uint64_t)s->u.i;
    if (ts) {
      const cp_json *t = cp_json_get(root, "ts");
      snprintf(ts, 32, "%s", t && t->type == CP_JSON_STRING ? t->u.str.s : "");
    }
    if (run_id) {
      const cp_json *id = cp_json_get(root, "run_id");
      *run_id =
          id && id->type == CP_JSON_STRING ? cp_strdup(id->u.str.s) : NULL;
      if (id && id->type == CP_JSON_STRING && !*run_id) {
        errno = ENOMEM;
        rc = -1;
      }
    }
  }
  cp_json_doc_free(doc);
  return rc;
}

/* The seq of the file's first record: its first line, or its second when
 * the first is a cut line a recovery record closed. 0 when neither is a
 * record (the count in the head file is then left out of the checks). */
static uint64_t first_seq_of(int fd, int64_t size) {
  int64_t start = 0;
  for (int tries = 0; tries < 2 && start < size; tries++) {
    int64_t nl = find_nl_from(fd, start, size);
    if (nl < 0 || (uint64_t)(nl - start) > MAX_LINE) return 0;
    uint64_t seq;
    if (read_record(fd, start, nl, &seq, NULL, NULL, NULL) == 0) return seq;
    start = nl + 1;
  }
  return 0;
}

/* Reads the chain state from the ends of the file open at fd: the last
 * record's hash and seq, a tail cut short by a crash, the first record's
 * seq. */
static int read_tail_of(int fd, const char *path, uint64_t size, tail *t,
                        char **err) {
  memset(t, 0, sizeof *t);
  if (size == 0) return 0;
  int64_t end = (int64_t)size;
  int64_t nl = find_nl_before(fd, end);
  if (nl == -2) goto io_error;
  if (nl != end - 1) {
    t->torn = 1;
    t->torn_bytes = (uint64_t)(end - nl - 1);
    if (hash_range(fd, nl + 1, end - nl - 1, t->torn_hash)) goto io_error;
  }
  if (nl < 0) return 0; /* nothing but the cut line */
  int64_t start = find_nl_before(fd, nl);
  if (start == -2) goto io_error;
  start++;
  if ((uint64_t)(nl - start) > MAX_LINE) {
    set_err(err, errf("%s: the last line is longer than %llu bytes; it is "
                      "not an audit record",
                      path, (unsigned long long)MAX_LINE));
    return -1;
  }
  int rc = read_record(fd, start, nl, &t->seq, t->hash, t->ts, &t->run_id);
  if (rc < 0) goto io_error;
  if (rc > 0) {
    set_err(err, errf("%s: the last record (at byte %lld) is not a cogpipe "
                      "audit record; check the file with `cogpipe audit "
                      "verify` and move it aside",
                      path, (long long)start));
    return -1;
  }
  t->have = 1;
  t->first_seq = start == 0 ? t->seq : first_seq_of(fd, start);
  return 0;
io_error:
  set_err(err, errf("%s: cannot read the end of the log: %s", path,
                    errno == ENOMEM ? "out of memory" : strerror(errno)));
  free(t->run_id);
  t->run_id = NULL;
  return -1;
}

/* Brings the chain state up to date with the file at a->fd. */
static int read_tail(cp_audit *a, uint64_t size, char **err) {
  tail t;
  if (read_tail_of(a->fd, a->path, size, &t, err)) return -1;
  a->size = size;
  a->torn = t.torn;
  a->first_seq = t.first_seq;
  if (size == 0) return 0; /* empty: keep the chain we carry, if any */
  if (t.torn) {
    a->torn_bytes = t.torn_bytes;
    memcpy(a->prev, t.torn_hash, 65);
  }
  if (!t.have) { /* nothing but the cut line */
    a->have_chain = 0;
    a->seq = 0;
    strcpy(a->resumes, ZERO_HASH);
    return 0;
  }
  a->have_chain = 1;
  a->seq = t.seq;
  memcpy(t.torn ? a->resumes : a->prev, t.hash, 65);
  memcpy(a->last_ts, t.ts, sizeof a->last_ts);
  free(a->last_run_id);
  a->last_run_id = t.run_id;
  return 0;
}

/* The hash of the last whole record, or "" when there is none. */
static const char *last_record_hash(const cp_audit *a) {
  if (!a->have_chain) return "";
  return a->torn ? a->resumes : a->prev;
}

/* ---- the head file
 * -------------------------------------------------------------- */

/* The newest rotated file PATH.NNNNNN and its number (0: none); caller
 * frees the name. *failed is set (errno too) when the directory cannot be
 * listed or memory runs out: a rotation must never guess a number, since
 * renaming onto a rotated file would destroy it. */
static char *newest_rotated(const char *path, unsigned long long *num,
                            int *failed) {
  *num = 0;
  *failed = 0;
  char *dir = dir_of(path);
  const char *base = base_of(path);
  size_t bl = strlen(base);
  unsigned long long max = 0;
  DIR *d = dir ? opendir(dir) : NULL;
  if (!d) {
    if (!dir) errno = ENOMEM;
    free(dir);
    *failed = 1;
    return NULL;
  }
  {
    struct dirent *e;
    while ((e = readdir(d))) {
      const char *n = e->d_name;
      if (strncmp(n, base, bl) != 0 || n[bl] != '.' || !n[bl + 1]) continue;
      char *endp;
      unsigned long long v = strtoull(n + bl + 1, &endp, 10);
      if (*endp == '\0' && n[bl + 1] >= '0' && n[bl + 1] <= '9' && v > max)
        max = v;
    }
    closedir(d);
  }
  free(dir);
  *num = max;
  if (!max) return NULL;
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b, "%s.%06llu", path, max);
  char *name = cp_buf_steal(&b, NULL);
  if (!name) {
    errno = ENOMEM;
    *failed = 1;
  }
  return name;
}

/* The log is empty and its head names record h: a rotation that moved the
 * full file aside and stopped before the new file's first record leaves
 * exactly this. When the newest rotated file ends at that record, the
 * chain goes on from it; returns 1 then, 0 otherwise, -1 when memory ran
 * out finding out (no verdict). */
static int resume_rotated(cp_audit *a, const cp_audit_head *h) {
  unsigned long long num;
  int failed;
  unsigned long before = cp_alloc_failures();
  char *name = newest_rotated(a->path, &num, &failed);
  if (!name) return failed && errno == ENOMEM ? -1 : 0;
  int fd = open(name, O_RDONLY | O_CLOEXEC);
  struct stat st;
  tail t = {0};
  int ok = fd >= 0 && fstat(fd, &st) == 0 &&
           read_tail_of(fd, name, (uint64_t)st.st_size, &t, NULL) == 0 &&
           t.have && !t.torn && t.seq == h->seq && strcmp(t.hash, h->hash) == 0;
  if (fd >= 0) close(fd);
  char *from = ok ? cp_strdup(base_of(name)) : NULL;
  if (cp_alloc_failures() != before) {
    free(t.run_id);
    free(from);
    free(name);
    return -1;
  }
  if (ok) {
    a->have_chain = 1;
    a->seq = t.seq;
    memcpy(a->prev, t.hash, 65);
    memcpy(a->last_ts, t.ts, sizeof a->last_ts);
    free(a->last_run_id);
    a->last_run_id = t.run_id;
    t.run_id = NULL;
    free(a->from_file);
    a->from_file = from;
  }
  free(t.run_id);
  free(name);
  return ok;
}

/* Checks the chain state just read from the file against the head file:
 * a log that does not end where its head says was cut or changed, and
 * continuing it would bury that under new records. */
static int check_head(cp_audit *a, char **err) {
  char *text;
  size_t len;
  int rc = read_small(a->head_path, MAX_HEAD, &text, &len, err);
  if (rc == 1) return 0; /* a new log, or one from before head files */
  if (rc < 0) return -1;
  cp_audit_head h;
  char *why = NULL;
  rc = parse_head(text, len, &h, &why);
  free(text);
  if (rc == -2) {
    set_err(err, errf("audit log %s: out of memory while reading its head file",
                      a->path));
    return -1;
  }
  if (rc) {
    set_err(err, errf("audit log %s: its head file %s is not valid (%s); "
                      "check the log with `cogpipe audit verify %s`",
                      a->path, a->head_path, why, a->path));
    free(why);
    return -1;
  }
  uint64_t seq = a->have_chain ? a->seq : 0;
  const char *hash = last_record_hash(a);
  if (seq == h.seq && strcmp(hash, h.hash) == 0) return 0;
  /* also when a chain is carried over: another writer may have rotated
   * after this handle last looked */
  int resumed = a->size == 0 ? resume_rotated(a, &h) : 0;
  if (resumed > 0) return 0;
  if (resumed < 0) {
    set_err(err, errf("audit log %s: out of memory while reading the file "
                      "rotated before it",
                      a->path));
    return -1;
  }
  char *what;
  if (seq == 0)
    what = errf("audit log %s has no records, but its head file %s says it "
                "ends at record %llu (hash %s): the file was emptied or "
                "replaced",
                a->path, a->head_path, (unsigned long long)h.seq, h.hash);
  else if (seq < h.seq)
    what = errf("audit log %s ends at record %llu, but its head file %s "
                "says it ends at record %llu (hash %s): records were "
                "removed or the file was cut",
                a->path, (unsigned long long)seq, a->head_path,
                (unsigned long long)h.seq, h.hash);
  else if (seq > h.seq)
    what = errf("audit log %s goes on past its head file %s: the head "
                "names record %llu, the log ends at record %llu; records "
                "were added without updating it",
                a->path, a->head_path, (unsigned long long)h.seq,
                (unsigned long long)seq);
  else
    what = errf("the last record of audit log %s (seq %llu) is not the one "
                "its head file %s names (hash %s): the record was changed",
                a->path, (unsigned long long)seq, a->head_path, h.hash);
  set_err(err, what ? errf("%s. Nothing was written. Check the log with "
                           "`cogpipe audit verify %s`; to start a new chain, "
                           "move the log and its head file aside",
                           what, a->path)
                    : NULL);
  free(what);
  return -1;
}

static int add_text(cp_buf *b, const char *s) {
  if (!s) {
    cp_buf_adds(b, "null");
    return 0;
  }
  return cp_json_add_string(b, s, strlen(s));
}

/* A text the head file names, or null when it is not UTF-8 (a path JSON
 * cannot hold; the head file is found beside the log all the same). */
static void add_text_or_null(cp_buf *b, const char *s) {
  size_t mark = b->len;
  if (add_text(b, s) == 0) return;
  b->len = mark;
  cp_buf_adds(b, "null");
}

/* Replaces the head file with the chain's state: a temporary file
 * written (and fsync'd when durable), renamed over the head, and the
 * directory fsync'd. Returns 0; -1 with *err when the head was left as it
 * was; -2 with *err when it was replaced but its directory entry could not
 * be made durable. Called with the lock held, which also makes the
 * temporary file's fixed name safe. */
static int write_head(cp_audit *a, int durable, char **err) {
  cp_buf b = CP_BUF_INIT;
  cp_buf_adds(&b, "{\"path\":");
  add_text_or_null(&b, a->path);
  cp_audit_head h;
  cp_audit_head_get(a, &h);
  cp_buf_printf(
      &b, ",\"seq\":%llu,\"hash\":\"%s\",\"records\":%llu,\"run_id\":",
      (unsigned long long)h.seq, h.hash, (unsigned long long)h.records);
  add_text_or_null(&b, a->last_run_id);
  cp_buf_adds(&b, ",\"ts\":");
  add_text_or_null(&b, a->last_ts);
  cp_buf_adds(&b, "}\n");
  char *tmp = errf("%s.tmp", a->head_path);
  if (!tmp || !cp_buf_ok(&b)) {
    free(tmp);
    cp_buf_free(&b);
    set_err(err, errf("cannot write audit head file %s: out of memory", a->head_path));
    return -1;
  }
  int rc = -1, e = 0;
  int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0 || write_all(fd, b.data, b.len, NULL) != 0 ||
      (durable && fsync(fd) != 0)) {
    e = errno;
    if (fd >= 0) close(fd);
  } else if (close(fd) != 0 || rename(tmp, a->head_path) != 0) {
    e = errno;
  } else if (durable && fsync_dir(a->head_path) != 0) {
    e = errno;
    rc = -2;
  } else {
    rc = 0;
  }
  if (rc == -1) unlink(tmp);
  if (rc)
    set_err(err, errf("cannot write audit head file %s: %s", a->head_path,
                      strerror(e)));
  free(tmp);
  cp_buf_free(&b);
  return rc;
}

/* ---- opening, locking, rotating
 * ---------------------------------------------- */

static int open_log(cp_audit *a, char **err) {
  int fd =
      open(a->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0 && errno == EEXIST)
    fd = open(a->path, O_RDWR | O_APPEND | O_CLOEXEC);
  if (fd < 0) {
    set_err(err,
            errf("cannot open audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  struct stat st;
  fstat(fd, &st);
  a->fd = fd;
  a->dev = st.st_dev;
  a->ino = st.st_ino;
  a->size = UINT64_MAX;
  return 0;
}

/* Takes the lock and brings the chain state up to date with the file: it
 * may have been appended to by another process, or rotated by one. When
 * it changed, its head file must still agree with it. */
static int lock_log(cp_audit *a, char **err) {
  for (;;) {
    if (flock(a->fd, LOCK_EX) != 0) {
      set_err(err,
              errf("cannot lock audit log %s: %s", a->path, strerror(errno)));
      return -1;
    }
    struct stat fs, ps;
    if (fstat(a->fd, &fs) != 0) {
      set_err(err, errf("audit log %s: %s", a->path, strerror(errno)));
      flock(a->fd, LOCK_UN);
      return -1;
    }
    if (stat(a->path, &ps) != 0 || ps.st_ino != fs.st_ino ||
        ps.st_dev != fs.st_dev) {
      /* replaced under us (rotated by another writer, or moved away): the
       * chain goes on in whatever is at the path now */
      flock(a->fd, LOCK_UN);
      close(a->fd);
      a->fd = -1;
      free(a->from_file);
      a->from_file = NULL;
      if (open_log(a, err)) return -1;
      continue;
    }
    if ((uint64_t)fs.st_size != a->size &&
        (read_tail(a, (uint64_t)fs.st_size, err) || check_head(a, err))) {
      flock(a->fd, LOCK_UN);
      return -1;
    }
    return 0;
  }
}

/* Called with the lock held: moves the full file aside and starts a new
 * one, locked, whose first record will continue the chain. The head file
 * keeps naming the moved file's last record until that record is
 * written. */
static int rotate(cp_audit *a, char **err) {
  if (a->o.fsync != CP_AUDIT_FSYNC_OFF && fsync(a->fd) != 0) {
    set_err(err,
            errf("cannot sync audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  unsigned long long num;
  int failed;
  free(newest_rotated(a->path, &num, &failed));
  cp_buf nb = CP_BUF_INIT;
  cp_buf_printf(&nb, "%s.%06llu", a->path, num + 1);
  char *to = failed ? NULL : cp_buf_steal(&nb, NULL);
  cp_buf_free(&nb);
  char *from = to ? cp_strdup(base_of(to)) : NULL;
  if (!from) {
    int e = failed ? errno : ENOMEM;
    set_err(err, errf("cannot rotate audit log %s: %s", a->path,
                      e == ENOMEM ? "out of memory" : strerror(e)));
    free(to);
    return -1;
  }
  if (rename(a->path, to) != 0) {
    set_err(err,
            errf("cannot rotate audit log %s: %s", a->path, strerror(errno)));
    free(from);
    free(to);
    return -1;
  }
  int old = a->fd;
  if (open_log(a, err)) {
    a->fd = old; /* still locked; the caller unlocks it */
    free(from);
    free(to);
    return -1;
  }
  flock(a->fd, LOCK_EX);
  flock(old, LOCK_UN);
  close(old);
  free(a->from_file);
  a->from_file = from;
  free(to);
  if (a->o.fsync != CP_AUDIT_FSYNC_OFF && fsync_dir(a->path) != 0) {
    set_err(err, errf("cannot sync the directory of audit log %s: %s", a->path,
                      strerror(errno)));
    return -1;
  }
  struct stat st;
  if (fstat(a->fd, &st) != 0) {
    set_err(err, errf("audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  return read_tail(a, (uint64_t)st.st_size, err);
}

static void free_audit(cp_audit *a) {
  free(a->failure);
  free(a->last_run_id);
  free(a->from_file);
  free(a->head_path);
  free(a->path);
  free(a);
}

cp_audit *cp_audit_open(const char *path, const cp_audit_options *o,
                        char **err) {
  if (err) *err = NULL;
  cp_audit *a = cp_calloc(1, sizeof *a); /* the caller owns it */
  if (a) {
    a->path = cp_strdup(path);
    a->head_path = cp_audit_head_path(path);
    a->fd = -1;
  }
  if (!a || !a->path || !a->head_path) {
    set_err(err, errf("cannot open audit log %s: out of memory", path));
    if (a) free_audit(a);
    return NULL;
  }
  if (o) a->o = *o;
  strcpy(a->prev, ZERO_HASH);
  if (open_log(a, err) || lock_log(a, err)) {
    if (a->fd >= 0) close(a->fd);
    free_audit(a);
    return NULL;
  }
  flock(a->fd, LOCK_UN);
  return a;
}

/* ---- writing
 * ----------------------------------------------------------------------- */

/* Appends one line (with its newline) to b and returns the hash of its
 * bytes in hash and its time in ts; -1 when a text is not UTF-8, -3 when
 * memory ran out (b failed, or the hash could not be computed). */
static int add_line(cp_buf *b, const cp_audit_record *r, const char *event,
                    uint64_t seq, const char *extra, size_t extra_len,
                    int genesis, const char *prev, char hash[65], char ts[32]) {
  size_t start = b->len;
  cp_audit_timestamp(ts);
  cp_buf_printf(b, "{\"ts\":\"%s\",\"seq\":%llu,\"run_id\":", ts,
                (unsigned long long)seq);
  if (add_text(b, r->run_id)) return -1;
  cp_buf_adds(b, ",\"tenant\":");
  if (add_text(b, r->tenant)) return -1;
  cp_buf_adds(b, ",\"pipeline\":");
  if (add_text(b, r->pipeline)) return -1;
  cp_buf_adds(b, ",\"event\":");
  if (add_text(b, event)) return -1;
  if (extra && extra_len) {
    cp_buf_addc(b, ',');
    cp_buf_add(b, extra, extra_len);
  }
  if (genesis) cp_buf_adds(b, ",\"genesis\":true");
  cp_buf_printf(b, ",\"prev\":\"%s\"}", prev);
  if (!cp_buf_ok(b) || sha256_hex(b->data + start, b->len - start, hash))
    return -3;
  cp_buf_addc(b, '\n');
  return cp_buf_ok(b) ? 0 : -3;
}

/* fdatasync of the log, fsync of its head file, fsync of their directory:
 * what a sync makes durable. Touches only what it is given, so a pool
 * thread may run it. */
static int sync_files(int fd, const char *path, const char *head_path,
                      char **err) {
  if (fdatasync(fd) != 0) {
    set_err(err, errf("cannot sync audit log %s: %s", path, strerror(errno)));
    return -1;
  }
  int hfd = open(head_path, O_RDONLY | O_CLOEXEC);
  if (hfd < 0 || fsync(hfd) != 0) {
    set_err(err, errf("cannot sync audit head file %s: %s", head_path,
                      strerror(errno)));
    if (hfd >= 0) close(hfd);
    return -1;
  }
  close(hfd);
  if (fsync_dir(path) != 0) {
    set_err(err, errf("cannot sync the directory of audit log %s: %s", path,
                      strerror(errno)));
    return -1;
  }
  return 0;
}

/* Stops the handle after a failed write: cuts off what reached the log
 * past start (UINT64_MAX: nothing to cut), so that it holds whole records
 * only, and keeps the message for every later call. Takes msg; returns
 * -1. */
static int fail_write(cp_audit *a, uint64_t start, char *msg, char **err) {
  if (start != UINT64_MAX) {
    if (ftruncate(a->fd, (off_t)start) == 0) {
      a->size = start;
      if (a->o.fsync == CP_AUDIT_FSYNC_ALWAYS) (void)fdatasync(a->fd);
    } else {
      char *m = errf("%s (and what was written of the record could not be "
                     "cut off again: %s; the next writer closes that line "
                     "and records it)",
                     msg, strerror(errno));
      free(msg);
      msg = m;
      a->size = UINT64_MAX;
    }
  }
  stop(a, msg ? cp_strdup(msg) : NULL);
  set_err(err, msg);
  return -1;
}

/* The answer to every call after the handle stopped. */
static int refuse(const cp_audit *a, char **err) {
  set_err(err, errf("audit log %s stopped after an earlier failure: %s",
                    a->path,
                    a->failure ? a->failure : "(its reason was lost: out of memory)"));
  return -1;
}

/* Writes b -- the lines for records a->seq + 1 to seq, the last one
 * hashing to hash -- in one write(2) (looping only if the kernel takes
 * less), fsyncs it when the policy says so and replaces the head file.
 * Only then does the chain move forward; on any failure the log is cut
 * back to where it was and the handle stops. */
static int commit(cp_audit *a, cp_buf *b, const char *hash, uint64_t seq,
                  const char *run_id, const char *ts, char **err) {
  /* what the state needs is allocated before anything is written */
  char *rid = run_id ? cp_strdup(run_id) : NULL;
  if (run_id && !rid) return -3;
  uint64_t start = a->size; /* exact: the lock is held */
  int always = a->o.fsync == CP_AUDIT_FSYNC_ALWAYS;
  size_t done = 0;
  if (write_all(a->fd, b->data, b->len, &done) != 0) {
    char *msg = errf("cannot write audit log %s: %s", a->path, strerror(errno));
    if (done) {
      char *m =
          errf("%s (after %zu of the record's %zu bytes)", msg, done, b->len);
      free(msg);
      msg = m;
    }
    free(rid);
    return fail_write(a, done ? start : UINT64_MAX, msg, err);
  }
  if (always && fdatasync(a->fd) != 0) {
    free(rid);
    return fail_write(
        a, start,
        errf("cannot sync audit log %s: %s", a->path, strerror(errno)), err);
  }
  /* what the head file must say; kept to go back to if it cannot */
  struct cp_audit old = *a;
  a->size += b->len;
  if (!a->first_seq) a->first_seq = a->seq + 1;
  memcpy(a->prev, hash, 65);
  a->seq = seq;
  a->have_chain = 1;
  a->torn = 0;
  memcpy(a->last_ts, ts, sizeof a->last_ts);
  a->last_run_id = rid;
  char *herr = NULL;
  int hrc = write_head(a, always, &herr);
  if (hrc == -1) {
    free(a->last_run_id);
    *a = old;
    return fail_write(a, start, herr, err);
  }
  free(old.last_run_id);
  if (hrc == -2) /* the head names the record: keep it, but stop */
    return fail_write(a, UINT64_MAX, herr, err);
  a->dirty = !always;
  return 0;
}

/* Returns 0, -1 for a failure of the file system (the handle stops), -2
 * for a record that cannot be written as given, -3 when memory ran out
 * before anything was written (the handle goes on). */
static int append_locked(cp_audit *a, const cp_audit_record *r, char **err) {
  cp_buf b = CP_BUF_INIT;
  char hash[65], ts[32];
  int rc = -1;
  if (a->torn) {
    /* close the cut line, then account for it */
    cp_buf_addc(&b, '\n');
    cp_buf x = CP_BUF_INIT;
    cp_buf_printf(&x, "\"resumes\":\"%s\",\"torn_bytes\":%llu",
                  a->have_chain ? a->resumes : ZERO_HASH,
                  (unsigned long long)a->torn_bytes);
    int bad = cp_buf_ok(&x) ? add_line(&b, r, EV_RECOVERED, a->seq + 1, x.data,
                                       x.len, 0, a->prev, hash, ts)
                             : -3;
    cp_buf_free(&x);
    if (bad == -3) goto nomem;
    if (bad) goto bad_text;
    rc = commit(a, &b, hash, a->seq + 1, r->run_id, ts, err);
    if (rc == -3) goto nomem;
    if (rc) goto done;
    rc = -1;
    cp_buf_reset(&b);
  }
  /* the record alone first, to know its size (rotation is by size) */
  cp_buf rec = CP_BUF_INIT;
  int bad = add_line(&rec, r, r->event, a->seq + 1, r->fields, r->fields_len,
                     !a->have_chain, a->have_chain ? a->prev : ZERO_HASH, hash, ts);
  if (bad) {
    cp_buf_free(&rec);
    if (bad == -3) goto nomem;
    goto bad_text;
  }
  if (a->o.max_bytes && a->size > 0 && a->size + rec.len > a->o.max_bytes &&
      rotate(a, err)) {
    cp_buf_free(&rec);
    goto done;
  }
  cp_buf_free(&rec);
  uint64_t seq = a->seq;
  char prev[65];
  memcpy(prev, a->have_chain ? a->prev : ZERO_HASH, 65);
  if (a->size == 0 && a->have_chain) {
    /* a new file in a running chain: say where it comes from */
    cp_buf x = CP_BUF_INIT;
    cp_buf_adds(&x, "\"previous_file\":");
    bad = add_text(&x, a->from_file);
    if (!bad && !cp_buf_ok(&x)) bad = -3;
    if (!bad)
      bad = add_line(&b, r, EV_CONTINUED, ++seq, x.data, x.len, 0, prev, hash, ts);
    cp_buf_free(&x);
    if (bad == -3) goto nomem;
    if (bad) goto bad_text;
    memcpy(prev, hash, 65);
  }
  bad = add_line(&b, r, r->event, ++seq, r->fields, r->fields_len,
                 !a->have_chain, prev, hash, ts);
  if (bad == -3) goto nomem;
  if (bad) goto bad_text;
  rc = commit(a, &b, hash, seq, r->run_id, ts, err);
  if (rc == -3) goto nomem;
  goto done;
nomem:
  rc = -3;
  set_err(err, errf("audit record for event '%s' not written: out of memory",
                    r->event));
  goto done;
bad_text:
  rc = -2;
  set_err(err, errf("audit record for event '%s' has text that is not "
                    "valid UTF-8",
                    r->event));
done:
  cp_buf_free(&b);
  return rc;
}

int cp_audit_append(cp_audit *a, const cp_audit_record *r, char **err) {
  if (err) *err = NULL;
  if (!r->event || !*r->event) {
    set_err(err, errf("an audit record needs an event name"));
    return -1;
  }
  if (a->stopped) return refuse(a, err);
  char *e = NULL;
  int rc = lock_log(a, &e) ? -1 : 0;
  if (rc == 0) {
    rc = append_locked(a, r, &e);
    flock(a->fd, LOCK_UN);
  }
  /* the record is lost: nothing after it may look as if it were not */
  if (rc == -1) stop(a, e ? cp_strdup(e) : NULL);
  set_err(err, e);
  return rc ? -1 : 0;
}

int cp_audit_sync(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (a->stopped) return refuse(a, err);
  if (a->o.fsync == CP_AUDIT_FSYNC_OFF || !a->dirty) return 0;
  char *e = NULL;
  if (sync_files(a->fd, a->path, a->head_path, &e)) {
    /* after a failed fsync the kernel may have dropped the pages: what is
     * on disk is unknown, and another fsync could wrongly succeed */
    stop(a, e ? cp_strdup(e) : NULL);
    set_err(err, e);
    return -1;
  }
  a->dirty = 0;
  return 0;
}

struct cp_audit_sync_job {
  cp_audit *a;
  int fd; /* a dup of the log's, owned by the job */
  char *path, *head_path;
  int ran, rc;
  char *err;
};

cp_audit_sync_job *cp_audit_sync_start(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (a->stopped) {
    refuse(a, err);
    return NULL;
  }
  if (a->o.fsync == CP_AUDIT_FSYNC_OFF || !a->dirty) return NULL;
  int fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    set_err(err,
            errf("cannot sync audit log %s: %s", a->path, strerror(errno)));
    return NULL;
  }
  /* owned by the caller until cp_audit_sync_finish frees it */
  cp_audit_sync_job *j = cp_calloc(1, sizeof *j);
  if (j) {
    j->path = cp_strdup(a->path);
    j->head_path = cp_strdup(a->head_path);
  }
  if (!j || !j->path || !j->head_path) {
    if (j) {
      free(j->path);
      free(j->head_path);
      free(j);
    }
    close(fd);
    set_err(err, errf("cannot sync audit log %s: out of memory", a->path));
    return NULL;
  }
  j->a = a;
  j->fd = fd;
  a->jobs++;
  a->dirty = 0;
  return j;
}

void cp_audit_sync_run(cp_audit_sync_job *j) {
  j->rc = sync_files(j->fd, j->path, j->head_path, &j->err);
  j->ran = 1;
}

int cp_audit_sync_finish(cp_audit_sync_job *j, char **err) {
  if (err) *err = NULL;
  cp_audit *a = j->a;
  close(j->fd);
  if (!a->closed) {
    if (j->rc) stop(a, j->err ? cp_strdup(j->err) : NULL);
    if (!j->ran) a->dirty = 1; /* cancelled before it started */
  }
  int rc = j->rc ? -1 : 0;
  set_err(err, j->err);
  free(j->path);
  free(j->head_path);
  free(j);
  if (--a->jobs == 0 && a->closed) free_audit(a);
  return rc;
}

int cp_audit_close(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (!a) return 0;
  int rc = a->stopped ? refuse(a, err) : cp_audit_sync(a, err);
  if (a->fd >= 0 && close(a->fd) != 0 && rc == 0) {
    set_err(err,
            errf("cannot close audit log %s: %s", a->path, strerror(errno)));
    rc = -1;
  }
  a->fd = -1;
  a->closed = 1;
  if (a->jobs == 0) free_audit(a);
  return rc;
}

uint64_t cp_audit_seq(const cp_audit *a) { return a->have_chain ? a->seq : 0; }
const char *cp_audit_path(const cp_audit *a) { return a->path; }
void cp_audit_last_hash(const cp_audit *a, char hex[65]) {
  snprintf(hex, 65, "%s", last_record_hash(a));
}

void cp_audit_head_get(const cp_audit *a, cp_audit_head *out) {
  out->seq = cp_audit_seq(a);
  cp_audit_last_hash(a, out->hash);
  out->records = out->seq && a->first_seq && a->first_seq <= out->seq
                     ? out->seq - a->first_seq + 1
                     : 0;
}

/* ---- verification
 * ------------------------------------------------------------------ */

typedef struct vline {
  size_t start, len;
  unsigned char hash[32];
  int64_t seq; /* once checked as a record of the chain; 0 otherwise */
} vline;

typedef struct vfile {
  const char *path;
  char *data; /* mapped, or NULL when empty */
  size_t size;
  vline *lines;
  size_t n;
  int trailing_nl; /* the last line ends with '\n' */
} vfile;

typedef struct vpos {
  size_t f, i; /* file, 0-based line */
} vpos;

/* A run seen starting and not yet seen ending. */
typedef struct open_run {
  size_t f;
  uint64_t line;
  char *run_id; /* owned */
} open_run;

typedef struct verifier {
  vfile *files;
  size_t n;
  cp_audit_report *rep;
  /* where the chain checked so far ends */
  int have_record;
  vpos last_rec;
  int64_t first_seq, last_seq;
  open_run *runs;
  size_t n_runs;
} verifier;

static void note(cp_audit_note *nt, size_t f, uint64_t line, char *msg) {
  nt->file = f;
  nt->line = line;
  nt->message = msg;
}

/* Takes msg. A warning that cannot be kept for want of memory is dropped:
 * cp_audit_verify then reports the verification itself as failed. */
static void warn(verifier *v, size_t f, uint64_t line, char *msg) {
  cp_audit_report *r = v->rep;
  cp_audit_note *w = cp_reallocarray(r->warnings, r->n_warnings + 1, sizeof *w);
  if (!w) {
    free(msg);
    return;
  }
  r->warnings = w;
  note(&r->warnings[r->n_warnings++], f, line, msg);
}

static int broken(verifier *v, vpos p, char *msg) {
  v->rep->broken = 1;
  note(&v->rep->problem, p.f, p.i + 1, msg);
  return 1;
}

static int load_file(vfile *vf, const char *path, char **err) {
  memset(vf, 0, sizeof *vf);
  vf->path = path;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  struct stat st;
  if (fd < 0 || fstat(fd, &st) != 0) {
    *err = errf("cannot read %s: %s", path, strerror(errno));
    if (fd >= 0) close(fd);
    return -1;
  }
  if (!S_ISREG(st.st_mode)) {
    *err = errf("cannot read %s: not a regular file", path);
    close(fd);
    return -1;
  }
  vf->size = (size_t)st.st_size;
  if (vf->size) {
    void *m = mmap(NULL, vf->size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (m == MAP_FAILED) {
      if (errno == ENOMEM) cp_alloc_note_failure();
      *err = errf("cannot read %s: %s", path,
                  errno == ENOMEM ? "out of memory" : strerror(errno));
      close(fd);
      return -1;
    }
    vf->data = m;
  }
  close(fd);
  size_t cap = 0;
  size_t pos = 0;
  while (pos < vf->size) {
    const char *nl = memchr(vf->data + pos, '\n', vf->size - pos);
    size_t end = nl ? (size_t)(nl - vf->data) : vf->size;
    if (vf->n == cap) {
      size_t ncap = cap ? cap * 2 : 256;
      vline *grown = cp_reallocarray(vf->lines, ncap, sizeof *grown);
      if (!grown) goto nomem;
      vf->lines = grown;
      cap = ncap;
    }
    vline *l = &vf->lines[vf->n++];
    l->start = pos;
    l->len = end - pos;
    l->seq = 0;
    if (sha256(vf->data + pos, l->len, l->hash)) goto nomem;
    pos = nl ? end + 1 : end;
  }
  vf->trailing_nl = vf->size == 0 || vf->data[vf->size - 1] == '\n';
  return 0;
nomem:
  *err = errf("cannot read %s: out of memory", path);
  if (vf->data) munmap(vf->data, vf->size);
  free(vf->lines);
  memset(vf, 0, sizeof *vf);
  return -1;
}

static void free_file(vfile *vf) {
  if (vf->data) munmap(vf->data, vf->size);
  free(vf->lines);
}

static const char *line_text(const verifier *v, vpos p, size_t *len) {
  const vline *l = &v->files[p.f].lines[p.i];
  *len = l->len;
  return v->files[p.f].data + l->start;
}

static const unsigned char *line_hash(const verifier *v, vpos p) {
  return v->files[p.f].lines[p.i].hash;
}

static int pos_before(vpos a, vpos b) {
  return a.f < b.f || (a.f == b.f && a.i < b.i);
}

static int next_pos(const verifier *v, vpos *p) {
  if (p->i + 1 < v->files[p->f].n) {
    p->i++;
    return 1;
  }
  for (size_t f = p->f + 1; f < v->n; f++)
    if (v->files[f].n) {
      p->f = f;
      p->i = 0;
      return 1;
    }
  return 0;
}

/* Finds a line with this hash; only lines before `before` when only_before. */
static int find_hash(const verifier *v, const unsigned char *h, vpos skip,
                     vpos *found) {
  for (size_t f = 0; f < v->n; f++)
    for (size_t i = 0; i < v->files[f].n; i++) {
      if (f == skip.f && i == skip.i) continue;
      if (memcmp(v->files[f].lines[i].hash, h, 32) == 0) {
        found->f = f;
        found->i = i;
        return 1;
      }
    }
  return 0;
}

/* A record's fields the verifier looks at. */
typedef struct vrec {
  cp_json_doc *doc;
  unsigned char prev[32];
  int64_t seq;
  const char *event;
  int genesis;
  const cp_json *root;
} vrec;

/* Parses line p as a record. Returns 0, 1 when not JSON, 2 when JSON but
 * not a record; *why says what is wrong (malloc'd). */
static int parse_record(const verifier *v, vpos p, vrec *r, char **why) {
  memset(r, 0, sizeof *r);
  size_t len;
  const char *text = line_text(v, p, &len);
  cp_json_error jerr;
  r->doc = cp_json_parse(text, len, &jerr);
  if (!r->doc) {
    *why = errf("not valid JSON: %s at column %d", jerr.message, jerr.column);
    return 1;
  }
  r->root = cp_json_root(r->doc);
  const cp_json *prev = cp_json_get(r->root, "prev");
  const cp_json *seq = cp_json_get(r->root, "seq");
  const cp_json *ev = cp_json_get(r->root, "event");
  const cp_json *gen = cp_json_get(r->root, "genesis");
  const char *missing =
      r->root->type != CP_JSON_OBJECT ? "is not a JSON object"
      : !prev || prev->type != CP_JSON_STRING ||
              hex_decode(prev->u.str.s, prev->u.str.len, r->prev)
          ? "has no valid prev (64 hex digits)"
      : !seq || seq->type != CP_JSON_INT || seq->u.i < 1 ? "has no valid seq"
      : !ev || ev->type != CP_JSON_STRING                ? "has no event"
                                                         : NULL;
  if (missing) {
    *why = errf("not an audit record: the line %s", missing);
    cp_json_doc_free(r->doc);
    r->doc = NULL;
    return 2;
  }
  r->seq = seq->u.i;
  r->event = ev->u.str.s;
  r->genesis = gen && gen->type == CP_JSON_TRUE;
  return 0;
}

static const char *str_member(const cp_json *o, const char *k) {
  const cp_json *m = cp_json_get(o, k);
  return m && m->type == CP_JSON_STRING ? m->u.str.s : NULL;
}

/* Explains why record p does not chain from the line before it (prev_pos,
 * whose hash prev_hash is), and reports the line to blame. */
static int diagnose(verifier *v, vpos p, const vrec *r, vpos last_rec,
                    int64_t last_seq) {
  vpos q;
  /* a repeat of an earlier line */
  if (find_hash(v, line_hash(v, p), p, &q) && pos_before(q, p))
    return broken(v, p,
                  errf("this record repeats line %zu%s%s (a copied or "
                       "replayed record)",
                       q.i + 1, q.f != p.f ? " of " : "",
                       q.f != p.f ? v->files[q.f].path : ""));
  if (find_hash(v, r->prev, p, &q)) {
    if (pos_before(p, q))
      return broken(v, p,
                    errf("this record is out of order: it chains from "
                         "line %zu%s%s, which comes after it (records "
                         "were reordered)",
                         q.i + 1, q.f != p.f ? " of " : "",
                         q.f != p.f ? v->files[q.f].path : ""));
    vpos first = q;
    next_pos(v, &first);
    return broken(v, first,
                  errf("this line does not belong to the chain: "
                       "line %zu%s%s chains from line %zu, skipping "
                       "it (a record was inserted)",
                       p.i + 1, p.f != first.f ? " of " : "",
                       p.f != first.f ? v->files[p.f].path : "", q.i + 1));
  }
  /* does the next line chain from the line before this one? then this
   * line was slipped in */
  vpos nx = p;
  if (next_pos(v, &nx)) {
    vrec n;
    char *why = NULL;
    if (parse_record(v, nx, &n, &why) == 0) {
      int slipped = memcmp(n.prev, line_hash(v, last_rec), 32) == 0;
      cp_json_doc_free(n.doc);
      if (slipped)
        return broken(v, p,
                      errf("this record was inserted: the next line "
                           "chains from the line before it"));
    }
    free(why);
  }
  if (r->seq > last_seq + 1)
    return broken(v, p,
                  errf("%lld record(s) missing before this line: seq "
                       "jumps from %lld to %lld and prev matches no "
                       "line (records were removed)",
                       (long long)(r->seq - last_seq - 1), (long long)last_seq,
                       (long long)r->seq));
  if (r->seq == last_seq + 1)
    return broken(v, last_rec,
                  errf("this record was changed: its hash does "
                       "not match the prev of the record after "
                       "it (or that record's prev was changed)"));
  return broken(v, p,
                errf("prev matches no line and seq goes from %lld to "
                     "%lld (a changed or inserted record)",
                     (long long)last_seq, (long long)r->seq));
}

/* Does s[0..n) contain w[0..wn)? (memmem is not in POSIX.) */
static int has_text(const char *s, size_t n, const char *w, size_t wn) {
  for (const char *p = s; n >= wn && (p = memchr(p, w[0], n - wn + 1));) {
    if (memcmp(p, w, wn) == 0) return 1;
    n -= (size_t)(p - s) + 1;
    s = ++p;
  }
  return 0;
}

/* Is line p an audit.recovered record chaining from the (cut) line before? */
static int recovers(const verifier *v, vpos cut, vpos p) {
  static const char tag[] = "\"event\":\"" EV_RECOVERED "\"";
  size_t len;
  const char *text = line_text(v, p, &len);
  if (!has_text(text, len, tag, sizeof tag - 1)) return 0; /* the usual case */
  vrec r;
  char *why = NULL;
  if (parse_record(v, p, &r, &why) != 0) {
    free(why);
    return 0;
  }
  int ok = strcmp(r.event, EV_RECOVERED) == 0 &&
           memcmp(r.prev, line_hash(v, cut), 32) == 0;
  cp_json_doc_free(r.doc);
  return ok;
}

/* Follows run_start and run_end records, to name the runs that never
 * ended. */
static void track_run(verifier *v, vpos p, const vrec *r) {
  int start = strcmp(r->event, "run_start") == 0;
  if (!start && strcmp(r->event, "run_end") != 0) return;
  const char *id = str_member(r->root, "run_id");
  if (!id) return;
  size_t k = v->n_runs;
  while (k > 0 && strcmp(v->runs[k - 1].run_id, id) != 0)
    k--;
  if (start) {
    if (k) return; /* started twice: the first start stands */
    /* what cannot be kept for want of memory fails the verification */
    open_run *runs = cp_reallocarray(v->runs, v->n_runs + 1, sizeof *runs);
    if (!runs) return;
    v->runs = runs;
    char *copy = cp_strdup(id);
    if (!copy) return;
    v->runs[v->n_runs++] = (open_run){p.f, p.i + 1, copy};
  } else if (k) {
    free(v->runs[k - 1].run_id);
    memmove(&v->runs[k - 1], &v->runs[k], (v->n_runs - k) * sizeof *v->runs);
    v->n_runs--;
  }
}

static int verify_chain(verifier *v) {
  cp_audit_report *rep = v->rep;
  int have_record = 0;
  int64_t last_seq = 0;
  vpos last_rec = {0, 0};
  const unsigned char *prev_hash = NULL; /* of the line before, record or cut */
  int after_cut = 0;
  unsigned char zero[32] = {0};
  for (size_t f = 0; f < v->n; f++) {
    vfile *vf = &v->files[f];
    int first_in_file = 1;
    for (size_t i = 0; i < vf->n; i++) {
      vpos p = {f, i};
      if (i + 1 == vf->n && !vf->trailing_nl) {
        /* even when it parses: the writer adds the newline in the same
         * write, and treats such a line as cut short too */
        warn(v, f, i + 1,
             errf("incomplete last line (%zu bytes, no newline): a write "
                  "cut short, probably by a crash; not part of the chain",
                  vf->lines[i].len));
        break;
      }
      /* a line the writer found cut short and closed, whatever is left of
       * it: the record after it says so */
      vpos nx = p;
      if (i + 1 < vf->n && next_pos(v, &nx) && recovers(v, p, nx)) {
        warn(v, f, i + 1,
             errf("a line cut short by a crash (%zu bytes), accounted for "
                  "by the audit.recovered record after it",
                  vf->lines[i].len));
        prev_hash = line_hash(v, p);
        after_cut = 1;
        continue;
      }
      vrec r;
      char *why = NULL;
      int bad = parse_record(v, p, &r, &why);
      if (bad) return broken(v, p, why);
      const char *problem = NULL;
      if (after_cut) {
        unsigned char res[32];
        const char *rs = str_member(r.root, "resumes");
        if (!rs || hex_decode(rs, strlen(rs), res) ||
            memcmp(res, have_record ? line_hash(v, last_rec) : zero, 32) != 0)
          problem = "the recovery record's resumes is not the hash of the "
                    "last record before the cut line";
        after_cut = 0;
      } else if (r.genesis) {
        if (!first_in_file)
          problem = "a new chain starts in the middle of the file (genesis "
                    "record)";
        else if (memcmp(r.prev, zero, 32) != 0)
          problem = "a genesis record whose prev is not 64 zeros";
        else if (have_record)
          problem = "this file starts a new chain (genesis) instead of "
                    "continuing the file before it";
      } else if (first_in_file && !have_record) {
        if (strcmp(r.event, EV_CONTINUED) == 0) {
          const char *from = str_member(r.root, "previous_file");
          warn(v, f, i + 1,
               errf("continues %s, which was not given: its link to that "
                    "file is not checked",
                    from ? from : "an earlier file"));
        } else if (r.seq > 1) {
          cp_json_doc_free(r.doc);
          return broken(v, p,
                        errf("the chain does not start here: no genesis "
                             "or audit.continued record, and seq is "
                             "%lld (earlier records were removed)",
                             (long long)r.seq));
        } else {
          problem = "the first record neither starts a chain (genesis) nor "
                    "continues one (audit.continued)";
        }
      } else if (memcmp(r.prev, prev_hash, 32) != 0) {
        if (first_in_file && strcmp(r.event, EV_CONTINUED) == 0 &&
            !find_hash(v, r.prev, p, &(vpos){0, 0})) {
          cp_json_doc_free(r.doc);
          return broken(v, p,
                        errf("this file does not continue %s: prev is "
                             "not the hash of its last record (a file "
                             "between them is missing, or the files "
                             "are out of order)",
                             v->files[last_rec.f].path));
        }
        int rc = diagnose(v, p, &r, last_rec, last_seq);
        cp_json_doc_free(r.doc);
        return rc;
      }
      if (problem) {
        cp_json_doc_free(r.doc);
        return broken(v, p, cp_strdup(problem));
      }
      have_record = 1;
      last_seq = r.seq;
      last_rec = p;
      prev_hash = line_hash(v, p);
      first_in_file = 0;
      rep->records[f]++;
      rep->total_records++;
      vf->lines[i].seq = r.seq;
      if (!v->first_seq) v->first_seq = r.seq;
      track_run(v, p, &r);
      cp_json_doc_free(r.doc);
    }
  }
  v->have_record = have_record;
  v->last_rec = last_rec;
  v->last_seq = last_seq;
  if (have_record) {
    rep->last_seq = (uint64_t)last_seq;
    to_hex(line_hash(v, last_rec), 32, rep->last_hash);
  }
  return 0;
}

/* ---- the end of the chain ------------------------------------------------ */

/* A record of the chain with this hash (the last one, if several). */
static int find_record(const verifier *v, const unsigned char h[32],
                       vpos *found) {
  int hit = 0;
  for (size_t f = 0; f < v->n; f++)
    for (size_t i = 0; i < v->files[f].n; i++)
      if (v->files[f].lines[i].seq &&
          memcmp(v->files[f].lines[i].hash, h, 32) == 0) {
        *found = (vpos){f, i};
        hit = 1;
      }
  return hit;
}

static int find_seq(const verifier *v, int64_t seq, vpos *found) {
  for (size_t f = 0; f < v->n; f++)
    for (size_t i = 0; i < v->files[f].n; i++)
      if (v->files[f].lines[i].seq == seq) {
        *found = (vpos){f, i};
        return 1;
      }
  return 0;
}

/* The line just after the last record, in the last file: where a record
 * that is missing from the end would be. */
static vpos after_end(const verifier *v) {
  vpos p = {v->n - 1, 0};
  if (v->have_record && v->last_rec.f == v->n - 1) p.i = v->last_rec.i + 1;
  return p;
}

/* Records of the chain after p. */
static uint64_t records_after(const verifier *v, vpos p) {
  uint64_t n = 0;
  for (vpos q = p; next_pos(v, &q);)
    if (v->files[q.f].lines[q.i].seq) n++;
  return n;
}

/* Checks that the chain reaches the record an anchor names: its end when
 * the anchor is the head file (is_head), or anywhere for an anchor from a
 * run's summary. who says where it comes from, for the messages. Returns
 * 1 when the chain is broken. */
static int check_anchor(verifier *v, const cp_audit_head *h, const char *who,
                        int is_head) {
  cp_audit_report *rep = v->rep;
  unsigned char want[32];
  hex_decode(h->hash, 64, want); /* checked by the callers */
  unsigned long long hs = (unsigned long long)h->seq;
  vpos q;
  if (find_record(v, want, &q)) {
    long long qs = (long long)v->files[q.f].lines[q.i].seq;
    if ((uint64_t)qs != h->seq)
      return broken(v, q,
                    errf("%s names this record by its hash but as record "
                         "%llu, and it is record %lld: %s was changed",
                         who, hs, qs,
                         is_head ? "the head file" : "the anchor"));
    uint64_t after = records_after(v, q);
    if (!is_head) {
      rep->anchor_file = q.f;
      rep->anchor_line = q.i + 1;
      rep->after_anchor = after;
      return 0;
    }
    if (after) {
      vpos nx = q;
      while (next_pos(v, &nx) && !v->files[nx.f].lines[nx.i].seq)
        ;
      return broken(v, nx,
                    errf("the log goes on past %s: it names record %llu "
                         "(line %zu) as the last one, but %llu more "
                         "record(s) follow: they were added without "
                         "updating it",
                         who, hs, q.i + 1, (unsigned long long)after));
    }
    if (h->records != UINT64_MAX && q.f == v->n - 1 &&
        h->records != rep->records[q.f])
      warn(v, q.f, 0,
           errf("%s says the file holds %llu records, and it holds %llu", who,
                (unsigned long long)h->records,
                (unsigned long long)rep->records[q.f]));
    return 0;
  }
  if (!v->have_record)
    return broken(v, after_end(v),
                  errf("the log has no records, but %s says it ends at "
                       "record %llu (hash %s): the file was emptied or cut",
                       who, hs, h->hash));
  if (h->seq > (uint64_t)v->last_seq)
    return broken(v, after_end(v),
                  errf("the log ends at record %lld, but %s says %llu "
                       "(hash %s): records were removed or the file was cut",
                       (long long)v->last_seq, who, hs, h->hash));
  if (find_seq(v, (int64_t)h->seq, &q))
    return broken(v, q,
                  errf("this record was changed: its hash is not the one %s "
                       "gives for record %llu (%s)",
                       who, hs, h->hash));
  if (!is_head) {
    warn(v, v->n - 1, 0,
         errf("%s names record %llu, which is not in the files given (they "
              "hold records %lld to %lld): give the older files too to "
              "check it",
              who, hs, (long long)v->first_seq, (long long)v->last_seq));
    return 0;
  }
  return broken(v, after_end(v),
                errf("%s names record %llu (hash %s), which is not in the "
                     "log: it holds records %lld to %lld",
                     who, hs, h->hash, (long long)v->first_seq,
                     (long long)v->last_seq));
}

/* Reads the head file beside the last file into the report. Returns 0
 * (also when there is none), -1 when it cannot be read, 1 when it is not
 * a head file (*why says why, malloc'd). */
static int load_head(verifier *v, const char *last, char **why) {
  cp_audit_report *rep = v->rep;
  char *path = cp_audit_head_path(last);
  char *text = NULL, *err = NULL;
  size_t len;
  if (!path) { /* cp_audit_verify sees the failure and gives no verdict */
    rep->unreadable = 1;
    return -1;
  }
  int rc = read_small(path, MAX_HEAD, &text, &len, &err);
  if (rc == 1) {
    free(path);
    return 0;
  }
  rep->head_path = path;
  if (rc < 0) {
    rep->unreadable = 1;
    note(&rep->problem, v->n - 1, 0, err);
    return -1;
  }
  char *bad = NULL;
  if (parse_head(text, len, &rep->head, &bad)) {
    memset(&rep->head, 0, sizeof rep->head);
    *why = errf("its head file %s is not valid: %s", path, bad);
    free(bad);
    rc = 1;
  }
  free(text);
  return rc;
}

/* A verification that ran out of memory has no verdict: whatever it found
 * (a line it could not parse, a hash it could not compute) may be the
 * memory, not the log. */
static int no_verdict(cp_audit_report *r) {
  free(r->problem.message);
  for (size_t i = 0; i < r->n_warnings; i++) free(r->warnings[i].message);
  free(r->warnings);
  r->warnings = NULL;
  r->n_warnings = 0;
  r->broken = 0;
  r->unreadable = 1;
  note(&r->problem, 0, 0, errf("out of memory while verifying the audit log"));
  return -1;
}

int cp_audit_verify(const char *const *paths, size_t n,
                    const cp_audit_head *anchor, cp_audit_report *report) {
  memset(report, 0, sizeof *report);
  unsigned long failures = cp_alloc_failures();
  report->records = cp_calloc(n, sizeof *report->records);
  verifier v = {0};
  v.files = cp_calloc(n, sizeof(vfile));
  v.rep = report;
  if (!report->records || !v.files) {
    free(v.files);
    return no_verdict(report);
  }
  int rc = 0;
  for (size_t f = 0; f < n; f++) {
    char *err = NULL;
    if (load_file(&v.files[f], paths[f], &err)) {
      report->unreadable = 1;
      note(&report->problem, f, 0, err);
      rc = -1;
      break;
    }
    v.n++;
  }
  char *bad_head = NULL;
  if (rc == 0 && n) rc = load_head(&v, paths[n - 1], &bad_head);
  if (rc >= 0) {
    unsigned char bin[32];
    rc = verify_chain(&v) ? 1 : 0;
    if (rc == 0 && bad_head) {
      report->broken = 1;
      note(&report->problem, n - 1, 0, bad_head);
      bad_head = NULL;
      rc = 1;
    }
    if (rc == 0 && anchor && n &&
        (anchor->seq < 1 ||
         hex_decode(anchor->hash, strlen(anchor->hash), bin))) {
      report->broken = 1;
      note(&report->problem, n - 1, 0,
           errf("the anchor given is not a record: it needs a seq from 1 "
                "and a hash of 64 lower-case hex digits"));
      rc = 1;
    }
    if (rc == 0 && n && report->head_path) {
      char *who = errf("its head file %s", report->head_path);
      rc = check_anchor(&v, &report->head, who ? who : "its head file", 1);
      free(who);
      report->end_checked = 1;
    }
    if (rc == 0 && anchor && n) {
      rc = check_anchor(&v, anchor, "the anchor given", 0);
      report->end_checked = 1;
    }
    if (rc == 0 && n && !report->end_checked)
      warn(&v, n - 1, 0,
           errf("the end of the chain was not checked: there is no head "
                "file %s.head and no anchor was given, so a removed last "
                "record or a cut file would go unnoticed",
                paths[n - 1]));
  }
  free(bad_head);
  report->interrupted = cp_calloc(v.n_runs, sizeof *report->interrupted);
  for (size_t i = 0; i < v.n_runs; i++) {
    if (report->interrupted)
      report->interrupted[i] =
          (cp_audit_run){v.runs[i].f, v.runs[i].line, v.runs[i].run_id};
    else
      free(v.runs[i].run_id);
  }
  report->n_interrupted = report->interrupted ? v.n_runs : 0;
  free(v.runs);
  for (size_t f = 0; f < v.n; f++)
    free_file(&v.files[f]);
  free(v.files);
  if (cp_alloc_failures() != failures) return no_verdict(report);
  return rc;
}

void cp_audit_report_free(cp_audit_report *r) {
  free(r->problem.message);
  for (size_t i = 0; i < r->n_warnings; i++)
    free(r->warnings[i].message);
  free(r->warnings);
  free(r->records);
  for (size_t i = 0; i < r->n_interrupted; i++)
    free(r->interrupted[i].run_id);
  free(r->interrupted);
  free(r->head_path);
  memset(r, 0, sizeof *r);
}
