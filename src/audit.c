/*
 * audit.c -- the audit log writer and verifier (see audit.h for the record
 * format). Owns the log's file descriptor, its chain state and rotation;
 * never redacts, never calls into Lua, never writes a partial line on
 * purpose.
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

#include "buf.h"
#include "crypto_load.h"
#include "json.h"

#define ZERO_HASH                                                              \
  "0000000000000000000000000000000000000000000000000000000000000000"
#define MAX_LINE ((uint64_t)64 << 20)
#define EV_CONTINUED "audit.continued"
#define EV_RECOVERED "audit.recovered"

struct cp_audit {
  char *path; /* owned */
  int fd;
  cp_audit_options o;
  dev_t dev;
  ino_t ino;
  uint64_t size;  /* the file's size as of our last look; UINT64_MAX: unknown */
  int have_chain; /* a record exists to chain from */
  char prev[65];  /* hash of the line the next record chains from */
  uint64_t seq;   /* seq of the last record */
  /* A tail cut short by a crash, found when reading the file: closed and
   * accounted for by the next append. */
  int torn;
  uint64_t torn_bytes;
  char resumes[65]; /* hash of the last whole record before it */
  char *from_file;  /* the file an empty new one continues; NULL: unknown */
  int dirty, dir_dirty;
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

/* Loads libcrypto (crypto_load.h) for an entry point: opening a log,
 * verifying files, hashing on request. Returns -1 with *err set (malloc'd)
 * when it cannot be loaded; the static functions below an entry point use
 * cp_crypto without asking again. */
static int need_crypto(char **err) {
  char why[300];
  if (cp_crypto_load(why, sizeof why) == 0) return 0;
  set_err(err, errf("%s", why));
  return -1;
}

static void sha256(const void *data, size_t len, unsigned char md[32]) {
  unsigned int mdlen = 32;
  cp_crypto.EVP_Digest(data, len, md, &mdlen, cp_crypto.EVP_sha256(), NULL);
}

static void sha256_hex(const void *data, size_t len, char hex[65]) {
  unsigned char md[32];
  sha256(data, len, md);
  to_hex(md, 32, hex);
}

