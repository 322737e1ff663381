/*
 * similarity.c -- vector sets and cosine search (similarity.h). Owns the
 * vectors and the kernels; never calls into Lua and never blocks on
 * anything but its own threads. Scores are products of unit vectors in
 * float32, clamped to [-1, 1].
 *
 * Products are computed a block at a time (QB query rows x CB corpus
 * rows) into a score buffer and reduced to the best rows per query while
 * the block is still in cache, so memory stays bounded whatever the sizes.
 *
 * A build with a CBLAS (cmake/blas.cmake) computes the products with its
 * cblas_sgemm; without one, or when the address space it may need cannot
 * be had, they go through a kernel of our own, with the same results up
 * to float rounding.
 */
#include "similarity.h"
#include "clones.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <uv.h>
#include <xxhash.h>

#include "buf.h"
#include "parallel.h"

#ifdef CP_HAVE_CBLAS
#include <cblas.h>
#endif

#define QB ((size_t)512) /* query rows a block: a 1 MiB score tile */
#define CB ((size_t)512) /* corpus rows a block */
#define ROW_CHUNK 64     /* rows a parallel chunk of a Gram product */
#define FILTER_BLOCK 512 /* fresh rows resolved together in the filter */

struct cp_vecset {
  atomic_int refs;
  atomic_int readers;
  size_t dim, n, cap;
  float *rows;      /* n x dim, unit length */
  size_t *text_off; /* n + 1 offsets into texts */
  cp_buf texts;
  size_t *intent_off; /* n + 1 offsets into intents */
  unsigned char *has_intent;
  cp_buf intents;
  uint32_t *index;  /* text -> row + 1, open addressing; 0 is empty */
  uint64_t *hashes; /* of each row's text */
  size_t index_cap;
};

/* ---- sets ---------------------------------------------------------------- */

cp_vecset *cp_vecset_new(size_t dim) {
  cp_vecset *s = cp_calloc(1, sizeof *s);
  if (!s) return NULL;
  atomic_init(&s->refs, 1);
  atomic_init(&s->readers, 0);
  s->dim = dim;
  s->text_off = cp_calloc(1, sizeof *s->text_off);
  s->intent_off = cp_calloc(1, sizeof *s->intent_off);
  if (!s->text_off || !s->intent_off) {
    cp_vecset_unref(s);
    return NULL;
  }
  return s;
}

cp_vecset *cp_vecset_ref(cp_vecset *s) {
  atomic_fetch_add(&s->refs, 1);
  return s;
}

void cp_vecset_unref(cp_vecset *s) {
  if (!s || atomic_fetch_sub(&s->refs, 1) != 1) return;
  free(s->rows);
  free(s->text_off);
  cp_buf_free(&s->texts);
  free(s->intent_off);
  free(s->has_intent);
  cp_buf_free(&s->intents);
  free(s->index);
  free(s->hashes);
  free(s);
}

cp_vecset *cp_vecset_hold(cp_vecset *s) {
  atomic_fetch_add(&s->readers, 1);
  return cp_vecset_ref(s);
}

void cp_vecset_release(cp_vecset *s) {
  atomic_fetch_sub(&s->readers, 1);
  cp_vecset_unref(s);
}

int cp_vecset_busy(const cp_vecset *s) {
  return atomic_load(&((cp_vecset *)s)->readers) > 0;
}

size_t cp_vecset_count(const cp_vecset *s) { return s->n; }
size_t cp_vecset_dim(const cp_vecset *s) { return s->dim; }
const float *cp_vecset_row(const cp_vecset *s, size_t i) {
  return s->rows + i * s->dim;
}

const char *cp_vecset_text(const cp_vecset *s, size_t i, size_t *len) {
  *len = s->text_off[i + 1] - s->text_off[i];
  return s->texts.data ? s->texts.data + s->text_off[i] : "";
}

const char *cp_vecset_intent(const cp_vecset *s, size_t i, size_t *len) {
  if (!s->has_intent[i]) return NULL;
  *len = s->intent_off[i + 1] - s->intent_off[i];
  return s->intents.data + s->intent_off[i];
}

