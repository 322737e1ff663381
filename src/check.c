/*
 * check.c -- the whole-file check behind `cogpipe check` (cp_check_*, see
 * dedupe.h): it scans records, probes the table, confirms each repeat by
 * its bytes and counts duplicates and conflicts, in one pass or, under its
 * memory bound, in passes over parts of the hash space. Must not report a
 * duplicate whose bytes were not compared, and must not keep the texts of
 * a file in memory: only their places in the input. How the work is
 * shared between two threads is handover.c's.
 */
#include "check_internal.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "handover.h"
#include "pages.h"
#include "parallel.h"

/* ---- whole-file check ---------------------------------------------------------
 * Three jobs, over the input in order:
 *  - scan: read records, normalise, hash, and fill blocks of pending
 *    records (each with a copy of its normalised text);
 *  - probe: look each record up in the table. A full-hash match on a text
 *    first seen in the resident head of the input (its first
 *    opts.resident_bytes, which stay mapped) is compared and counted at
 *    once; any other match becomes a candidate, and its text goes into
 *    the candidate set being filled;
 *  - confirm: a pass over one candidate set, sorted by where the first
 *    occurrences lie, compares bytes and counts duplicates and conflicts in
 *    input order. It reads the earlier input front to back, a region at
 *    a time into a buffer, so the input is never resident as a whole.
 * Texts repeat early ones far more often than late ones (an early text has
 * had longer to be repeated), so the resident head settles most repeats,
 * and the passes are left with the few whose first occurrence lies past
 * it. Keeping input pages costs no memory that the page cache does not
 * already hold; a copy of the texts would.
 * On a large input a second thread scans and the calling thread probes;
 * the repeats of resident texts are compared by whichever thread is free
 * (mostly the scanner), candidate sets are double-buffered between them,
 * and both compare the regions of a pass (the prober whenever it would
 * wait for a block).
 * Otherwise one thread does everything.
 *
 * Memory. Besides a few MiB of fixed size (blocks, buffers), a check
 * holds the table (24 bytes and a slot per distinct text), the candidate
 * sets (their pages stay mapped once used), the resident head, and copies
 * of its longest texts in flight: at most LONG_COPIES of the longest text
 * seen, in blocks, sets and buffers. Those four share opts.memory_bytes.
 * The head gives way first: as the table or the sets grow or a longer
 * text comes, less of it stays mapped (its pages are dropped, and repeats
 * of its texts become candidates like any other). When the table would
 * pass the bound even so, the pass stops adding to it and only estimates
 * how many distinct texts there are (HyperLogLog); the repeats are then
 * counted again from scratch, in passes over the whole input that each
 * take the texts whose hashes fall in one part of the hash space, sized
 * to fit. Records are validated and counted in the first pass only. */

#define BATCH 64                        /* records probed together */
#define LONG_COPIES 17 /* copies of the longest text the check may hold at
                          once: 3 in the reader and normaliser, 6 in the
                          blocks in flight (its input and a normalised
                          copy), 2 in candidate sets, 6 in the two
                          confirming buffers (raw, decoded, normalised) */
#define PART_BITS_MAX 16 /* parts of the hash space, at most 2^this */
#define PART_MIN 1024    /* a table this small is never split */
#define PASS_TEXT ((size_t)4 << 20)     /* candidate text that starts a pass */
#define PASS_CANDS ((size_t)64 << 10)   /* candidates that start a pass */
#define THREAD_MIN ((size_t)4 << 20)    /* smaller inputs stay on one thread */
#define CONFIRM_PAR_MIN 4096            /* smaller sets are confirmed on one */
#define RELEASE_EVERY ((size_t)512 << 10) /* drop probed input this often */

void cp_check_opts_init(cp_check_opts *o) {
  memset(o, 0, sizeof *o);
  o->mode = CP_NORM_TRIM;
  o->resident_bytes = CP_CHECK_RESIDENT_DEFAULT;
  o->memory_bytes = CP_CHECK_MEMORY_DEFAULT;
  cp_limits_init(&o->limits);
  o->max_problems = CP_DEFAULT_MAX_PROBLEMS;
  o->max_items = 1000;
}

static void check_fail(const cp_check *c) {
  atomic_store(&((cp_check *)c)->failed, 1);
}

int cp_check_failed(const cp_check *c) {
  return atomic_load(&((cp_check *)c)->failed);
}

cp_check *cp_check_new(const cp_check_opts *o) {
  /* Aligned as its parts are (see struct cp_check). */
  size_t size = (sizeof(cp_check) + 63) / 64 * 64;
  cp_check *c = aligned_alloc(64, size);
  if (!c) {
    cp_alloc_note_failure();
    return NULL;
  }
  memset(c, 0, size);
  atomic_init(&c->failed, 0);
  if (o) c->o = *o;
  else cp_check_opts_init(&c->o);
  if (!c->o.max_items) c->o.max_items = 1;
  cp_problems_init(&c->rep.problems, c->o.max_problems);
  cp_problems_init(&c->muted, 0);
  c->sink = &c->rep.problems;
  c->primary = 1;
  if (!c->o.memory_bytes) c->o.memory_bytes = CP_CHECK_MEMORY_DEFAULT;
  c->keep = c->o.resident_bytes;
  c->queued = -1;
  int ok = cp_dtable_init(&c->t, 12) == 0;
  for (int i = 0; i < NBLOCKS; i++) {
    c->blocks[i].items = cp_malloc(BLOCK_RECS * sizeof(pending));
    c->blocks[i].matches = cp_malloc(BLOCK_RECS * sizeof(match));
    ok = ok && c->blocks[i].items && c->blocks[i].matches;
  }
  if (!ok) {
    cp_check_free(c);
    return NULL;
  }
  return c;
}

static void free_item(cp_check_item *it) {
  free(it->text);
  free(it->intent);
  free(it->first_intent);
}

static void kept_free(kept *k) {
  for (size_t i = 0; i < k->n; i++) free(k->v[i].text);
  free(k->v);
  memset(k, 0, sizeof *k);
}

static void tally_free(tally *t) {
  for (int k = 0; k < 2; k++) kept_free(&t->items[k]);
  cp_dedupe_set_free(t->side);
  free(t->side_keys);
  memset(t, 0, sizeof *t);
}

static void scratch_free(scratch *sc) {
  cp_buf_free(&sc->dec);
  cp_buf_free(&sc->norm);
  cp_buf_free(&sc->view);
}

static void sets_free(cp_check *c) {
  for (int i = 0; i < 2; i++) {
    cset *set = &c->sets[i];
    cp_pages_free(set->cands, set->cbytes);
    cp_pages_free(set->texts, set->tcap);
    free(set->order);
    free(set->start);
    free(set->todo);
    free(set->ok);
    memset(set, 0, sizeof *set);
  }
}

/* Frees what only counting needs: the table, the candidate sets, the
 * blocks and buffers. What is left is the report and the sources. */