int cp_audit_sha256_hex(const void *data, size_t len, char hex[65],
                        char **err) {
  if (err) *err = NULL;
  if (need_crypto(err)) return -1;
  sha256_hex(data, len, hex);
  return 0;
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
  if (cp_crypto_load(NULL, 0) || cp_crypto.RAND_bytes(b, sizeof b) != 1) {
    /* no libcrypto or no entropy source: the clock and the pid still tell
     * runs apart */
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

/* The directory part of path ("." when there is none); caller frees. */
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
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int r = fsync(fd);
  close(fd);
  return r;
}

/* ---- reading the end of the file
 * ------------------------------------------------ */

/* Offset of the last '\n' in [0, pos), or -1. */
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

static int hash_range(int fd, int64_t start, int64_t len, char hex[65]) {
  EVP_MD_CTX *ctx = cp_crypto.EVP_MD_CTX_new();
  cp_crypto.EVP_DigestInit_ex(ctx, cp_crypto.EVP_sha256(), NULL);
  char buf[65536];
  int rc = 0;
  while (len > 0) {
    size_t n = len < (int64_t)sizeof buf ? (size_t)len : sizeof buf;
    if (pread(fd, buf, n, (off_t)start) != (ssize_t)n) {
      rc = -1;
      break;
    }
    cp_crypto.EVP_DigestUpdate(ctx, buf, n);
    start += (int64_t)n;
    len -= (int64_t)n;
  }
  unsigned char md[32];
  unsigned int mdlen = 32;
  cp_crypto.EVP_DigestFinal_ex(ctx, md, &mdlen);
  cp_crypto.EVP_MD_CTX_free(ctx);
  to_hex(md, 32, hex);
  return rc;
}

int cp_audit_sha256_file(const char *path, char hex[65], char **err) {
  if (need_crypto(err)) return -1;
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

/* Reads the chain state from the end of the file: the last record's hash
 * and seq, and a tail cut short by a crash. */
static int read_tail(cp_audit *a, uint64_t size, char **err) {
  a->torn = 0;
  a->size = size;
  if (size == 0) return 0; /* empty: keep the chain we carry, if any */
  int64_t end = (int64_t)size;
  int64_t nl = find_nl_before(a->fd, end);
  if (nl == -2) goto io_error;
  int64_t line_end = nl; /* the '\n' that ends the last whole line */
  if (nl != end - 1) {
    a->torn = 1;
    a->torn_bytes = (uint64_t)(end - nl - 1);
    if (hash_range(a->fd, nl + 1, end - nl - 1, a->prev)) goto io_error;
  }
  if (line_end < 0) { /* nothing but the cut line */
    a->have_chain = 0;
    a->seq = 0;
    strcpy(a->resumes, ZERO_HASH);
    return 0;
  }
  int64_t start = find_nl_before(a->fd, line_end);
  if (start == -2) goto io_error;
  start++;
  uint64_t len = (uint64_t)(line_end - start);
  if (len > MAX_LINE) {
    set_err(err, errf("%s: the last line is longer than %llu bytes; it is "
                      "not an audit record",
                      a->path, (unsigned long long)MAX_LINE));
    return -1;
  }
  char *line = cp_malloc(len + 1);
  if (pread(a->fd, line, len, (off_t)start) != (ssize_t)len) {
    free(line);
    goto io_error;
  }
  char hash[65];
  sha256_hex(line, len, hash);
  cp_json_error jerr;
  cp_json_doc *doc = cp_json_parse(line, len, &jerr);
  free(line);
  const cp_json *seq = doc ? cp_json_get(cp_json_root(doc), "seq") : NULL;
  const cp_json *prev = doc ? cp_json_get(cp_json_root(doc), "prev") : NULL;
  if (!seq || seq->type != CP_JSON_INT || seq->u.i < 1 || !prev ||
      prev->type != CP_JSON_STRING) {
    cp_json_doc_free(doc);
    set_err(err, errf("%s: the last record (at byte %lld) is not a cogpipe "
                      "audit record; check the file with `cogpipe audit "
                      "verify` and move it aside",
                      a->path, (long long)start));
    return -1;
  }
  a->seq = (uint64_t)seq->u.i;
  cp_json_doc_free(doc);
  a->have_chain = 1;
  if (a->torn)
    memcpy(a->resumes, hash, sizeof hash);
  else
    memcpy(a->prev, hash, sizeof hash);
  return 0;
io_error:
  set_err(err, errf("%s: cannot read the end of the log: %s", a->path,
                    strerror(errno)));
  return -1;
}

/* ---- opening, locking, rotating
 * ---------------------------------------------- */

static int open_log(cp_audit *a, char **err) {
  int fd =
      open(a->path, O_RDWR | O_APPEND | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd >= 0)
    a->dir_dirty = 1; /* a new directory entry to make durable */
  else if (errno == EEXIST)
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
 * may have been appended to by another process, or rotated by one. */
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
        read_tail(a, (uint64_t)fs.st_size, err)) {
      flock(a->fd, LOCK_UN);
      return -1;
    }
    return 0;
  }
}