/* 0, or -1 when out of memory (the index is as it was). */
static int index_grow(cp_vecset *s) {
  size_t cap = s->index_cap ? s->index_cap * 2 : 256;
  uint32_t *t = cp_calloc(cap, sizeof *t);
  if (!t) return -1;
  for (size_t i = 0; i < s->index_cap; i++) {
    uint32_t r = s->index[i];
    if (!r) continue;
    size_t j = s->hashes[r - 1] & (cap - 1);
    while (t[j])
      j = (j + 1) & (cap - 1);
    t[j] = r;
  }
  free(s->index);
  s->index = t;
  s->index_cap = cap;
  return 0;
}

/* Room for one more row in every array: 0, or -1 when out of memory. Each
 * array that did grow is kept (it is only larger than needed), so a
 * failure leaves the rows as they were. */
static int make_room(cp_vecset *s, size_t dim, size_t tlen, size_t ilen,
                     int has_intent) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    if (dim && cap > SIZE_MAX / sizeof(float) / dim) return -1;
    float *rows = cp_realloc(s->rows, cap * dim * sizeof *rows);
    if (!rows) return -1;
    s->rows = rows;
    size_t *to = cp_reallocarray(s->text_off, cap + 1, sizeof *to);
    if (!to) return -1;
    s->text_off = to;
    size_t *io = cp_reallocarray(s->intent_off, cap + 1, sizeof *io);
    if (!io) return -1;
    s->intent_off = io;
    unsigned char *hi = cp_realloc(s->has_intent, cap);
    if (!hi) return -1;
    s->has_intent = hi;
    uint64_t *h = cp_reallocarray(s->hashes, cap, sizeof *h);
    if (!h) return -1;
    s->hashes = h;
    s->cap = cap;
  }
  if ((s->n + 2) * 2 > s->index_cap && index_grow(s)) return -1;
  /* a reserve that fails changes nothing: the buffers stay usable */
  if (cp_buf_reserve(&s->texts, tlen) ||
      (has_intent && cp_buf_reserve(&s->intents, ilen))) {
    s->texts.failed = s->intents.failed = 0;
    return -1;
  }
  return 0;
}

/* Slot of the row with this text, or of the empty slot where it would go. */
static size_t index_slot(const cp_vecset *s, uint64_t h, const char *text,
                         size_t len) {
  size_t mask = s->index_cap - 1, j = h & mask;
  while (s->index[j]) {
    size_t r = s->index[j] - 1, rl;
    const char *t = cp_vecset_text(s, r, &rl);
    if (s->hashes[r] == h && rl == len && memcmp(t, text, len) == 0) break;
    j = (j + 1) & mask;
  }
  return j;
}

long cp_vecset_find(const cp_vecset *s, const char *text, size_t len) {
  if (!s->index_cap) return -1;
  size_t j = index_slot(s, XXH3_64bits(text, len), text, len);
  return s->index[j] ? (long)s->index[j] - 1 : -1;
}

/* Scales v to unit length into the next row (unit: copies it as it is);
 * -1 for what has no direction. */
static long add_row(cp_vecset *s, const double *norm_src, const float *fsrc,
                    int unit, size_t dim, const char *text, size_t tlen,
                    const char *intent, size_t ilen, const char **why) {
  if (s->dim == 0) s->dim = dim;
  if (dim != s->dim || dim == 0) {
    *why = "dimension";
    return -1;
  }
  if (s->n >= UINT32_MAX - 1) {
    *why = "too many rows";
    return -1;
  }
  double ss = 0;
  for (size_t k = 0; k < dim; k++) {
    double x = norm_src ? norm_src[k] : (double)fsrc[k];
    if (!isfinite(x)) {
      *why = "not finite";
      return -1;
    }
    ss += x * x;
  }
  if (!(ss > 0) || !isfinite(ss)) {
    *why = "zero";
    return -1;
  }
  if (make_room(s, dim, text ? tlen : 0, ilen, intent != NULL)) {
    *why = "memory";
    return -1;
  }
  double inv = 1.0 / sqrt(ss);
  float *row = s->rows + s->n * dim;
  if (unit)
    memcpy(row, fsrc, dim * sizeof *row);
  else
    for (size_t k = 0; k < dim; k++)
      row[k] = (float)((norm_src ? norm_src[k] : (double)fsrc[k]) * inv);
  size_t r = s->n++;
  cp_buf_add(&s->texts, text ? text : "", text ? tlen : 0);
  s->text_off[r + 1] = s->texts.len;
  s->has_intent[r] = intent != NULL;
  if (intent) cp_buf_add(&s->intents, intent, ilen);
  s->intent_off[r + 1] = s->intents.len;

  size_t tl;
  const char *t = cp_vecset_text(s, r, &tl);
  s->hashes[r] = XXH3_64bits(t, tl);
  size_t j = index_slot(s, s->hashes[r], t, tl);
  if (!s->index[j]) s->index[j] = (uint32_t)r + 1; /* the first row keeps it */
  return (long)r;
}

