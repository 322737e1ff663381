/*
 * dtable.h -- the hash table of exact dedupe (dtable.c), shared by the
 * in-memory set and the whole-file check. Owns the slots, the entries and
 * how a place, a line and an intent are packed in an entry; knows hashes,
 * never texts: whether two texts are the same is for its users to decide,
 * by comparing bytes.
 * The probes are static inline, under the short names they had as static
 * helpers, so that they inline into the loops that probe.
 */
#ifndef CP_DTABLE_H
#define CP_DTABLE_H

#include <stddef.h>
#include <stdint.h>

#include "pages.h"

/* Open addressing with linear probing, in two arrays: a byte per slot, 0
 * when it is empty and else a byte of the hash (a tag that rules out most
 * non-matches), and the slot's entry index. The tags of a table of a
 * million slots fit in a core's cache, so walking a probe sequence rarely
 * waits for memory; the index is read on a tag match only. The home slot
 * comes from the hash's top bits, the tag from its low ones. Entries keep
 * the whole hash: a match needs all 64 bits equal before bytes are
 * compared, and growing needs it. Entries are packed in 24 bytes (a large
 * file has one per unique text) and live in fixed chunks, so they never
 * move and growth copies nothing. */

#define WHERE_BITS 40 /* offsets: 1 TiB of input */
#define LEN_BITS 22   /* text bytes: CP_DEDUPE_MAX_TEXT */
#define LINE_BITS 40
#define WHERE_MASK ((UINT64_C(1) << WHERE_BITS) - 1)
#define LEN_MASK ((UINT64_C(1) << LEN_BITS) - 1)
#define LINE_MASK ((UINT64_C(1) << LINE_BITS) - 1)
#define INTENT_MAX ((UINT32_C(1) << 24) - 1)

typedef struct entry {
  uint64_t hash;
  uint64_t at;   /* where (40 bits) | length << 40 (22) | kind << 62 */
  uint64_t line; /* line (40 bits) | intent id << 40 (24; 0 for none) */
} entry;

static inline uint64_t pack_at(uint64_t where, uint64_t len, unsigned enc) {
  return where | (len << WHERE_BITS) | ((uint64_t)enc << 62);
}
static inline uint64_t at_where(uint64_t at) { return at & WHERE_MASK; }
static inline size_t at_len(uint64_t at) { return (size_t)((at >> WHERE_BITS) & LEN_MASK); }
/* The kind of an entry's bytes: a cp_text_enc, or NORMALISED when they are
 * the normalised text itself (as they are for most texts), which then
 * needs neither decoding nor normalising again to be compared. */
#define NORMALISED 3u
static inline unsigned at_kind(uint64_t at) { return (unsigned)(at >> 62); }
static inline uint64_t pack_line(uint64_t line, uint32_t intent) {
  return (line & LINE_MASK) | ((uint64_t)intent << LINE_BITS);
}
static inline uint64_t line_of(uint64_t l) { return l & LINE_MASK; }
static inline uint32_t intent_of(uint64_t l) { return (uint32_t)(l >> LINE_BITS); }

/* Entry chunk k holds 2^(10+k) entries, so a small set stays small and a
 * large one takes few large chunks. */
#define ECHUNK0_BITS 10
#define ECHUNKS (32 - ECHUNK0_BITS + 1)

typedef struct table {
  uint8_t *tags;   /* 0: the slot is empty */
  uint32_t *slots; /* entry index; the tags follow in the same block */
  unsigned bits;
  size_t nents;
  entry *chunks[ECHUNKS];
} table;

static inline size_t chunk_bytes(unsigned k) {
  return ((size_t)1 << (ECHUNK0_BITS + k)) * sizeof(entry);
}

/* Tags and slots in one block, which makes it large enough for huge pages
 * sooner. Both are written at random as entries come and kept under 70%
 * full, so nearly every page of them is written: populated at once. */
static inline size_t slots_bytes(unsigned bits) {
  return ((size_t)1 << bits) * (1 + sizeof(uint32_t));
}

/* A table of 2^bits slots and no entry: 0, or -1 when out of memory. */
int cp_dtable_init(table *t, unsigned bits);
void cp_dtable_free(table *t); /* leaves t zeroed */
/* The slow half of tab_reserve: slots for `want` entries, filled again
 * from the entries. 0, or -1 when out of memory: the table as it was, or,
 * when not even its old size can be had again, without slots (the caller
 * fails for good). */