static void shed(cp_check *c) {
  cp_dtable_free(&c->t);
  sets_free(c);
  for (int i = 0; i < NBLOCKS; i++) {
    free(c->blocks[i].items);
    free(c->blocks[i].matches);
    cp_buf_free(&c->blocks[i].text);
    memset(&c->blocks[i], 0, sizeof c->blocks[i]);
  }
  scratch_free(&c->sc);
  scratch_free(&c->probe_sc);
  cp_buf_free(&c->sn);
}

void cp_check_free(cp_check *c) {
  if (!c) return;
  for (size_t i = 0; i < c->nsrcs; i++) {
    cp_file_map_close(&c->srcs[i].map);
    free(c->srcs[i].name);
  }
  free(c->srcs);
  shed(c);
  tally_free(&c->now);
  tally_free(&c->later);
  tally_free(&c->acc);
  cp_problems_free(&c->muted);
  cp_dedupe_set_free(c->intents);
  for (size_t i = 0; i < c->nintents; i++)
    free(c->intent_names[i / INTENT_CHUNK][i % INTENT_CHUNK]);
  for (size_t i = 0; i < INTENT_TOP && c->intent_names[i]; i++)
    free(c->intent_names[i]);
  for (size_t i = 0; i < c->rep.n_dups; i++) free_item(&c->rep.dups[i]);
  for (size_t i = 0; i < c->rep.n_conflicts; i++)
    free_item(&c->rep.conflict_items[i]);
  free(c->rep.dups);
  free(c->rep.conflict_items);
  cp_problems_free(&c->rep.problems);
  free(c);
}

/* The id of an intent name; 0 (and the check failed) when memory runs
 * out. */
static uint32_t check_intent(cp_check *c, const char *name, size_t n) {
  if (!name) return 0;
  if (c->nintents >= (size_t)INTENT_TOP * INTENT_CHUNK) return 0;
  if (!c->intents) c->intents = cp_dedupe_set_new(CP_NORM_NONE);
  size_t i = c->nintents;
  char ***chunk = &c->intent_names[i / INTENT_CHUNK];
  if (!*chunk) *chunk = cp_calloc(INTENT_CHUNK, sizeof **chunk);
  char *copy = cp_strndup(name, n);
  if (!c->intents || !*chunk || !copy) goto nomem;
  cp_dedupe_hit hit;
  uint64_t id = c->nintents + 1;
  if (cp_dedupe_set_add(c->intents, name, n, NULL, 0, id, &hit) !=
      CP_DEDUPE_NEW) {
    free(copy);
    return (uint32_t)hit.line;
  }
  if (cp_dedupe_set_failed(c->intents)) goto nomem;
  c->nintents++;
  (*chunk)[i % INTENT_CHUNK] = copy;
  return (uint32_t)id;
nomem:
  free(copy);
  check_fail(c);
  return 0;
}

static const char *intent_name(const cp_check *c, uint32_t id) {
  if (!id) return NULL;
  size_t i = id - 1;
  return c->intent_names[i / INTENT_CHUNK][i % INTENT_CHUNK];
}

/* A copy of an intent's name (NULL for none); NULL with the check failed
 * when memory runs out. */
static char *intent_copy(const cp_check *c, uint32_t id) {
  if (!id) return NULL;
  char *s = cp_strdup(intent_name(c, id));
  if (!s) check_fail(c);
  return s;
}

/* The source holding global offset `where` (the last one, almost always). */
static size_t source_of(const cp_check *c, uint64_t where) {
  size_t lo = 0, hi = c->nsrcs;
  if (where >= c->srcs[c->nsrcs - 1].base) return c->nsrcs - 1;
  while (hi - lo > 1) {
    size_t mid = (lo + hi) / 2;
    if (c->srcs[mid].base <= where) lo = mid;
    else hi = mid;
  }
  return lo;
}

static uint64_t keep_now(const cp_check *c) {
  return __atomic_load_n(&c->keep, __ATOMIC_RELAXED);
}

/* Whether the bytes of an entry or pending record lie in a resident head
 * of `keep` bytes as a whole. */
static int resident(uint64_t keep, uint64_t at) {
  return at_where(at) + at_len(at) <= keep;
}

/* The bytes of an entry or pending record, in the input. */
static const char *raw_at(const cp_check *c, uint64_t at) {
  uint64_t where = at_where(at);
  const source *s = &c->srcs[source_of(c, where)];
  return s->data + (where - s->base);
}

/* Drops the resident pages of global range [from, to). */
static void drop_range(cp_check *c, uint64_t from, uint64_t to) {
  for (size_t i = 0; i < c->nsrcs && from < to; i++) {
    source *s = &c->srcs[i];
    uint64_t a = from > s->base ? from : s->base;
    uint64_t b = to < s->base + s->size ? to : s->base + s->size;
    if (b > a)
      cp_file_map_release(&s->map, (size_t)(a - s->base), (size_t)(b - s->base));
  }
}

/* The same, except for the resident head. */
static void release_range(cp_check *c, uint64_t from, uint64_t to) {
  uint64_t keep = keep_now(c);
  drop_range(c, from > keep ? from : keep, to);
}

/* Either thread: keeps at most `want` bytes of the head resident from now
 * on, and drops the pages past that. Matches that the prober found
 * against the larger head may still fault a few of those pages in again;
 * compare_block drops them once more when it has compared them. */
static void lower_keep(cp_check *c, uint64_t want) {
  /* In whole MiBs: each drop interrupts the other thread, whose TLB must
   * forget the pages, and makes blocks in flight drop again. */
  want &= ~(((uint64_t)1 << 20) - 1);
  uint64_t old = keep_now(c);
  while (want < old && !__atomic_compare_exchange_n(&c->keep, &old, want, 0,
                                                    __ATOMIC_RELAXED,
                                                    __ATOMIC_RELAXED)) {
  }
  if (want < old) drop_range(c, want, old);
}

/* Bytes the table takes once it holds n entries: its slots (it grows them
 * at 70% full, as tab_reserve does) and its entries, with the windows the
 * scanner readies ahead of the prober. */
static size_t table_need(const table *t, size_t n) {
  unsigned bits = t->bits;
  while (n * 10 > ((size_t)1 << bits) * 7) bits++;
  /* A chunk of 2 MiB or more is mapped a huge page at a time. */
  size_t j = n + AHEAD_ENTS + ((size_t)1 << ECHUNK0_BITS);
  unsigned top = 63u - (unsigned)__builtin_clzll((unsigned long long)j);
  size_t slack = chunk_bytes(top - ECHUNK0_BITS) >= CP_HUGE_PAGE ? CP_HUGE_PAGE : 0;
  return slots_bytes(bits) + (n + AHEAD_ENTS) * sizeof(entry) + slack;
}

/* Memory to set aside for copies of the longest text. */
static size_t long_room(size_t lmax) { return LONG_COPIES * lmax; }

/* Probing side: what the candidate sets hold (their pages stay mapped once
 * used), and the sweep's arrays, as much of them as those candidates use. */