void cp_vecset_truncate(cp_vecset *s, size_t n) {
  if (n >= s->n) return;
  s->n = n;
  s->texts.len = s->text_off[n];
  s->intents.len = s->intent_off[n];
  /* the index is built again from the rows left: no memory needed */
  if (s->index_cap) memset(s->index, 0, s->index_cap * sizeof *s->index);
  for (size_t r = 0; r < n; r++) {
    size_t tl;
    const char *t = cp_vecset_text(s, r, &tl);
    size_t j = index_slot(s, s->hashes[r], t, tl);
    if (!s->index[j]) s->index[j] = (uint32_t)r + 1;
  }
}

long cp_vecset_add(cp_vecset *s, const float *v, size_t dim, const char *text,
                   size_t tlen, const char *intent, size_t ilen,
                   const char **why) {
  return add_row(s, NULL, v, 0, dim, text, tlen, intent, ilen, why);
}

long cp_vecset_add_from(cp_vecset *dst, const cp_vecset *src, size_t i,
                        const char *intent, size_t ilen) {
  size_t tl;
  const char *t = cp_vecset_text(src, i, &tl);
  if (!intent) intent = cp_vecset_intent(src, i, &ilen);
  const char *why = NULL;
  long r = add_row(dst, NULL, cp_vecset_row(src, i), 1, src->dim, t, tl, intent,
                   ilen, &why);
  return r < 0 && why && strcmp(why, "memory") == 0 ? -2 : r;
}

long cp_vecset_add_double(cp_vecset *s, const double *v, size_t dim,
                          const char *text, size_t tlen, const char *intent,
                          size_t ilen, const char **why) {
  return add_row(s, v, NULL, 0, dim, text, tlen, intent, ilen, why);
}

/* ---- products ------------------------------------------------------------ */

/* Threading is ours: the work is cut into blocks and each thread calls a
 * single-threaded product on its own blocks, reducing each one while it is
 * still in cache. (Letting the BLAS thread each call instead leaves the
 * cores idle between the call and the reduction.) OpenBLAS is held to one
 * thread meanwhile; a process-wide lock keeps two runtimes from changing
 * that setting under each other. Its thread-count functions are weak
 * references: the CBLAS linked may be OpenBLAS, or (Debian's alternatives
 * choose at run time) another that lacks them. */
#ifdef CP_HAVE_CBLAS
#pragma weak openblas_get_num_threads
#pragma weak openblas_set_num_threads
int openblas_get_num_threads(void);
void openblas_set_num_threads(int num_threads);

/* Set once by blas_init: whether products go through cblas_sgemm, and
 * whether OpenBLAS's thread count is there to hold. */
static int use_blas, hold_threads;
#endif
static const char *backend = "builtin";

static uv_once_t blas_once = UV_ONCE_INIT;
static uv_mutex_t blas_lock;

#ifdef CP_HAVE_CBLAS
/* OpenBLAS's first product on a thread takes a buffer of its own, and a
 * product crashes on a buffer it could not get. So cblas_sgemm is used
 * only when the address space it may take -- a buffer and a malloc arena
 * a thread, and its own tables -- can be had (reserved and given back at
 * once); otherwise the built-in kernel, slower but always right, does the
 * products. */
#define BLAS_PER_THREAD ((size_t)128 << 20)
#define BLAS_BASE ((size_t)256 << 20)
static int blas_room(void) {
  long n = (long)uv_available_parallelism();
  if (openblas_get_num_threads) {
    int t = openblas_get_num_threads();
    if (t > n) n = t;
  }
  if (n > 1024) n = 1024;
  size_t bytes = (size_t)(n + 1) * BLAS_PER_THREAD + BLAS_BASE;
  void *p = mmap(NULL, bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                 -1, 0);
  if (p == MAP_FAILED) return 0;
  munmap(p, bytes);
  return 1;
}
#endif

static void blas_init(void) {
  uv_mutex_init(&blas_lock);
#ifdef CP_HAVE_CBLAS
  if (!blas_room()) return;
  use_blas = 1;
  backend = "blas";
  /* Both or neither: the count is only changed where it can be restored. */
  if (openblas_get_num_threads && openblas_set_num_threads) {
    hold_threads = 1;
    backend = "openblas";
  }
#endif
}