int cp_dtable_grow(table *t, size_t want);

static inline entry *ent(const table *t, uint32_t i) {
  uint64_t j = (uint64_t)i + ((uint64_t)1 << ECHUNK0_BITS);
  unsigned top = 63u - (unsigned)__builtin_clzll(j);
  return &t->chunks[top - ECHUNK0_BITS][j - ((uint64_t)1 << top)];
}

static inline size_t tab_home(const table *t, uint64_t h) {
  return (size_t)(h >> (64 - t->bits));
}

static inline uint8_t tag_of(uint64_t h) {
  uint8_t g = (uint8_t)h;
  return g ? g : 1;
}

/* Keeps the load under 70%, where linear probing stays short. 0, or -1
 * when out of memory (see cp_dtable_grow). */
static inline int tab_reserve(table *t, size_t more) {
  size_t want = t->nents + more;
  if (want * 10 <= ((size_t)1 << t->bits) * 7) return 0;
  return cp_dtable_grow(t, want);
}

/* Entries are written front to back, and a large chunk is populated a
 * window ahead of them rather than all at once: its end may never be
 * reached, and pages not written are not resident. */
#define EWINDOW ((size_t)8192)
_Static_assert(EWINDOW * sizeof(entry) % 4096 == 0, "windows start on a page");

/* The window of entries that starts at index i: its first entry in *p
 * (NULL when its chunk is not allocated yet) and its length. */
static inline size_t window_at(const table *t, size_t i, entry **p) {
  uint64_t j = (uint64_t)i + ((uint64_t)1 << ECHUNK0_BITS);
  unsigned top = 63u - (unsigned)__builtin_clzll(j);
  size_t within = (size_t)(j - ((uint64_t)1 << top));
  size_t left = ((size_t)1 << top) - within;
  entry *chunk = t->chunks[top - ECHUNK0_BITS];
  *p = chunk ? &chunk[within] : NULL;
  return left < EWINDOW ? left : EWINDOW;
}

/* Allocates, without populating, the chunks that entries [0, n) fall in;
 * returns how many entries they hold (fewer when memory runs out: only
 * chunks that exist are counted). */
size_t cp_dtable_alloc_entries(table *t, size_t n);

#define NO_ENTRY UINT32_MAX

/* Appends an entry and puts it in slot s (found empty by the caller).
 * NO_ENTRY, with nothing changed, when its chunk cannot be allocated. */
static inline uint32_t tab_insert(table *t, size_t s, const entry *e) {
  uint64_t j = (uint64_t)t->nents + ((uint64_t)1 << ECHUNK0_BITS);
  unsigned top = 63u - (unsigned)__builtin_clzll(j);
  size_t within = (size_t)(j - ((uint64_t)1 << top));
  if ((within & (EWINDOW - 1)) == 0) {
    unsigned k = top - ECHUNK0_BITS;
    if (!t->chunks[k]) t->chunks[k] = cp_pages_zalloc(chunk_bytes(k), 0, 1);
    if (!t->chunks[k]) return NO_ENTRY;
    entry *w;
    size_t n = window_at(t, t->nents, &w);
    cp_pages_populate(w, n * sizeof(entry)); /* cheap when done ahead (entries_ahead) */
  }
  uint32_t idx = (uint32_t)t->nents++;
  *ent(t, idx) = *e;
  t->tags[s] = tag_of(e->hash);
  t->slots[s] = idx;
  return idx;
}

/* Walks the probe sequence of h from *pos: returns 1 with *idx for each
 * entry whose hash is h (resume with the same *pos), 0 at the empty slot
 * that ends the chain, left in *pos. */
static inline int tab_next(const table *t, uint64_t h, size_t *pos,
                           uint32_t *idx) {
  size_t mask = ((size_t)1 << t->bits) - 1;
  uint8_t tag = tag_of(h);
  for (;;) {
    size_t s = *pos;
    uint8_t g = t->tags[s];
    if (!g) return 0;
    *pos = (s + 1) & mask;
    if (g == tag && ent(t, t->slots[s])->hash == h) {
      *idx = t->slots[s];
      return 1;
    }
  }
}

#endif
