/*
 * embedio.c -- reading and writing vector sets (embedio.h): JSON Lines and
 * the binary cpvec format, atomic writes for the cache, and the OpenAI
 * embeddings answer. Every length read from a file is checked against what
 * is left of it before use; nothing here trusts its input.
 */
#include "embedio.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "base64.h"
#include "buf.h"
#include "json.h"

static const char MAGIC[8] = {'C', 'P', 'V', 'E', 'C', '0', '1', '\n'};
#define NO_INTENT 0xFFFFFFFFu
#define MAX_DIM 65536

static void seterr(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *err, size_t errlen, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

/* ---- little-endian fields --------------------------------------------------
 */

static void put32(cp_buf *b, uint32_t v) {
  unsigned char x[4] = {(unsigned char)v, (unsigned char)(v >> 8),
                        (unsigned char)(v >> 16), (unsigned char)(v >> 24)};
  cp_buf_add(b, x, 4);
}

static void put64(cp_buf *b, uint64_t v) {
  put32(b, (uint32_t)v);
  put32(b, (uint32_t)(v >> 32));
}

static uint32_t get32(const unsigned char *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
         (uint32_t)p[3] << 24;
}

static uint64_t get64(const unsigned char *p) {
  return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static float f32_of(uint32_t bits) {
  float f;
  memcpy(&f, &bits, sizeof f);
  return f;
}

static uint32_t bits_of(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* ---- the binary format -----------------------------------------------------
 */

static cp_vecset *read_binary(const unsigned char *p, size_t len,
                              const char *path, char *err, size_t errlen) {
  if (len < 24) {
    seterr(err, errlen, "%s: truncated header", path);
    return NULL;
  }
  uint32_t dim = get32(p + 8), flags = get32(p + 12);
  uint64_t count = get64(p + 16);
  if (dim == 0 || dim > MAX_DIM) {
    seterr(err, errlen, "%s: bad dimension %u", path, dim);
    return NULL;
  }
  if (flags & ~1u) {
    seterr(err, errlen, "%s: unknown flags 0x%x", path, flags);
    return NULL;
  }
  /* every row takes at least 4 + 4 * dim bytes */
  if (count > (len - 24) / (4 + 4 * (uint64_t)dim)) {
    seterr(err, errlen, "%s: %llu rows cannot fit in %zu bytes", path,
           (unsigned long long)count, len);
    return NULL;
  }
  cp_vecset *s = cp_vecset_new(dim);
  float *v = cp_reallocarray(NULL, dim, sizeof *v);
  size_t at = 24;
  if (!s || !v) {
    seterr(err, errlen, "%s: out of memory", path);
    goto fail;
  }
  for (uint64_t r = 0; r < count; r++) {
    if (len - at < 4) goto truncated;
    uint32_t tl = get32(p + at);
    at += 4;
    if (len - at < tl) goto truncated;
    const char *text = (const char *)p + at;
    at += tl;
    const char *intent = NULL;
    uint32_t il = 0;
    if (flags & 1u) {
      if (len - at < 4) goto truncated;
      il = get32(p + at);
      at += 4;
      if (il != NO_INTENT) {
        if (len - at < il) goto truncated;
        intent = (const char *)p + at;
        at += il;
      }
    }
    if ((len - at) / 4 < dim) goto truncated;
    for (uint32_t k = 0; k < dim; k++)
      v[k] = f32_of(get32(p + at + 4 * k));
    at += 4 * (size_t)dim;
    const char *why;
    if (cp_vecset_add(s, v, dim, text, tl, intent, intent ? il : 0, &why) < 0) {
      if (strcmp(why, "memory") == 0)
        seterr(err, errlen, "%s: out of memory", path);
      else
        seterr(err, errlen, "%s: row %llu: vector is %s", path,
               (unsigned long long)r + 1, why);
      goto fail;
    }
  }
  if (at != len) {
    seterr(err, errlen, "%s: %zu bytes after the last row", path, len - at);
    goto fail;
  }
  free(v);
  return s;
truncated:
  seterr(err, errlen, "%s: truncated at byte %zu", path, at);
fail:
  free(v);
  cp_vecset_unref(s);
  return NULL;
}

static int mkdirs(char *dir) {
  for (char *p = dir + 1; *p; p++) {
    if (*p != '/') continue;
    *p = '\0';
    int rc = mkdir(dir, 0700);
    *p = '/';
    if (rc != 0 && errno != EEXIST) return -1;
  }
  if (mkdir(dir, 0700) != 0 && errno != EEXIST) return -1;
  return 0;
}

int cp_embedio_write(const cp_vecset *s, const char *path, char *err,
                     size_t errlen) {
  size_t n = cp_vecset_count(s), dim = cp_vecset_dim(s);
  if (dim == 0 || dim > MAX_DIM) {
    seterr(err, errlen, "%s: nothing to write (no dimension)", path);
    return -1;
  }
  int intents = 0;
  for (size_t i = 0; i < n && !intents; i++) {
    size_t il;
    intents = cp_vecset_intent(s, i, &il) != NULL;
  }
  cp_buf b = CP_BUF_INIT;
  cp_buf_add(&b, MAGIC, sizeof MAGIC);
  put32(&b, (uint32_t)dim);
  put32(&b, intents ? 1u : 0u);
  put64(&b, n);
  for (size_t i = 0; i < n; i++) {
    size_t tl, il;
    const char *t = cp_vecset_text(s, i, &tl);
    put32(&b, (uint32_t)tl);
    cp_buf_add(&b, t, tl);
    if (intents) {
      const char *in = cp_vecset_intent(s, i, &il);
      put32(&b, in ? (uint32_t)il : NO_INTENT);
      if (in) cp_buf_add(&b, in, il);
    }
    const float *row = cp_vecset_row(s, i);
    for (size_t k = 0; k < dim; k++)
      put32(&b, bits_of(row[k]));
  }

  int rc = -1, fd = -1;
  char *tmp = NULL;
  char *dir = cp_buf_ok(&b) ? cp_strdup(path) : NULL;
  if (!dir) {
    seterr(err, errlen, "%s: out of memory", path);
    goto done;
  }
  char *slash = strrchr(dir, '/');
  if (slash && slash != dir) {
    *slash = '\0';
    if (mkdirs(dir) != 0) {
      seterr(err, errlen, "%s: cannot create directory: %s", dir,
             strerror(errno));
      goto done;
    }
  } else {
    strcpy(dir, slash ? "/" : ".");
  }
  size_t tlen = strlen(path) + 16;
  tmp = cp_malloc(tlen);
  if (!tmp) {
    seterr(err, errlen, "%s: out of memory", path);
    goto done;
  }
  snprintf(tmp, tlen, "%s.tmp.XXXXXX", path);
  fd = mkstemp(tmp);
  if (fd < 0) {
    seterr(err, errlen, "%s: %s", tmp, strerror(errno));
    goto done;
  }
  for (size_t off = 0; off < b.len;) {
    ssize_t w = write(fd, b.data + off, b.len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      seterr(err, errlen, "%s: write: %s", tmp, strerror(errno));
      goto done;
    }
    off += (size_t)w;
  }
  if (fsync(fd) != 0 || close(fd) != 0) {
    fd = -1;
    seterr(err, errlen, "%s: %s", tmp, strerror(errno));
    goto done;
  }
  fd = -1;
  if (rename(tmp, path) != 0) {
    seterr(err, errlen, "%s: rename: %s", path, strerror(errno));
    goto done;
  }
  free(tmp);
  tmp = NULL;
  /* the rename itself must survive a crash too */
  int dfd = open(dir, O_RDONLY | O_DIRECTORY);
  if (dfd >= 0) {
    fsync(dfd);
    close(dfd);
  }
  rc = 0;
done:
  if (fd >= 0) close(fd);
  if (tmp) unlink(tmp);
  free(tmp);
  free(dir);
  cp_buf_free(&b);
  return rc;
}

/* ---- JSON Lines ------------------------------------------------------------
 */

/* Reads the numbers of a JSON array into *v (grown to hold them): 0, -1
 * for what is not a vector, -2 when out of memory. */
static int json_vector(const cp_json *a, double **v, size_t *cap, size_t *n) {
  if (!a || a->type != CP_JSON_ARRAY || a->u.arr.n == 0) return -1;
  if (a->u.arr.n > *cap) {
    double *grown = cp_reallocarray(*v, a->u.arr.n, sizeof **v);
    if (!grown) return -2;
    *v = grown;
    *cap = a->u.arr.n;
  }
  for (size_t k = 0; k < a->u.arr.n; k++) {
    const cp_json *x = a->u.arr.items[k];
    if (x->type == CP_JSON_INT)
      (*v)[k] = (double)x->u.i;
    else if (x->type == CP_JSON_NUMBER)
      (*v)[k] = x->u.d;
    else
      return -1;
  }
  *n = a->u.arr.n;
  return 0;
}

static cp_vecset *read_jsonl(FILE *f, const char *path, char *err,
                             size_t errlen) {
  cp_vecset *s = cp_vecset_new(0);
  char *line = NULL;
  size_t cap = 0, vcap = 0, lineno = 0;
  double *v = NULL;
  ssize_t got;
  if (!s) {
    seterr(err, errlen, "%s: out of memory", path);
    return NULL;
  }
  errno = 0;
  while ((got = getline(&line, &cap, f)) >= 0) {
    lineno++;
    size_t len = (size_t)got;
    while (len && (line[len - 1] == '\n' || line[len - 1] == '\r'))
      len--;
    size_t i = 0;
    while (i < len && (line[i] == ' ' || line[i] == '\t'))
      i++;
    if (i == len) continue;
    cp_json_error je;
    cp_json_doc *doc = cp_json_parse(line, len, &je);
    if (!doc && je.out_of_memory) {
      seterr(err, errlen, "%s:%zu: out of memory", path, lineno);
      goto fail;
    }
    if (!doc) {
      seterr(err, errlen, "%s:%zu:%d: %s", path, lineno, je.column, je.message);
      goto fail;
    }
    const cp_json *root = cp_json_root(doc);
    const cp_json *text = cp_json_get(root, "text");
    const cp_json *vec = cp_json_get(root, "vector");
    if (!vec) vec = cp_json_get(root, "embedding");
    const cp_json *intent = cp_json_get(root, "intent");
    const char *problem = NULL;
    size_t n = 0;
    int vr = 0;
    if (!root || root->type != CP_JSON_OBJECT)
      problem = "expected an object {\"text\", \"vector\"}";
    else if (!text || text->type != CP_JSON_STRING)
      problem = "\"text\" must be a string";
    else if ((vr = json_vector(vec, &v, &vcap, &n)) != 0)
      problem = vr == -2 ? "out of memory"
                         : "\"vector\" must be a non-empty array of numbers";
    else if (intent && intent->type != CP_JSON_STRING &&
             intent->type != CP_JSON_NULL)
      problem = "\"intent\" must be a string";
    if (!problem) {
      const char *why;
      int has_intent = intent && intent->type == CP_JSON_STRING;
      if (cp_vecset_add_double(s, v, n, text->u.str.s, text->u.str.len,
                               has_intent ? intent->u.str.s : NULL,
                               has_intent ? intent->u.str.len : 0, &why) < 0) {
        if (strcmp(why, "dimension") == 0) {
          seterr(err, errlen, "%s:%zu: vector has %zu values, expected %zu",
                 path, lineno, n, cp_vecset_dim(s));
          cp_json_doc_free(doc);
          goto fail;
        }
        if (strcmp(why, "memory") == 0)
          seterr(err, errlen, "%s:%zu: out of memory", path, lineno);
        else
          seterr(err, errlen, "%s:%zu: vector is %s", path, lineno, why);
        cp_json_doc_free(doc);
        goto fail;
      }
    }
    cp_json_doc_free(doc);
    if (problem) {
      seterr(err, errlen, "%s:%zu: %s", path, lineno, problem);
      goto fail;
    }
    errno = 0;
  }
  /* getline says -1 at the end, and when it cannot grow the line */
  if (errno == ENOMEM) {
    seterr(err, errlen, "%s:%zu: out of memory", path, lineno + 1);
    goto fail;
  }
  if (ferror(f)) {
    seterr(err, errlen, "%s: %s", path, strerror(errno));
    goto fail;
  }
  free(line);
  free(v);
  return s;
fail:
  free(line);
  free(v);
  cp_vecset_unref(s);
  return NULL;
}

cp_vecset *cp_embedio_read(const char *path, char *err, size_t errlen) {
  FILE *f = fopen(path, "rb");
  if (!f) {
    seterr(err, errlen, "%s: %s", path, strerror(errno));
    return NULL;
  }
  char head[8];
  size_t got = fread(head, 1, sizeof head, f);
  cp_vecset *s = NULL;
  if (got == sizeof head && memcmp(head, MAGIC, sizeof MAGIC) == 0) {
    /* binary: read it whole (it is as large as the vectors themselves) */
    if (fseek(f, 0, SEEK_END) != 0) goto io;
    long size = ftell(f);
    if (size < 0 || fseek(f, 0, SEEK_SET) != 0) goto io;
    unsigned char *p = cp_malloc((size_t)size + 1);
    if (!p) {
      seterr(err, errlen, "%s: out of memory", path);
      fclose(f);
      return NULL;
    }
    if (fread(p, 1, (size_t)size, f) != (size_t)size) {
      free(p);
      goto io;
    }
    s = read_binary(p, (size_t)size, path, err, errlen);
    free(p);
  } else {
    if (fseek(f, 0, SEEK_SET) != 0) goto io;
    s = read_jsonl(f, path, err, errlen);
  }
  fclose(f);
  return s;
io:
  seterr(err, errlen, "%s: %s", path, strerror(errno));
  fclose(f);
  return NULL;
}

/* ---- OpenAI-compatible answers ----------------------------------------------
 */

/* Decodes base64 little-endian float32s into *v. The padding may be left
 * out, as some providers do. 0, -1 for what is not one, -2 when out of
 * memory. */
static int b64_vector(const char *s, size_t len, double **v, size_t *cap,
                      size_t *n) {
  while (len && s[len - 1] == '=')
    len--;
  size_t bytes = len * 3 / 4;
  if (bytes == 0 || bytes % 4 != 0 || len % 4 == 1) return -1;
  /* Padded again for the strict decoder. */
  size_t padded = (len + 3) / 4 * 4;
  char *in = cp_malloc(padded);
  unsigned char *raw = cp_malloc(padded / 4 * 3);
  if (!in || !raw) {
    free(in);
    free(raw);
    return -2;
  }
  memcpy(in, s, len);
  memset(in + len, '=', padded - len);
  size_t got;
  int bad = cp_base64_decode(in, padded, raw, &got) != 0 || got != bytes;
  free(in);
  if (bad) {
    free(raw);
    return -1;
  }
  size_t count = bytes / 4;
  if (count > *cap) {
    double *grown = cp_reallocarray(*v, count, sizeof **v);
    if (!grown) {
      free(raw);
      return -2;
    }
    *v = grown;
    *cap = count;
  }
  for (size_t k = 0; k < count; k++)
    (*v)[k] = (double)f32_of(get32(raw + 4 * k));
  free(raw);
  *n = count;
  return 0;
}

int cp_embedio_add_response(cp_vecset *s, const char *body, size_t len,
                            const char *const *texts, const size_t *lens,
                            size_t n, char *err, size_t errlen) {
  cp_json_error je;
  cp_json_doc *doc = cp_json_parse(body, len, &je);
  if (!doc && je.out_of_memory) {
    seterr(err, errlen, "out of memory while reading an embeddings answer");
    return -1;
  }
  if (!doc) {
    seterr(err, errlen, "embeddings answer is not JSON (%s at byte %zu)",
           je.message, je.offset);
    return -1;
  }
  const cp_json *data = cp_json_get(cp_json_root(doc), "data");
  int rc = -1;
  size_t dim = cp_vecset_dim(s);
  double *all = NULL; /* n x dim, in input order */
  unsigned char *seen = cp_calloc(n, 1);
  double *v = NULL;
  size_t vcap = 0;
  if (!seen) goto nomem;
  if (!data || data->type != CP_JSON_ARRAY) {
    seterr(err, errlen, "embeddings answer has no \"data\" array");
    goto done;
  }
  if (data->u.arr.n != n) {
    seterr(err, errlen, "embeddings answer has %zu vectors for %zu inputs",
           data->u.arr.n, n);
    goto done;
  }
  for (size_t k = 0; k < n; k++) {
    const cp_json *item = data->u.arr.items[k];
    const cp_json *idx = cp_json_get(item, "index");
    const cp_json *emb = cp_json_get(item, "embedding");
    size_t i = k, got = 0;
    if (idx) {
      if (idx->type != CP_JSON_INT || idx->u.i < 0 || (uint64_t)idx->u.i >= n) {
        seterr(err, errlen,
               "embeddings answer: data[%zu].index is not an input index", k);
        goto done;
      }
      i = (size_t)idx->u.i;
    }
    if (seen[i]) {
      seterr(err, errlen, "embeddings answer: index %zu appears twice", i);
      goto done;
    }
    seen[i] = 1;
    int bad = emb && emb->type == CP_JSON_STRING
                  ? b64_vector(emb->u.str.s, emb->u.str.len, &v, &vcap, &got)
                  : json_vector(emb, &v, &vcap, &got);
    if (bad == -2) goto nomem;
    if (bad) {
      seterr(err, errlen,
             "embeddings answer: data[%zu].embedding is not a vector", k);
      goto done;
    }
    if (dim == 0) dim = got;
    if (got != dim) {
      seterr(err, errlen,
             "embeddings answer: vector of %zu values, expected %zu", got, dim);
      goto done;
    }
    double ss = 0;
    for (size_t x = 0; x < got; x++)
      ss += v[x] * v[x];
    if (!(ss > 0) || !isfinite(ss)) {
      seterr(err, errlen, "embeddings answer: the vector for input %zu is %s",
             i, isfinite(ss) ? "zero" : "not finite");
      goto done;
    }
    if (!all && !(all = cp_reallocarray(NULL, n, dim * sizeof *all))) goto nomem;
    memcpy(all + i * dim, v, dim * sizeof *v);
  }
  /* all checked: only memory can fail below, and then s is put back as it
   * was, so it changes all or nothing */
  size_t before = cp_vecset_count(s);
  for (size_t i = 0; i < n; i++) {
    const char *why;
    if (cp_vecset_add_double(s, all + i * dim, dim, texts[i], lens[i], NULL,
                             0, &why) < 0) {
      cp_vecset_truncate(s, before);
      goto nomem;
    }
  }
  rc = 0;
  goto done;
nomem:
  seterr(err, errlen, "out of memory while reading an embeddings answer");
done:
  free(all);
  free(seen);
  free(v);
  cp_json_doc_free(doc);
  return rc;
}