typedef struct blas_section {
  int saved;
} blas_section;

/* Every product runs inside a section, so the first one decides. */
static void blas_begin(blas_section *b) {
  uv_once(&blas_once, blas_init);
  uv_mutex_lock(&blas_lock);
  b->saved = 0;
#ifdef CP_HAVE_CBLAS
  if (hold_threads) {
    b->saved = openblas_get_num_threads();
    openblas_set_num_threads(1);
  }
#endif
}

static void blas_end(blas_section *b) {
#ifdef CP_HAVE_CBLAS
  if (hold_threads) openblas_set_num_threads(b->saved);
#endif
  (void)b;
  uv_mutex_unlock(&blas_lock);
}

const char *cp_sim_backend(void) {
  uv_once(&blas_once, blas_init);
  return backend;
}

/* S[i][j] = q_i . c_j for 4 query rows at a time, each corpus row loaded
 * once for the 4; 8 independent lanes per product let the compiler keep
 * them in vector registers without reassociating a float sum. */
CP_CLONES
static void dot_rows(const float *Q, size_t bq, const float *C, size_t bc,
                     size_t d, float *S, size_t lds) {
  size_t d8 = d & ~(size_t)7;
  for (size_t i = 0; i < bq; i += 4) {
    size_t ni = bq - i < 4 ? bq - i : 4;
    const float *q[4];
    for (size_t r = 0; r < 4; r++)
      q[r] = Q + (i + (r < ni ? r : 0)) * d;
    for (size_t j = 0; j < bc; j++) {
      const float *c = C + j * d;
      float acc[4][8] = {{0}};
      for (size_t k = 0; k < d8; k += 8)
        for (size_t r = 0; r < 4; r++)
          for (size_t l = 0; l < 8; l++)
            acc[r][l] += q[r][k + l] * c[k + l];
      for (size_t r = 0; r < ni; r++) {
        float sum = 0;
        for (size_t l = 0; l < 8; l++)
          sum += acc[r][l];
        for (size_t k = d8; k < d; k++)
          sum += q[r][k] * c[k];
        S[(i + r) * lds + j] = sum;
      }
    }
  }
}

/* S[na x nb] = A B^T on the calling thread, inside a blas section. */
static void product1(const float *A, size_t na, const float *B, size_t nb,
                     size_t d, float *S) {
#ifdef CP_HAVE_CBLAS
  if (use_blas) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)na, (int)nb,
                (int)d, 1.0f, A, (int)d, B, (int)d, 0.0f, S, (int)nb);
    return;
  }
#endif
  dot_rows(A, na, B, nb, d, S, nb);
}

/* The largest value of s[0..n) and its first index. The maximum is taken
 * over 16 independent lanes so that it vectorises; the index is then found
 * by a scan that stops at the first match. */
static size_t argmax(const float *s, size_t n, float *best) {
  float lane[16];
  size_t n16 = n & ~(size_t)15, c = 0;
  for (size_t l = 0; l < 16; l++)
    lane[l] = -INFINITY;
  for (; c < n16; c += 16)
    for (size_t l = 0; l < 16; l++)
      lane[l] = s[c + l] > lane[l] ? s[c + l] : lane[l];
  float m = -INFINITY;
  for (size_t l = 0; l < 16; l++)
    m = lane[l] > m ? lane[l] : m;
  for (; c < n; c++)
    m = s[c] > m ? s[c] : m;
  size_t i = 0;
  while (i < n && s[i] != m)
    i++;
  *best = m;
  return i < n ? i : 0;
}

/* Whether hit x goes before y: higher score, then lower row; no hit last. */
static int before(cp_sim_hit x, cp_sim_hit y) {
  if (x.row < 0) return 0;
  if (y.row < 0) return 1;
  return x.score > y.score || (x.score == y.score && x.row < y.row);
}

/* Offers a hit to the sorted best-k list of one query row. */
static void offer(cp_sim_hit *hits, size_t k, cp_sim_hit x) {
  if (!before(x, hits[k - 1])) return;
  size_t at = k - 1;
  while (at > 0 && before(x, hits[at - 1])) {
    hits[at] = hits[at - 1];
    at--;
  }
  hits[at] = x;
}