static size_t sets_bytes(const cp_check *c) {
  size_t n = 0;
  for (int i = 0; i < 2; i++) {
    const cset *s = &c->sets[i];
    n += s->cready + s->tready +
         s->cready / sizeof(cand) * (sizeof(uint32_t) + 1);
  }
  return n;
}

/* The head the rest leaves room for, given what the table and long texts
 * need. */
static void fit_keep(cp_check *c, size_t need) {
  if (need < c->o.memory_bytes) lower_keep(c, c->o.memory_bytes - need);
  else lower_keep(c, 0);
}

/* ---- counting -------------------------------------------------------------- */

static const char *src_name(const cp_check *c, size_t src) {
  return c->srcs[src].name;
}

/* One repeat as the report shows it: key is the repeat's (source, line)
 * code, text its normalised text. */
typedef struct repeat {
  uint64_t key;
  const char *text;
  size_t len;
  uint32_t intent;
} repeat;

/* An item's fat when the first occurrence's place is not known. */
#define NO_PLACE UINT64_MAX

/* An item that cannot be kept for want of memory fails the check. */
static void keep_item(cp_check *c, tally *t, int conflict, const repeat *r,
                      uint64_t first_key, uint32_t first_intent,
                      uint64_t fat) {
  kept *k = &t->items[conflict];
  if (k->n == k->cap) {
    size_t cap = k->cap ? k->cap * 2 : 64;
    item *v = cp_reallocarray(k->v, cap, sizeof *v);
    if (!v) {
      check_fail(c);
      return;
    }
    k->v = v;
    k->cap = cap;
  }
  int copy = fat == NO_PLACE || r->len <= ITEM_COPY;
  char *text = copy ? cp_strndup(r->text, r->len) : NULL;
  if (copy && !text) {
    check_fail(c);
    return;
  }
  item *it = &k->v[k->n++];
  it->key = r->key;
  it->first_key = first_key;
  it->fat = fat;
  it->intent = r->intent;
  it->first_intent = first_intent;
  it->text = text;
}

/* One repeat of the first occurrence at first_key (source << 40 | line)
 * under first_intent, whose bytes are at fat (or NO_PLACE). */
static void count_repeat(cp_check *c, tally *t, const repeat *r,
                         uint64_t first_key, uint32_t first_intent,
                         uint64_t fat) {
  int conflict = r->intent && first_intent && r->intent != first_intent;
  if (conflict) t->conflicts++;
  else t->duplicates++;
  if (t->items[conflict].n < c->o.max_items)
    keep_item(c, t, conflict, r, first_key, first_intent, fat);
}

/* The same, for the first occurrence an entry describes. */
static void count_entry(cp_check *c, tally *t, const repeat *r, uint64_t fat,
                        uint64_t fline) {
  uint64_t first_key =
      ((uint64_t)source_of(c, at_where(fat)) << LINE_BITS) | line_of(fline);
  count_repeat(c, t, r, first_key, intent_of(fline), fat);
}

/* Bytes differ under equal 64-bit hashes: a real collision. Every later
 * text with this hash lands on the same entry, so a side set that compares
 * bytes at once decides, in input order, whether the text is new or
 * repeats an earlier collider. Its "intent" is the 4-byte intent id and its
 * line the (source, line) code, so the answer maps straight back. */
static void resolve_collision(cp_check *c, tally *t, const repeat *r) {
  if (!t->side) t->side = cp_dedupe_set_new(CP_NORM_NONE);
  if (!t->side) {
    check_fail(c);
    return;
  }
  cp_dedupe_hit hit;
  cp_dedupe_result res = cp_dedupe_set_add(
      t->side, r->text, r->len, r->intent ? (const char *)&r->intent : NULL,
      r->intent ? sizeof r->intent : 0, t->nside, &hit);
  if (cp_dedupe_set_failed(t->side)) check_fail(c);
  if (res == CP_DEDUPE_NEW) {
    uint64_t *keys =
        cp_reallocarray(t->side_keys, t->nside + 1, sizeof *t->side_keys);
    if (!keys) {
      check_fail(c);
      return;
    }
    t->side_keys = keys;
    t->side_keys[t->nside++] = r->key;
    t->unique++;
    return;
  }
  uint32_t fi = 0;
  if (hit.intent) memcpy(&fi, hit.intent, sizeof fi);
  count_repeat(c, t, r, t->side_keys[hit.line], fi, NO_PLACE);
}

/* ---- probing -------------------------------------------------------------- */

/* The normalised text of a pending record. */
static const char *pending_text(const cp_check *c, const block *bl,
                                const pending *b) {
  return b->text == SPAN ? raw_at(c, b->at) : bl->text.data + b->text;
}

/* Grows a candidate set's array at p, of *bytes, to hold need bytes;
 * returns where it is now (NULL, p kept as it was, when out of memory).
 * The arrays start large enough for a pass (PASS_CANDS, PASS_TEXT) and
 * grow, copied, only when a set overshoots while the other is still being
 * confirmed. Small pages: a set may stay small, and a huge page would then
 * be mostly waste. */
static void *set_grow(void *p, size_t *bytes, size_t need, size_t used,
                      size_t *ready) {
  size_t n = *bytes ? *bytes : CP_HUGE_PAGE;
  while (n < need) n *= 2;
  if (n == *bytes) return p;
  void *q = cp_pages_zalloc(n, 0, 0);
  if (!q) return NULL;
  if (p) {
    memcpy(q, p, used);
    cp_pages_free(p, *bytes);
  }
  *bytes = n;
  *ready = used; /* the copy faulted its part in; the rest is mapped as used */
  return q;
}

/* The probing thread fills a set's arrays front to back: their pages are
 * mapped a window at a time, ahead of need, rather than faulted in one by
 * one. *done bytes of the array at p are; need must be. */
#define SET_WINDOW ((size_t)256 << 10)
static void set_ready(char *p, size_t *done, size_t need, size_t cap) {
  while (*done < need && *done < cap) {
    size_t n = cap - *done < SET_WINDOW ? cap - *done : SET_WINDOW;
    cp_pages_populate(p + *done, n);
    *done += n;
  }
}

static void add_cand(cp_check *c, const block *bl, const pending *b,
                     const entry *e, size_t src) {
  cset *set = &c->sets[c->filling];
  void *grown;
  if ((set->n + 1) * sizeof *set->cands > set->cbytes) {
    grown = set_grow(set->cands, &set->cbytes,
                     (set->n + 1) * sizeof *set->cands,
                     set->n * sizeof *set->cands, &set->cready);
    if (!grown) {
      check_fail(c);
      return;
    }
    set->cands = grown;
  }
  if (set->tlen + b->len > set->tcap) {
    grown = set_grow(set->texts, &set->tcap,
                     set->tlen + b->len > PASS_TEXT + CP_HUGE_PAGE
                         ? set->tlen + b->len
                         : PASS_TEXT + CP_HUGE_PAGE,
                     set->tlen, &set->tready);
    if (!grown) {
      check_fail(c);
      return;
    }
    set->texts = grown;
  }
  set_ready((char *)set->cands, &set->cready, (set->n + 1) * sizeof(cand),
            set->cbytes);
  set_ready(set->texts, &set->tready, set->tlen + b->len, set->tcap);
  cand *k = &set->cands[set->n++];
  k->line = ((uint64_t)src << LINE_BITS) | line_of(b->line);
  k->fat = e->at;
  k->fline = e->line;
  k->text = (uint32_t)set->tlen;
  k->len = b->len;
  k->intent = intent_of(b->line);
  k->pad = 0;
  memcpy(set->texts + set->tlen, pending_text(c, bl, b), b->len);
  set->tlen += b->len;
}

