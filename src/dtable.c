/*
 * dtable.c -- the parts of the hash table of exact dedupe that allocate
 * (dtable.h): slots made, grown and freed, entry chunks made ahead. Must
 * not probe or compare: that is inline in dtable.h, for the loops that
 * use it.
 */
#include "dtable.h"

#include <string.h>

/* 0, or -1 when out of memory (t as it was). */
static int slots_alloc(table *t, unsigned bits) {
  uint32_t *slots = cp_pages_zalloc(slots_bytes(bits), 1, 1);
  if (!slots) return -1;
  t->bits = bits;
  t->slots = slots;
  t->tags = (uint8_t *)(t->slots + ((size_t)1 << bits));
  return 0;
}

static void slots_free(table *t) {
  cp_pages_free(t->slots, slots_bytes(t->bits));
}

int cp_dtable_init(table *t, unsigned bits) {
  memset(t, 0, sizeof *t);
  return slots_alloc(t, bits);
}

void cp_dtable_free(table *t) {
  for (unsigned k = 0; k < ECHUNKS; k++)
    if (t->chunks[k]) cp_pages_free(t->chunks[k], chunk_bytes(k));
  slots_free(t);
  memset(t, 0, sizeof *t);
}

int cp_dtable_grow(table *t, size_t want) {
  unsigned bits = t->bits, old_bits = t->bits;
  while (want * 10 > ((size_t)1 << bits) * 7) bits++;
  /* The old slots go first: holding both would raise the peak by the old
   * array, which the memory bound of a check has no room for. */
  slots_free(t);
  int rc = 0;
  if (slots_alloc(t, bits)) {
    rc = -1;
    if (slots_alloc(t, old_bits)) { /* not even that: an unusable table */
      t->slots = NULL;
      t->tags = NULL;
      return -1;
    }
  }
  size_t mask = ((size_t)1 << t->bits) - 1;
  for (size_t i = 0; i < t->nents; i++) {
    uint64_t h = ent(t, (uint32_t)i)->hash;
    size_t s = tab_home(t, h);
    while (t->tags[s]) s = (s + 1) & mask;
    t->tags[s] = tag_of(h);
    t->slots[s] = (uint32_t)i;
  }
  return rc;
}

size_t cp_dtable_alloc_entries(table *t, size_t n) {
  size_t held = 0;
  for (unsigned k = 0; k < ECHUNKS && held < n; k++) {
    if (!t->chunks[k]) t->chunks[k] = cp_pages_zalloc(chunk_bytes(k), 0, 1);
    if (!t->chunks[k]) break;
    held += (size_t)1 << (ECHUNK0_BITS + k);
  }
  return held;
}