typedef struct scan_job {
  const float *Q, *C;
  size_t nq, nc, d, k;
  size_t qblocks;    /* tasks are (query block, corpus block) pairs */
  float **S;         /* per worker, QB x CB */
  cp_sim_hit **hits; /* per worker, nq x k */
  atomic_int failed; /* a worker's memory could not be had */
} scan_job;

static void scan_task(void *ctx, size_t task, int w) {
  scan_job *j = ctx;
  size_t q0 = (task % j->qblocks) * QB, c0 = (task / j->qblocks) * CB;
  size_t bq = j->nq - q0 < QB ? j->nq - q0 : QB;
  size_t bc = j->nc - c0 < CB ? j->nc - c0 : CB;
  if (atomic_load(&j->failed)) return;
  if (!j->S[w]) {
    j->S[w] = cp_malloc(QB * CB * sizeof(float));
    j->hits[w] = cp_reallocarray(NULL, j->nq * j->k, sizeof(cp_sim_hit));
    if (!j->S[w] || !j->hits[w]) {
      free(j->S[w]);
      free(j->hits[w]);
      j->S[w] = NULL;
      j->hits[w] = NULL;
      atomic_store(&j->failed, 1);
      return;
    }
    for (size_t i = 0; i < j->nq * j->k; i++)
      j->hits[w][i] = (cp_sim_hit){-1, 0};
  }
  float *S = j->S[w];
  product1(j->Q + q0 * j->d, bq, j->C + c0 * j->d, bc, j->d, S);
  for (size_t i = 0; i < bq; i++) {
    const float *s = S + i * bc;
    cp_sim_hit *h = j->hits[w] + (q0 + i) * j->k;
    if (j->k == 1) {
      float bs;
      size_t c = argmax(s, bc, &bs);
      offer(h, 1, (cp_sim_hit){(long)(c0 + c), bs});
    } else {
      for (size_t c = 0; c < bc; c++)
        offer(h, j->k, (cp_sim_hit){(long)(c0 + c), s[c]});
    }
  }
}

/* Merges into hits[nq x k] the best k rows of C[nc x d] for each row of
 * Q[nq x d] (C's rows numbered from 0). 0, or -1 when out of memory. */
static int scan(const float *Q, size_t nq, const float *C, size_t nc, size_t d,
                size_t k, cp_sim_hit *hits, int threads) {
  if (nq == 0 || nc == 0) return 0;
  size_t qblocks = (nq + QB - 1) / QB, cblocks = (nc + CB - 1) / CB;
  size_t tasks = qblocks * cblocks;
  if ((size_t)threads > tasks) threads = (int)tasks;
  if (threads < 1) threads = 1;
  scan_job j = {Q,
                C,
                nq,
                nc,
                d,
                k,
                qblocks,
                cp_calloc((size_t)threads, sizeof(float *)),
                cp_calloc((size_t)threads, sizeof(cp_sim_hit *)),
                0};
  if (!j.S || !j.hits) {
    free(j.S);
    free(j.hits);
    return -1;
  }
  blas_section b;
  blas_begin(&b);
  cp_parallel_run(threads, tasks, scan_task, &j);
  blas_end(&b);
  int failed = atomic_load(&j.failed);
  for (int w = 0; w < threads; w++) {
    if (!j.S[w]) continue;
    for (size_t i = 0; i < nq && !failed; i++)
      for (size_t x = 0; x < k; x++)
        offer(hits + i * k, k, j.hits[w][i * k + x]);
    free(j.S[w]);
    free(j.hits[w]);
  }
  free(j.S);
  free(j.hits);
  return failed ? -1 : 0;
}

typedef struct product_job {
  const float *A, *B;
  size_t na, nb, d;
  float *S;
} product_job;

static void product_chunk(void *ctx, size_t chunk, int w) {
  (void)w;
  product_job *j = ctx;
  size_t i0 = chunk * ROW_CHUNK,
         i1 = i0 + ROW_CHUNK < j->na ? i0 + ROW_CHUNK : j->na;
  product1(j->A + i0 * j->d, i1 - i0, j->B, j->nb, j->d, j->S + i0 * j->nb);
}

/* S[na x nb] = A B^T, rows shared out over the threads. */
static void product(const float *A, size_t na, const float *B, size_t nb,
                    size_t d, float *S, int threads) {
  product_job j = {A, B, na, nb, d, S};
  blas_section b;
  blas_begin(&b);
  cp_parallel_run(na * nb >= 65536 ? threads : 1,
                  (na + ROW_CHUNK - 1) / ROW_CHUNK, product_chunk, &j);
  blas_end(&b);
}