/* The normalised text of a record from its bytes, raw, as the entry `at`
 * describes them. */
static void text_of(const cp_check *c, scratch *sc, const char *raw,
                    uint64_t at, const char **p, size_t *n) {
  const char *t;
  size_t tn;
  if (at_kind(at) == NORMALISED) {
    *p = raw;
    *n = at_len(at);
    return;
  }
  cp_text_decode((cp_text_enc)at_kind(at), raw, at_len(at), &sc->dec, &t, &tn);
  cp_normalize(c->o.mode, t, tn, &sc->norm, p, n);
  /* a text that could not be made again compares as nothing: not a result */
  if (!cp_buf_ok(&sc->dec) || !cp_buf_ok(&sc->norm)) check_fail(c);
}

static void text_at(const cp_check *c, scratch *sc, uint64_t at,
                    const char **p, size_t *n) {
  text_of(c, sc, raw_at(c, at), at, p, n);
}

/* Compares and counts the repeats of resident texts the prober found in
 * block b, then drops the pages the block's texts were on. The first
 * occurrences lie anywhere in the resident head, so each is asked for a
 * few matches ahead. */
void cp_check_compare_block(cp_check *c, size_t src, block *b, scratch *sc) {
  for (size_t j = 0; j < b->nmatches; j++) {
    if (j + 8 < b->nmatches) {
      const match *ahead = &b->matches[j + 8];
      const char *p = raw_at(c, ahead->fat);
      __builtin_prefetch(p);
      __builtin_prefetch(p + at_len(ahead->fat) - 1);
    }
    const match *m = &b->matches[j];
    const pending *q = &b->items[m->rec];
    repeat r = {((uint64_t)src << LINE_BITS) | line_of(q->line),
                pending_text(c, b, q), q->len, intent_of(q->line)};
    const char *p;
    size_t n;
    text_at(c, sc, m->fat, &p, &n);
    if (n == r.len && memcmp(p, r.text, n) == 0)
      count_entry(c, &c->now, &r, m->fat, m->fline);
    else
      resolve_collision(c, &c->now, &r);
  }
  /* The head shrank since the block was probed: its first occurrences in
   * the part given up were faulted in again just now, and with them, where
   * the page cache holds the file in large folios, whole folios around
   * them (a fault maps up to 2 MiB): all of the part given up goes. */
  uint64_t keep = keep_now(c);
  if (b->nmatches && keep < b->keep) drop_range(c, keep, c->o.resident_bytes);
  b->nmatches = 0;
  source *s = &c->srcs[src];
  /* Each drop interrupts the other thread (its TLB must forget the pages),
   * so drop in MiBs, not per block. */
  if (b->end - s->released >= RELEASE_EVERY || b->last) {
    release_range(c, s->base + s->released, s->base + b->end);
    s->released = b->end;
  }
}

/* Probing is memory-bound: the table is bigger than the caches, so each
 * record costs a miss on its slot and, when the hash is there, one on the
 * entry. The batches of a block go through three stages a batch apart --
 * ask for the home slots; walk them and ask for the matched entries; then
 * the real probe, in order -- so that each miss has a batch of other work
 * to hide behind. The first two stages only read; the second also asks
 * for the text of each likely repeat, which the other core wrote and
 * which add_cand may copy. Comparing the texts of repeats, a miss or two
 * more each, is mostly left to the scanner. */
static void stage_slots(const table *t, const pending *b, size_t n) {
  for (size_t i = 0; i < n; i++) {
    size_t s = tab_home(t, b[i].hash);
    __builtin_prefetch(&t->tags[s]);
    __builtin_prefetch(&t->slots[s]);
  }
}

/* The slot of the first entry whose tag matches h's, + 1; 0 when there is
 * none. */
static size_t first_tagged(const table *t, uint64_t h) {
  size_t mask = ((size_t)1 << t->bits) - 1;
  uint8_t tag = tag_of(h);
  for (size_t s = tab_home(t, h);; s = (s + 1) & mask) {
    uint8_t g = t->tags[s];
    if (!g) return 0;
    if (g == tag) return s + 1;
  }
}

static void stage_entries(const cp_check *c, const block *bl, const pending *b,
                          size_t n) {
  const table *t = &c->t;
  for (size_t i = 0; i < n; i++) {
    size_t s = first_tagged(t, b[i].hash);
    if (s) {
      __builtin_prefetch(ent(t, t->slots[s - 1]));
      __builtin_prefetch(pending_text(c, bl, &b[i]));
    }
  }
}

static void stage_probe(cp_check *c, block *bl, const pending *b, size_t n,
                        size_t src) {
  table *t = &c->t;
  for (size_t i = 0; i < n; i++) {
    size_t pos = tab_home(t, b[i].hash);
    uint32_t idx;
    if (tab_next(t, b[i].hash, &pos, &idx)) {
      const entry *e = ent(t, idx);
      if (resident(bl->keep, e->at)) {
        match *m = &bl->matches[bl->nmatches++];
        m->fat = e->at;
        m->fline = e->line;
        m->rec = (uint32_t)(&b[i] - bl->items);
      } else {
        add_cand(c, bl, &b[i], e, src);
      }
    } else {
      entry e = {b[i].hash, b[i].at, b[i].line};
      if (tab_insert(t, pos, &e) == NO_ENTRY) check_fail(c);
    }
  }
}

/* ---- confirming ------------------------------------------------------------ */

/* Confirming a set has three steps: sort the candidates by the region of
 * their first occurrences; compare each region's candidates (regions are
 * independent, so both threads can take some); count them in input
 * order. */
/* Memory running out leaves the set with no regions to compare (and the
 * check failed): every thread then finds nothing to do and goes on. */