/* The next free PATH.NNNNNN. Caller frees. */
static char *rotated_name(const char *path) {
  char *dir = dir_of(path);
  const char *base = base_of(path);
  size_t bl = strlen(base);
  unsigned long long max = 0;
  DIR *d = opendir(dir);
  if (d) {
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
  cp_buf b = CP_BUF_INIT;
  cp_buf_printf(&b, "%s.%06llu", path, max + 1);
  return cp_buf_steal(&b, NULL);
}

/* Called with the lock held: moves the full file aside and starts a new
 * one, locked, whose first record will continue the chain. */
static int rotate(cp_audit *a, char **err) {
  if (a->o.fsync != CP_AUDIT_FSYNC_OFF && fsync(a->fd) != 0) {
    set_err(err,
            errf("cannot sync audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  char *to = rotated_name(a->path);
  if (rename(a->path, to) != 0) {
    set_err(err,
            errf("cannot rotate audit log %s: %s", a->path, strerror(errno)));
    free(to);
    return -1;
  }
  int old = a->fd;
  if (open_log(a, err)) {
    a->fd = old; /* still locked; the caller unlocks it */
    free(to);
    return -1;
  }
  flock(a->fd, LOCK_EX);
  flock(old, LOCK_UN);
  close(old);
  free(a->from_file);
  a->from_file = cp_strdup(base_of(to));
  free(to);
  a->dir_dirty = 1;
  if (a->o.fsync != CP_AUDIT_FSYNC_OFF && fsync_dir(a->path) == 0)
    a->dir_dirty = 0;
  struct stat st;
  fstat(a->fd, &st);
  return read_tail(a, (uint64_t)st.st_size, err);
}

cp_audit *cp_audit_open(const char *path, const cp_audit_options *o,
                        char **err) {
  if (need_crypto(err)) return NULL;
  cp_audit *a = cp_calloc(1, sizeof *a); /* the caller owns it */
  a->path = cp_strdup(path);
  a->fd = -1;
  if (o) a->o = *o;
  strcpy(a->prev, ZERO_HASH);
  if (open_log(a, err) || lock_log(a, err)) {
    if (a->fd >= 0) close(a->fd);
    free(a->path);
    free(a);
    return NULL;
  }
  flock(a->fd, LOCK_UN);
  return a;
}

/* ---- writing
 * ----------------------------------------------------------------------- */

static int add_text(cp_buf *b, const char *s) {
  if (!s) {
    cp_buf_adds(b, "null");
    return 0;
  }
  return cp_json_add_string(b, s, strlen(s));
}

/* Appends one line (with its newline) to b and returns the hash of its
 * bytes in hash; -1 when a text is not UTF-8. */
static int add_line(cp_buf *b, const cp_audit_record *r, const char *event,
                    uint64_t seq, const char *extra, size_t extra_len,
                    int genesis, const char *prev, char hash[65]) {
  size_t start = b->len;
  char ts[32];
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
  sha256_hex(b->data + start, b->len - start, hash);
  cp_buf_addc(b, '\n');
  return 0;
}

static int write_all(int fd, const char *p, size_t n) {
  while (n > 0) {
    ssize_t w = write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* Makes what was written durable: the data, and the directory entry of a
 * file this process created. */
static int sync_log(cp_audit *a, char **err) {
  if (fdatasync(a->fd) != 0) {
    set_err(err,
            errf("cannot sync audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  a->dirty = 0;
  if (a->dir_dirty && fsync_dir(a->path) == 0) a->dir_dirty = 0;
  return 0;
}

/* Writes b in one write(2) (looping only if the kernel takes less) and
 * moves the chain forward on success. */
static int commit(cp_audit *a, cp_buf *b, const char *hash, uint64_t seq,
                  char **err) {
  if (write_all(a->fd, b->data, b->len) != 0) {
    set_err(err,
            errf("cannot write audit log %s: %s", a->path, strerror(errno)));
    a->size = UINT64_MAX; /* what reached the file is read back next time */
    return -1;
  }
  a->size += b->len;
  memcpy(a->prev, hash, 65);
  a->seq = seq;
  a->have_chain = 1;
  a->torn = 0;
  a->dirty = 1;
  if (a->o.fsync == CP_AUDIT_FSYNC_ALWAYS) return sync_log(a, err);
  return 0;
}

static int append_locked(cp_audit *a, const cp_audit_record *r, char **err) {
  cp_buf b = CP_BUF_INIT;
  char hash[65];
  int rc = -1;
  if (a->torn) {
    /* close the cut line, then account for it */
    cp_buf_addc(&b, '\n');
    cp_buf x = CP_BUF_INIT;
    cp_buf_printf(&x, "\"resumes\":\"%s\",\"torn_bytes\":%llu",
                  a->have_chain ? a->resumes : ZERO_HASH,
                  (unsigned long long)a->torn_bytes);
    int bad = add_line(&b, r, EV_RECOVERED, a->seq + 1, x.data, x.len, 0,
                       a->prev, hash);
    cp_buf_free(&x);
    if (bad || commit(a, &b, hash, a->seq + 1, err)) goto text_or_io;
    cp_buf_reset(&b);
  }
  /* the record alone first, to know its size (rotation is by size) */
  cp_buf rec = CP_BUF_INIT;
  if (add_line(&rec, r, r->event, a->seq + 1, r->fields, r->fields_len,
               !a->have_chain, a->have_chain ? a->prev : ZERO_HASH, hash)) {
    cp_buf_free(&rec);
    goto text_or_io;
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
    int bad = add_text(&x, a->from_file);
    bad = bad ||
          add_line(&b, r, EV_CONTINUED, ++seq, x.data, x.len, 0, prev, hash);
    cp_buf_free(&x);
    if (bad) goto text_or_io;
    memcpy(prev, hash, 65);
  }
  if (add_line(&b, r, r->event, ++seq, r->fields, r->fields_len, !a->have_chain,
               prev, hash))
    goto text_or_io;
  rc = commit(a, &b, hash, seq, err);
  goto done;
text_or_io:
  if (err && !*err)
    set_err(err, errf("audit record for event '%s' has text that is not "
                      "valid UTF-8",
                      r->event ? r->event : "?"));
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
  if (lock_log(a, err)) return -1;
  int rc = append_locked(a, r, err);
  flock(a->fd, LOCK_UN);
  return rc;
}

int cp_audit_sync_fd(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (a->o.fsync == CP_AUDIT_FSYNC_OFF || !a->dirty) return -1;
  if (a->dir_dirty && fsync_dir(a->path) == 0) a->dir_dirty = 0;
  int fd = fcntl(a->fd, F_DUPFD_CLOEXEC, 0);
  if (fd < 0) {
    set_err(err,
            errf("cannot sync audit log %s: %s", a->path, strerror(errno)));
    return -1;
  }
  a->dirty = 0;
  return fd;
}

int cp_audit_sync(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (a->o.fsync == CP_AUDIT_FSYNC_OFF || !a->dirty) return 0;
  return sync_log(a, err);
}

int cp_audit_close(cp_audit *a, char **err) {
  if (err) *err = NULL;
  if (!a) return 0;
  int rc = cp_audit_sync(a, err);
  if (a->fd >= 0 && close(a->fd) != 0 && rc == 0) {
    set_err(err,
            errf("cannot close audit log %s: %s", a->path, strerror(errno)));
    rc = -1;
  }
  free(a->from_file);
  free(a->path);
  free(a);
  return rc;
}

uint64_t cp_audit_seq(const cp_audit *a) { return a->seq; }
const char *cp_audit_path(const cp_audit *a) { return a->path; }
void cp_audit_last_hash(const cp_audit *a, char hex[65]) {
  memcpy(hex, a->have_chain ? a->prev : "", a->have_chain ? 65 : 1);
}

/* ---- verification
 * ------------------------------------------------------------------ */

typedef struct vline {
  size_t start, len;
  unsigned char hash[32];
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

typedef struct verifier {
  vfile *files;
  size_t n;
  cp_audit_report *rep;
} verifier;

static void note(cp_audit_note *nt, size_t f, uint64_t line, char *msg) {
  nt->file = f;
  nt->line = line;
  nt->message = msg;
}

static void warn(verifier *v, size_t f, uint64_t line, char *msg) {
  cp_audit_report *r = v->rep;
  r->warnings =
      cp_realloc(r->warnings, (r->n_warnings + 1) * sizeof *r->warnings);
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
      *err = errf("cannot read %s: %s", path, strerror(errno));
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
      cap = cap ? cap * 2 : 256;
      vf->lines = cp_realloc(vf->lines, cap * sizeof *vf->lines);
    }
    vline *l = &vf->lines[vf->n++];
    l->start = pos;
    l->len = end - pos;
    sha256(vf->data + pos, l->len, l->hash);
    pos = nl ? end + 1 : end;
  }
  vf->trailing_nl = vf->size == 0 || vf->data[vf->size - 1] == '\n';
  return 0;
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

/* Is line p an audit.recovered record chaining from the (cut) line before? */
static int recovers(const verifier *v, vpos cut, vpos p) {
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
      vrec r;
      char *why = NULL;
      int bad = parse_record(v, p, &r, &why);
      if (bad == 1) {
        vpos nx = p;
        if (i + 1 == vf->n && !vf->trailing_nl) {
          free(why);
          warn(v, f, i + 1,
               errf("incomplete last line (%zu bytes, no newline): a write "
                    "cut short, probably by a crash; not part of the chain",
                    vf->lines[i].len));
          break;
        }
        if (i + 1 < vf->n && next_pos(v, &nx) && recovers(v, p, nx)) {
          free(why);
          warn(v, f, i + 1,
               errf("a line cut short by a crash (%zu bytes), accounted for "
                    "by the audit.recovered record after it",
                    vf->lines[i].len));
          prev_hash = line_hash(v, p);
          after_cut = 1;
          continue;
        }
      }
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
      cp_json_doc_free(r.doc);
    }
  }
  if (have_record) {
    rep->last_seq = (uint64_t)last_seq;
    to_hex(line_hash(v, last_rec), 32, rep->last_hash);
  }
  return 0;
}

int cp_audit_verify(const char *const *paths, size_t n,
                    cp_audit_report *report) {
  memset(report, 0, sizeof *report);
  report->records = cp_calloc(n ? n : 1, sizeof *report->records);
  if (need_crypto(&report->problem.message)) return -1;
  verifier v = {cp_calloc(n ? n : 1, sizeof(vfile)), 0, report};
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
  if (rc == 0) rc = verify_chain(&v) ? 1 : 0;
  for (size_t f = 0; f < v.n; f++)
    free_file(&v.files[f]);
  free(v.files);
  return rc;
}

void cp_audit_report_free(cp_audit_report *r) {
  free(r->problem.message);
  for (size_t i = 0; i < r->n_warnings; i++)
    free(r->warnings[i].message);
  free(r->warnings);
  free(r->records);
  memset(r, 0, sizeof *r);
}