static float clamp(float x) {
  return x > 1.0f ? 1.0f : (x < -1.0f ? -1.0f : x);
}

int cp_sim_topk(const cp_vecset *q, const cp_vecset *c, size_t k,
                cp_sim_hit *out, int threads) {
  if (threads <= 0) threads = cp_parallel_threads();
  for (size_t i = 0; i < q->n * k; i++)
    out[i] = (cp_sim_hit){-1, 0};
  if (k == 0 || c->n == 0 || q->n == 0 || q->dim != c->dim) return 0;
  if (scan(q->rows, q->n, c->rows, c->n, q->dim, k, out, threads)) return -1;
  for (size_t i = 0; i < q->n * k; i++)
    out[i].score = out[i].row >= 0 ? clamp(out[i].score) : 0.0f;
  return 0;
}

/* ---- the in-run filter --------------------------------------------------- */

int cp_sim_filter(const cp_vecset *existing, const cp_vecset *fresh,
                  double threshold, cp_sim_verdict *out, int threads) {
  if (threads <= 0) threads = cp_parallel_threads();
  size_t n = fresh->n, d = fresh->dim;
  if (n == 0) return 0;
  size_t fb = n < FILTER_BLOCK ? n : FILTER_BLOCK;
  int rc = -1;
  cp_sim_hit *hx = cp_reallocarray(NULL, n, sizeof *hx);
  float *acc = d ? cp_reallocarray(NULL, n, d * sizeof *acc) : NULL; /* accepted rows, packed */
  long *acc_row = cp_reallocarray(NULL, n, sizeof *acc_row);
  cp_sim_hit *ha = cp_reallocarray(NULL, fb, sizeof *ha);
  float *G = cp_reallocarray(NULL, fb * fb, sizeof *G);
  size_t *in_block = cp_reallocarray(NULL, fb, sizeof *in_block); /* accepted here */
  if (!hx || (d && !acc) || !acc_row || !ha || !G || !in_block) goto done;
  /* 1. every fresh row against the existing corpus, in one pass */
  for (size_t i = 0; i < n; i++)
    hx[i] = (cp_sim_hit){-1, 0};
  if (existing && existing->n && existing->dim == d &&
      scan(fresh->rows, n, existing->rows, existing->n, d, 1, hx, threads))
    goto done;

  /* 2. in order, a block at a time: against the rows accepted in earlier
   * blocks (a product), then inside the block through its Gram matrix,
   * resolved row by row since each decision depends on the ones before. */
  size_t n_acc = 0;
  for (size_t s = 0; s < n; s += FILTER_BLOCK) {
    size_t bn = n - s < FILTER_BLOCK ? n - s : FILTER_BLOCK;
    const float *B = fresh->rows + s * d;
    for (size_t i = 0; i < bn; i++)
      ha[i] = (cp_sim_hit){-1, 0};
    if (scan(B, bn, acc, n_acc, d, 1, ha, threads)) goto done;
    product(B, bn, B, bn, d, G, threads);
    size_t nb = 0;
    for (size_t i = 0; i < bn; i++) {
      cp_sim_verdict v = {0, 0, hx[s + i].row, hx[s + i].score};
      if (ha[i].row >= 0 && (v.row < 0 || ha[i].score > v.score)) {
        v.from_new = 1;
        v.row = acc_row[ha[i].row];
        v.score = ha[i].score;
      }
      const float *g = G + i * bn;
      for (size_t a = 0; a < nb; a++)
        if (v.row < 0 || g[in_block[a]] > v.score) {
          v.from_new = 1;
          v.row = (long)(s + in_block[a]);
          v.score = g[in_block[a]];
        }
      v.score = v.row >= 0 ? clamp(v.score) : 0.0f;
      v.accepted = v.row < 0 || (double)v.score < threshold;
      out[s + i] = v;
      if (v.accepted) in_block[nb++] = i;
    }
    for (size_t a = 0; a < nb; a++) {
      memcpy(acc + n_acc * d, B + in_block[a] * d, d * sizeof *acc);
      acc_row[n_acc++] = (long)(s + in_block[a]);
    }
  }
  rc = 0;
done:
  free(hx);
  free(acc);
  free(acc_row);
  free(ha);
  free(G);
  free(in_block);
  return rc;
}