void cp_check_confirm_sort(cp_check *c, cset *set) {
  size_t n = set->n;
  set->ntodo = 0;
  if (n > set->order_cap) {
    size_t cap = set->cbytes / sizeof *set->cands;
    uint32_t *order = cp_reallocarray(set->order, cap, sizeof *order);
    if (order) set->order = order;
    uint8_t *ok = order ? cp_realloc(set->ok, cap) : NULL;
    if (ok) set->ok = ok;
    if (!order || !ok) goto nomem;
    set->order_cap = cap;
  }
  size_t nreg = (size_t)(c->total >> REGION_SHIFT) + 1;
  if (nreg > set->nreg) {
    size_t *start = cp_reallocarray(set->start, nreg + 1, sizeof *start);
    if (start) set->start = start;
    size_t *todo = start ? cp_reallocarray(set->todo, nreg, sizeof *todo) : NULL;
    if (todo) set->todo = todo;
    if (!start || !todo) goto nomem;
    set->nreg = nreg; /* only once both hold nreg */
  }
  size_t *start = set->start;
  memset(start, 0, (nreg + 1) * sizeof *start);
  for (size_t i = 0; i < n; i++)
    start[(at_where(set->cands[i].fat) >> REGION_SHIFT) + 1]++;
  set->ntodo = 0;
  for (size_t r = 0; r < nreg; r++) {
    if (start[r + 1]) set->todo[set->ntodo++] = r;
    start[r + 1] += start[r];
  }
  size_t *fill = cp_reallocarray(NULL, nreg, sizeof *fill);
  if (!fill) goto nomem;
  memcpy(fill, start, nreg * sizeof *fill);
  for (size_t i = 0; i < n; i++)
    set->order[fill[at_where(set->cands[i].fat) >> REGION_SHIFT]++] = (uint32_t)i;
  free(fill);
  return;
nomem:
  set->ntodo = 0;
  check_fail(c);
}

/* Copies global range [lo, hi) of the input into sc->view: a region is
 * read once per pass, and reading it costs less than mapping its pages in
 * and dropping them again. */
static const char *region_view(const cp_check *c, scratch *sc, uint64_t lo,
                               uint64_t hi) {
  cp_buf_reset(&sc->view);
  if (cp_buf_reserve(&sc->view, (size_t)(hi - lo))) return NULL;
  for (size_t i = source_of(c, lo); i < c->nsrcs && c->srcs[i].base < hi; i++) {
    const source *s = &c->srcs[i];
    uint64_t a = lo > s->base ? lo : s->base;
    uint64_t b = hi < s->base + s->size ? hi : s->base + s->size;
    char *dst = sc->view.data + (a - lo);
    size_t from = (size_t)(a - s->base), to = (size_t)(b - s->base);
    if (s->map.mapped) cp_file_map_copy(&s->map, from, to, dst);
    else memcpy(dst, s->data + from, to - from);
  }
  return sc->view.data;
}

void cp_check_confirm_region(cp_check *c, cset *set, size_t r, scratch *sc) {
  size_t a = set->start[r], b = set->start[r + 1];
  uint64_t lo = (uint64_t)r << REGION_SHIFT, hi = lo;
  for (size_t j = a; j < b; j++) { /* first occurrences may run past the region */
    uint64_t at = set->cands[set->order[j]].fat;
    if (at_where(at) + at_len(at) > hi) hi = at_where(at) + at_len(at);
  }
  const char *view = region_view(c, sc, lo, hi);
  if (!view) {
    check_fail(c);
    memset(set->ok, 0, set->n);
    return;
  }
  for (size_t j = a; j < b; j++) {
    if (j + 8 < b)
      __builtin_prefetch(set->texts + set->cands[set->order[j + 8]].text);
    const cand *k = &set->cands[set->order[j]];
    const char *p;
    size_t pn;
    text_of(c, sc, view + (at_where(k->fat) - lo), k->fat, &p, &pn);
    set->ok[set->order[j]] =
        pn == k->len && memcmp(p, set->texts + k->text, pn) == 0;
  }
}

void cp_check_confirm_count(cp_check *c, cset *set) {
  for (size_t i = 0; i < set->n && !cp_check_failed(c); i++) {
    const cand *k = &set->cands[i];
    repeat r = {k->line, set->texts + k->text, k->len, k->intent};
    if (set->ok[i])
      count_entry(c, &c->later, &r, k->fat, k->fline);
    else
      resolve_collision(c, &c->later, &r);
  }
  set->n = 0;
  set->tlen = 0;
}

typedef struct region_job {
  cp_check *c;
  cset *set;
} region_job;

static void region_task(void *ctx, size_t chunk, int worker) {
  region_job *j = ctx;
  scratch *sc = worker == 0 ? &j->c->probe_sc : &j->c->sc;
  cp_check_confirm_region(j->c, j->set, j->set->todo[chunk], sc);
}

/* All three steps, when no scanner runs (a small input, or the set left at
 * the end): the regions of a large set on two threads, one per scratch. */
void cp_check_confirm(cp_check *c, cset *set) {
  if (!set->n) return;
  cp_check_confirm_sort(c, set);
  region_job j = {c, set};
  int threads = set->n >= CONFIRM_PAR_MIN && cp_parallel_threads() > 1 ? 2 : 1;
  cp_parallel_run(threads, set->ntodo, region_task, &j);
  cp_check_confirm_count(c, set);
}

/* ---- counting distinct texts past an overflow (HyperLogLog) -------------- */

/* The part of the hash space (of 2^bits) that h falls in. The bits are
 * below those that place an entry in the table (the top ones), so that
 * a part spreads over the whole table, and above the tag (the low byte). */
static uint64_t part_of(uint64_t h, unsigned bits) {
  return (h >> 8) & (((uint64_t)1 << bits) - 1);
}

static void hll_add(cp_check *c, uint64_t h) {
  size_t i = (size_t)(h >> (64 - HLL_BITS));
  uint64_t rest = (h << HLL_BITS) | ((uint64_t)1 << (HLL_BITS - 1));
  uint8_t rank = (uint8_t)(__builtin_clzll(rest) + 1);
  if (rank > c->hll[i]) c->hll[i] = rank;
}

static double hll_estimate(const cp_check *c) {
  const double m = (double)((size_t)1 << HLL_BITS);
  double sum = 0;
  size_t zeros = 0;
  for (size_t i = 0; i < ((size_t)1 << HLL_BITS); i++) {
    sum += 1.0 / (double)((uint64_t)1 << c->hll[i]);
    zeros += c->hll[i] == 0;
  }
  double e = 0.7213 / (1 + 1.079 / m) * m * m / sum;
  if (e <= 2.5 * m && zeros) e = m * log(m / (double)zeros);
  return e;
}

/* Probing side: the table has reached its bound. The pass stops counting
 * repeats; what it counted is thrown away at its end. Its distinct texts
 * are estimated instead, to size the parts the passes after it take. */
static void overflow(cp_check *c) {
  __atomic_store_n(&c->overflow, 1, __ATOMIC_RELAXED);
  if (!c->primary) return; /* a part that is split in two needs no count */
  for (size_t i = 0; i < c->t.nents; i++)
    hll_add(c, ent(&c->t, (uint32_t)i)->hash);
}

/* Probing side: the table is to take up to n more entries, and the
 * scanner has seen texts of lmax bytes. Makes room for both, from the
 * resident head, or finds that there is none. */
static void plan_memory(cp_check *c, size_t n, size_t lmax) {
  size_t tab = table_need(&c->t, c->t.nents + n), sets = sets_bytes(c);
  size_t need = tab + sets + long_room(lmax);
  /* Over the bound with next to nothing in the table, it is the rest that
   * does not fit: splitting the table further would not help. */
  if (need > c->o.memory_bytes && !c->unbounded && c->t.nents >= PART_MIN) {
    overflow(c);
    return;
  }
  /* The head gives way a few blocks ahead of the table's slots doubling
   * (megabytes at once): the blocks in flight were probed against the
   * larger head, and comparing them brings some of its dropped pages back
   * for a while. */
  size_t ahead = table_need(&c->t, c->t.nents + n + NBLOCKS * BLOCK_RECS);
  fit_keep(c, (ahead - tab >= CP_HUGE_PAGE ? ahead - tab : 0) + need);
  __atomic_store_n(&c->table_bytes, tab + sets, __ATOMIC_RELAXED);
}

/* Probing side: takes one block of pending records. */
void cp_check_consume(cp_check *c, size_t src, block *b) {
  source *s = &c->srcs[src];
  size_t n = b->n;
  if (!c->overflow) plan_memory(c, n, b->lmax);
  if (c->overflow) {
    if (c->primary)
      for (size_t i = 0; i < n; i++) hll_add(c, b->items[i].hash);
    s->pos = b->end;
    return;
  }
  b->keep = keep_now(c);
  /* Growing now keeps slot addresses fixed while the stages run. A table
   * that cannot grow cannot take the block: it is not probed (its texts
   * would fill the table past any free slot). */
  if (tab_reserve(&c->t, n)) check_fail(c);
  if (cp_check_failed(c)) n = 0;
  for (size_t i = 0; i < n + 2 * BATCH; i += BATCH) {
    if (i < n) stage_slots(&c->t, b->items + i, n - i < BATCH ? n - i : BATCH);
    if (i >= BATCH && i - BATCH < n) {
      size_t k = i - BATCH;
      stage_entries(c, b, b->items + k, n - k < BATCH ? n - k : BATCH);
    }
    if (i < 2 * BATCH || i - 2 * BATCH >= n) continue;
    size_t k = i - 2 * BATCH;
    stage_probe(c, b, b->items + k, n - k < BATCH ? n - k : BATCH, src);
    cset *set = &c->sets[c->filling];
    /* Checked per batch so that a set overshoots by a few texts at most. */
    if (set->tlen >= PASS_TEXT || set->n >= PASS_CANDS)
      cp_handover_set_full(c);
  }
  s->pos = b->end;
}

/* Scanning side: a text longer than any before. The head gives way to
 * the room its copies may take, now, before they are made. */
static void note_long(cp_check *c, block *b, size_t len) {
  c->lmax = len;
  b->lmax = len;
  fit_keep(c, __atomic_load_n(&c->table_bytes, __ATOMIC_RELAXED) +
                  long_room(len));
}

/* Scanning side: a text too long to be deduplicated is a problem of its
 * own; its bytes are never looked at again, so its pages go at once. */
static void too_long(cp_check *c, source *s, const cp_record *rec) {
  cp_problems_add(c->sink, rec->line, 1, rec->offset, CP_PROB_TOO_LONG,
                  "text is over %zu MiB; too long to deduplicate",
                  CP_CHECK_MAX_TEXT >> 20);
  c->rep.invalid++;
  size_t from = (size_t)(rec->raw - s->data);
  cp_file_map_release(&s->map, from, from + rec->raw_len);
}

/* Scanning side: one record into the block being filled. */
static void scan_record(cp_check *c, block *b, source *s,
                        const cp_record *rec) {
  c->rep.lines++;
  if (rec->blank) {
    c->rep.blank_lines++;
    return;
  }
  if (rec->invalid) {
    c->rep.invalid++;
    return;
  }
  /* Only reachable without a length limit: say so rather than compare a
   * prefix, or copy it. */
  size_t longest = rec->raw_len > rec->len ? rec->raw_len : rec->len;
  if (longest > CP_CHECK_MAX_TEXT) {
    too_long(c, s, rec);
    return;
  }
  /* Reading the record took about its span too (a parsed JSON line). */
  size_t room = rec->span < CP_CHECK_MAX_TEXT ? rec->span : CP_CHECK_MAX_TEXT;
  if (room < longest) room = longest;
  if (room > c->lmax) note_long(c, b, room);
  const char *p;
  size_t n;
  if (rec->plain)
    cp_normalize_plain(c->o.mode, rec->text, rec->len, &c->sn, &p, &n);
  else
    cp_normalize(c->o.mode, rec->text, rec->len, &c->sn, &p, &n);
  if (!cp_buf_ok(&c->sn)) {
    check_fail(c);
    return;
  }
  if (n == 0) { /* nothing left once normalised */
    c->rep.blank_lines++;
    return;
  }
  if (n > c->lmax) { /* case folding can lengthen a text */
    if (n > CP_CHECK_MAX_TEXT) {
      too_long(c, s, rec);
      return;
    }
    note_long(c, b, n);
  }
  int in_input = p >= rec->raw && p + n <= rec->raw + rec->raw_len;
  if (!in_input && cp_buf_reserve(&b->text, n)) { /* no room to keep it */
    check_fail(c);
    b->text.failed = 0; /* the block goes on, as the threads do */
    return;
  }
  c->rep.utterances++;
  uint64_t h = cp_dedupe_hash(p, n);
  if (c->o.test_hash_mask) h &= c->o.test_hash_mask;
  if (c->part_bits && part_of(h, c->part_bits) != c->part) return;
  pending *q = &b->items[b->n++];
  q->hash = h;
  q->line = pack_line(rec->line, check_intent(c, rec->intent, rec->intent_len));
  q->len = (uint32_t)n;
  if (in_input) {
    q->at = pack_at(s->base + (uint64_t)(p - s->data), n, NORMALISED);
    q->text = SPAN;
  } else {
    q->at = pack_at(s->base + (uint64_t)(rec->raw - s->data), rec->raw_len,
                    rec->enc);
    q->text = (uint32_t)b->text.len;
    cp_buf_add(&b->text, p, n);
  }
}

typedef struct scan_job {
  cp_check *c;
  size_t src;
} scan_job;

/* Scanning side: maps the input's pages a little ahead of the reader at
 * `pos`, a call per MiB instead of a fault every 64 KiB. Far enough ahead
 * that the reader does not catch up within a block, near enough that
 * the pages are resident for little longer than they are needed. */
#define MAP_AHEAD ((size_t)512 << 10)
static void map_ahead(source *s, size_t pos) {
  /* Never behind the reader: what it has read may have been dropped. */
  if (s->mapped < pos) s->mapped = pos;
  while (s->mapped < pos + MAP_AHEAD && s->mapped < s->size) {
    size_t to = s->mapped + MAP_AHEAD;
    cp_file_map_prefetch(&s->map, s->mapped, to);
    s->mapped = to;
  }
}

static void scan_source(void *arg) {
  scan_job *j = arg;
  cp_check *c = j->c;
  source *s = &c->srcs[j->src];
  cp_reader *r = cp_reader_new(s->name, s->data, s->size, s->fmt,
                               &c->o.limits, c->sink);
  if (!r) check_fail(c); /* the blocks are still handed over, empty */
  if (r) cp_reader_set_size(r, s->file_size);
  if (r && s->map.mapped) cp_reader_drop_long(r, &s->map, CP_CHECK_MAX_TEXT);
  block *b = cp_handover_first(c);
  b->start = 0;
  b->lmax = c->lmax;
  map_ahead(s, 0);
  /* The first block is handed over early: probing waits for it. */
  size_t fill = c->threaded ? BLOCK_RECS / 8 : BLOCK_RECS;
  cp_record rec;
  while (r && !cp_check_failed(c) && cp_reader_next(r, &rec)) {
    scan_record(c, b, s, &rec);
    /* Bounded in bytes too, as the input it spans stays mapped, and its
     * copies in memory, until it is counted. */
    if (b->n == fill || rec.offset - b->start >= BLOCK_BYTES ||
        b->text.len >= BLOCK_BYTES) {
      b->end = cp_reader_pos(r);
      map_ahead(s, b->end);
      b = cp_handover_block(c, j->src, b);
      b->start = cp_reader_pos(r);
      b->lmax = c->lmax;
      fill = BLOCK_RECS;
      /* A part that overflowed is split and read again: no use going on. */
      if (!c->primary && __atomic_load_n(&c->overflow, __ATOMIC_RELAXED))
        break;
    }
  }
  b->end = s->size;
  b->last = 1;
  if (r && cp_reader_failed(r)) check_fail(c);
  cp_reader_free(r);
  cp_handover_last(c, j->src, b);
}

/* Entries the table may take for a pass up front: `want`, or fewer when
 * the memory bound says so. */
static size_t room_for(cp_check *c, size_t want, size_t lmax) {
  while (want && table_need(&c->t, c->t.nents + want) + long_room(lmax) >
                     c->o.memory_bytes)
    want /= 2;
  return want;
}

/* One pass over one source: the first one (c->primary) or the one of a
 * part of the hash space. */
static void run_source(cp_check *c, size_t idx) {
  source *s = &c->srcs[idx];
  s->pos = s->released = s->mapped = 0;
  /* Room for one unique text per 128 bytes up front (or, in a part's pass,
   * for the part's texts), so that a large file rarely makes the table
   * grow while it is read. Only probing touches the table: with a
   * scanning thread, it is made while the scanner fills its first block,
   * which probing would wait for anyway. */
  size_t more = 0;
  if (c->primary) {
    c->rep.files++;
    c->rep.bytes += s->file_size;
    more = c->overflow ? 0 : s->size / 128;
  } else {
    more = c->part_expect;
    c->part_expect = 0;
  }
  size_t lmax = c->lmax; /* the scanner's, once it runs */
  more = room_for(c, more, lmax);
  c->threaded = s->size >= THREAD_MIN && cp_parallel_threads() > 1;
  scan_job job = {c, idx};
  if (cp_check_failed(c)) return; /* nothing it found would count */
  if (c->threaded) cp_handover_start(c, more, scan_source, &job);
  if (more && !c->overflow) {
    plan_memory(c, more, lmax);
    /* only a head start: probing grows the table as it needs */
    if (!c->overflow && tab_reserve(&c->t, more)) check_fail(c);
  }
  if (!c->threaded) {
    scan_source(&job);
    return;
  }
  cp_handover_probe(c, idx);
}

/* NULL, with the check failed, when out of memory. */
static source *add_source(cp_check *c, const char *name) {
  source *srcs = cp_reallocarray(c->srcs, c->nsrcs + 1, sizeof *srcs);
  if (srcs) c->srcs = srcs;
  char *copy = srcs ? cp_strdup(name) : NULL;
  if (!copy) {
    check_fail(c);
    return NULL;
  }
  source *s = &c->srcs[c->nsrcs++];
  memset(s, 0, sizeof *s);
  s->name = copy;
  s->map.fd = -1;
  s->base = c->total;
  return s;
}

int cp_check_file(cp_check *c, const char *path, cp_format fmt, char *err,
                  size_t errlen) {
  cp_file_map m;
  if (cp_check_failed(c)) {
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
  }
  int rc = cp_file_map_open(&m, path, c->o.limits.max_bytes, err, errlen);
  if (rc) return rc;
  if (c->total + m.size > WHERE_MASK) {
    snprintf(err, errlen, "%s: the inputs of one check are limited to 1 TiB",
             path);
    cp_file_map_close(&m);
    return -1;
  }
  source *s = add_source(c, path);
  if (!s) {
    snprintf(err, errlen, "%s: out of memory", path);
    cp_file_map_close(&m);
    return -1;
  }
  s->map = m;
  s->data = m.data;
  s->size = m.size;
  s->file_size = m.file_size;
  s->fmt = fmt;
  c->total += s->size;
  run_source(c, c->nsrcs - 1);
  if (cp_check_failed(c)) {
    snprintf(err, errlen, "%s: out of memory", path);
    return -1;
  }
  return 0;
}

void cp_check_buffer(cp_check *c, const char *name, const char *data,
                     size_t len, cp_format fmt) {
  source *s = cp_check_failed(c) ? NULL : add_source(c, name);
  if (!s) return;
  s->data = data;
  s->size = s->file_size = len;
  s->fmt = fmt;
  c->total += s->size;
  run_source(c, c->nsrcs - 1);
}

/* ---- passes ------------------------------------------------------------ */

/* Merges the items of a and b (each in input order) into a, keeping the
 * first max of them. Frees the rest. */
static void merge_kept(cp_check *c, kept *a, kept *b, size_t max) {
  kept out = {NULL, 0, 0};
  out.cap = (a->n + b->n < max ? a->n + b->n : max) + 1;
  out.v = cp_reallocarray(NULL, out.cap, sizeof *out.v);
  if (!out.v) check_fail(c); /* the items go; the check has no result */
  size_t i = 0, j = 0;
  while (i < a->n || j < b->n) {
    int from_a = j >= b->n || (i < a->n && a->v[i].key < b->v[j].key);
    item *it = from_a ? &a->v[i++] : &b->v[j++];
    if (out.v && out.n < max) out.v[out.n++] = *it;
    else free(it->text);
  }
  free(a->v);
  free(b->v);
  *a = out;
  memset(b, 0, sizeof *b);
}

/* Ends a pass over every source: confirms what is pending and, unless
 * the table overflowed, adds what the pass counted to the totals. Leaves
 * an empty table and tallies for the next pass; returns whether the pass
 * counted. */
static int end_pass(cp_check *c) {
  int ok = !c->overflow;
  cset *set = &c->sets[c->filling];
  if (ok) cp_check_confirm(c, set);
  set->n = 0;
  set->tlen = 0;
  if (ok) {
    tally *a = &c->acc;
    a->unique += c->t.nents + c->now.unique + c->later.unique;
    a->duplicates += c->now.duplicates + c->later.duplicates;
    a->conflicts += c->now.conflicts + c->later.conflicts;
    for (int k = 0; k < 2; k++) {
      merge_kept(c, &c->now.items[k], &c->later.items[k], c->o.max_items);
      merge_kept(c, &a->items[k], &c->now.items[k], c->o.max_items);
    }
  }
  tally_free(&c->now);
  tally_free(&c->later);
  cp_dtable_free(&c->t);
  if (cp_dtable_init(&c->t, 12)) check_fail(c);
  c->ahead = c->ahead_end = 0;
  __atomic_store_n(&c->table_bytes, 0, __ATOMIC_RELAXED);
  return ok;
}

/* Distinct texts a fresh table holds within the memory bound, with room
 * for texts of lmax bytes and the candidate sets as they are. */
static size_t table_cap(const cp_check *c, size_t lmax) {
  table t;
  memset(&t, 0, sizeof t);
  t.bits = 12;
  size_t lo = 0, hi = (size_t)1 << 31;
  while (hi - lo > 1) {
    size_t mid = lo + (hi - lo) / 2;
    size_t need = table_need(&t, mid) + long_room(lmax) + sets_bytes(c);
    if (need <= c->o.memory_bytes) lo = mid;
    else hi = mid;
  }
  return lo;
}

/* The first pass overflowed: counts the repeats again, part by part of
 * the hash space, each part sized from the estimate of distinct texts to
 * fit the table's bound. A part that overflows anyway (the estimate is
 * within a few percent, the parts are not all equal) is split in two.
 * Records were validated and counted by the first pass: their problems
 * now go nowhere and their counts are put back. */
static void run_parts(cp_check *c) {
  /* There are no more distinct texts than texts (the estimate can say
   * otherwise when hashes are far from uniform: tests that mask them). */
  double est = hll_estimate(c);
  if (est > (double)c->rep.utterances) est = (double)c->rep.utterances;
  size_t cap = table_cap(c, c->lmax);
  /* A bound that leaves the table no room is not kept: one pass without. */
  int hopeless = cap < PART_MIN;
  unsigned bits = hopeless ? 0 : 1;
  while (!hopeless && bits < PART_BITS_MAX &&
         est / (double)((uint64_t)1 << bits) > 0.8 * (double)cap)
    bits++;
  cp_check_report saved = c->rep;
  c->primary = 0;
  c->sink = &c->muted;
  /* Parts still to count, as (bits, part), the next one last. */
  size_t n = 0, cap_todo = ((size_t)1 << bits) + 2 * PART_BITS_MAX + 2;
  uint64_t *todo = cp_reallocarray(NULL, cap_todo, 2 * sizeof *todo);
  if (!todo) {
    check_fail(c);
    n = 0;
  }
  for (uint64_t p = (uint64_t)1 << bits; todo && p-- > 0;) {
    todo[2 * n] = bits;
    todo[2 * n + 1] = p;
    n++;
  }
  while (n && !cp_check_failed(c)) {
    n--;
    c->part_bits = (unsigned)todo[2 * n];
    c->part = todo[2 * n + 1];
    c->overflow = 0;
    c->unbounded = hopeless || c->part_bits >= PART_BITS_MAX;
    double share = est / (double)((uint64_t)1 << c->part_bits);
    c->part_expect = share > (double)cap ? cap : (size_t)share;
    for (size_t i = 0; i < c->nsrcs && !c->overflow; i++) run_source(c, i);
    c->rep.passes++;
    if (end_pass(c)) continue;
    if (n + 2 > cap_todo) {
      uint64_t *more = cp_reallocarray(todo, cap_todo * 2, 2 * sizeof *todo);
      if (!more) {
        check_fail(c);
        break;
      }
      todo = more;
      cap_todo *= 2;
    }
    uint64_t half = (uint64_t)1 << c->part_bits;
    todo[2 * n] = c->part_bits + 1;
    todo[2 * n + 1] = c->part | half;
    todo[2 * n + 2] = c->part_bits + 1;
    todo[2 * n + 3] = c->part;
    n += 2;
  }
  free(todo);
  unsigned passes = c->rep.passes;
  c->rep = saved; /* the counts and problems of the first pass */
  c->rep.passes = passes;
  c->primary = 1;
  c->sink = &c->rep.problems;
  c->part_bits = 0;
}

/* The report's list of one kind of items, their texts read again from
 * the input: the first max_items, but no more than CP_CHECK_LISTED_TEXT
 * bytes of text. Frees the items. */
static void list_items(cp_check *c, kept *k, cp_check_item **out,
                       size_t *nout) {
  cp_check_item *v = cp_calloc(k->n + 1, sizeof *v);
  if (!v) check_fail(c);
  scratch sc;
  memset(&sc, 0, sizeof sc);
  size_t n = 0, bytes = 0;
  for (size_t i = 0; v && i < k->n; i++) {
    const item *it = &k->v[i];
    const char *p;
    size_t len;
    if (it->text) {
      p = it->text;
      len = strlen(p);
    } else {
      uint64_t from = at_where(it->fat);
      const char *raw = region_view(c, &sc, from, from + at_len(it->fat));
      if (!raw) {
        check_fail(c);
        break;
      }
      text_of(c, &sc, raw, it->fat, &p, &len);
    }
    if (bytes + len > CP_CHECK_LISTED_TEXT) break;
    bytes += len;
    cp_check_item *o = &v[n++];
    o->text = cp_strndup(p, len);
    o->file = src_name(c, (size_t)(it->key >> LINE_BITS));
    o->line = line_of(it->key);
    o->first_file = src_name(c, (size_t)(it->first_key >> LINE_BITS));
    o->first_line = line_of(it->first_key);
    o->intent = intent_copy(c, it->intent);
    o->first_intent = intent_copy(c, it->first_intent);
    if (!o->text) check_fail(c); /* what was copied goes with the report */
  }
  scratch_free(&sc);
  kept_free(k);
  *out = v;
  *nout = n;
}

const cp_check_report *cp_check_finish(cp_check *c) {
  if (c->finished) return &c->rep;
  c->finished = 1;
  if (c->nsrcs) c->rep.passes = 1;
  if (!end_pass(c)) run_parts(c);
  /* What is left to do needs neither the table nor the input's pages: the
   * report is made from little memory. */
  shed(c);
  lower_keep(c, 0);
  drop_range(c, 0, c->total);
  c->rep.unique = c->acc.unique;
  c->rep.duplicates = c->acc.duplicates;
  c->rep.conflicts = c->acc.conflicts;
  list_items(c, &c->acc.items[0], &c->rep.dups, &c->rep.n_dups);
  list_items(c, &c->acc.items[1], &c->rep.conflict_items, &c->rep.n_conflicts);
  c->rep.success_rate =
      c->rep.lines ? (double)c->rep.unique * 100.0 / (double)c->rep.lines : 0.0;
  return &c->rep;
}
