/*
 * handover.c -- the two threads of a check's pass over a large input: the
 * scanner hands blocks of records to the prober, and both compare and
 * confirm what the other has left, in input order; on a small input one
 * thread does it all. Owns the lock, the blocks' turns and the queue of
 * candidate sets; must not read records, probe or count: that is
 * check.c's work, which it only runs.
 */
#include "handover.h"

#include <string.h>
#include <uv.h>

#include "pages.h"

/* Probing side, lock held when threaded: hands the filled set to the
 * confirming side unless it is still busy with the other one (the set then
 * just grows a little; probing never waits for confirming). */
static void queue_set(cp_check *c) {
  cset *set = &c->sets[c->filling];
  if (!c->threaded) {
    cp_check_confirm(c, set);
    return;
  }
  if (c->queued >= 0) return;
  c->queued = c->filling;
  c->filling ^= 1;
  uv_cond_broadcast(&c->cv);
}

void cp_handover_set_full(cp_check *c) {
  if (c->threaded) uv_mutex_lock(&c->mu);
  queue_set(c);
  if (c->threaded) uv_mutex_unlock(&c->mu);
}

/* Either thread, lock held: compares one region of the set being
 * confirmed, unlocked. Returns 0 when none is left to take. */
static int help_confirm(cp_check *c, scratch *sc) {
  cset *set = c->job;
  if (!set || c->job_next >= set->ntodo) return 0;
  size_t r = set->todo[c->job_next++];
  uv_mutex_unlock(&c->mu);
  cp_check_confirm_region(c, set, r, sc);
  uv_mutex_lock(&c->mu);
  c->job_done++;
  uv_cond_broadcast(&c->cv);
  return 1;
}

/* Scanning side, lock held: confirms a queued set, if any. The probing
 * side takes regions too whenever it would otherwise wait for a block. */
static int run_queued(cp_check *c) {
  if (c->queued < 0) return 0;
  cset *set = &c->sets[c->queued];
  if (set->n) {
    uv_mutex_unlock(&c->mu);
    cp_check_confirm_sort(c, set);
    uv_mutex_lock(&c->mu);
    c->job = set;
    c->job_next = c->job_done = 0;
    uv_cond_broadcast(&c->cv);
    while (help_confirm(c, &c->sc)) {
    }
    while (c->job_done < set->ntodo) uv_cond_wait(&c->cv, &c->mu);
    c->job = NULL;
    uv_mutex_unlock(&c->mu);
    cp_check_confirm_count(c, set);
    uv_mutex_lock(&c->mu);
  }
  c->queued = -1;
  uv_cond_broadcast(&c->cv);
  return 1;
}

/* Either thread, lock held: compares and counts the next probed block
 * unless the other thread is at it. One block at a time and in order, as
 * counting must see repeats in input order. Usually the scanner does it,
 * before it refills the block; the prober takes one whenever it would
 * wait for a block, which keeps the two threads busy when the scanning
 * side is the slower. */
static int take_compare(cp_check *c, size_t src, scratch *sc) {
  if (c->comparing || c->compared >= c->head) return 0;
  c->comparing = 1;
  block *b = &c->blocks[c->compared % NBLOCKS];
  uv_mutex_unlock(&c->mu);
  cp_check_compare_block(c, src, b, sc);
  uv_mutex_lock(&c->mu);
  c->compared++;
  c->comparing = 0;
  uv_cond_broadcast(&c->cv);
  return 1;
}

/* Either thread, after the last block is handed over: compares and
 * confirms until every block is counted. */
static void drain(cp_check *c, size_t src, scratch *sc, int scanner) {
  uv_mutex_lock(&c->mu);
  while (c->compared < c->tail)
    if (!take_compare(c, src, sc) &&
        !(scanner ? run_queued(c) : help_confirm(c, sc)))
      uv_cond_wait(&c->cv, &c->mu);
  uv_mutex_unlock(&c->mu);
}

/* Scanning side: populates the table's entry windows that probing fills
 * next, sparing the probing thread, the busier one, the page faults. Only
 * the chunks allocated before scanning began are touched: the probing
 * side allocates any others, unseen here. */
static void entries_ahead(cp_check *c, size_t want) {
  if (want > c->ahead_end) want = c->ahead_end;
  while (c->ahead < want) {
    entry *w;
    size_t n = window_at(&c->t, c->ahead, &w);
    cp_pages_populate(w, n * sizeof(entry));
    c->ahead += n;
  }
}

static void block_reset(block *b) {
  b->n = 0;
  b->last = 0;
  /* Long texts may have grown it: give that back, not keep it for good. */
  if (b->text.cap > 2 * BLOCK_BYTES) cp_buf_free(&b->text);
  cp_buf_reset(&b->text);
}

block *cp_handover_block(cp_check *c, size_t src, block *b) {
  if (!c->threaded) {
    cp_check_consume(c, src, b);
    cp_check_compare_block(c, src, b, &c->probe_sc);
    block_reset(b);
    return b;
  }
  uv_mutex_lock(&c->mu);
  c->tail++;
  uv_cond_broadcast(&c->cv);
  size_t want = c->probed_ents + AHEAD_ENTS;
  uv_mutex_unlock(&c->mu);
  entries_ahead(c, want);
  uv_mutex_lock(&c->mu);
  run_queued(c);
  /* The block NBLOCKS back is refilled next: it must be probed and
   * counted first. */
  while (c->compared + NBLOCKS <= c->tail)
    if (!take_compare(c, src, &c->sc) && !run_queued(c))
      uv_cond_wait(&c->cv, &c->mu);
  uv_mutex_unlock(&c->mu);
  block *next = &c->blocks[c->tail % NBLOCKS];
  block_reset(next);
  return next;
}

block *cp_handover_first(cp_check *c) {
  block *b = &c->blocks[c->tail % NBLOCKS];
  block_reset(b);
  return b;
}

/* Faults in a scratch's region buffer while its thread would otherwise
 * wait: the pass over the last set is on the critical path, and fresh
 * pages are dear. */
static void scratch_warm(scratch *sc) {
  size_t n = ((size_t)1 << REGION_SHIFT) + ((size_t)4 << 10);
  if (cp_buf_reserve(&sc->view, n) == 0) memset(sc->view.data, 0, n);
  else cp_buf_reset(&sc->view); /* only a head start: the pass asks again */
}

void cp_handover_last(cp_check *c, size_t src, block *b) {
  cp_handover_block(c, src, b);
  if (c->threaded) {
    scratch_warm(&c->sc); /* the prober is still at the last blocks */
    drain(c, src, &c->sc, 1);
  }
}

void cp_handover_start(cp_check *c, size_t more, void (*scan)(void *),
                       void *arg) {
  c->ahead_end = cp_dtable_alloc_entries(&c->t, c->t.nents + more);
  c->probed_ents = c->t.nents;
  c->head = c->tail = c->compared = 0;
  c->comparing = 0;
  if (uv_mutex_init(&c->mu)) {
    c->threaded = 0;
  } else if (uv_cond_init(&c->cv)) {
    uv_mutex_destroy(&c->mu);
    c->threaded = 0;
  } else if (uv_thread_create(&c->scanner, scan, arg)) {
    uv_cond_destroy(&c->cv);
    uv_mutex_destroy(&c->mu);
    c->threaded = 0;
  }
}

void cp_handover_probe(cp_check *c, size_t src) {
  scratch_warm(&c->probe_sc);
  for (;;) {
    uv_mutex_lock(&c->mu);
    while (c->head == c->tail)
      if (!take_compare(c, src, &c->probe_sc) && !help_confirm(c, &c->probe_sc))
        uv_cond_wait(&c->cv, &c->mu);
    block *b = &c->blocks[c->head % NBLOCKS];
    uv_mutex_unlock(&c->mu);
    cp_check_consume(c, src, b);
    int last = b->last;
    uv_mutex_lock(&c->mu);
    c->head++;
    c->probed_ents = c->t.nents;
    uv_cond_broadcast(&c->cv);
    uv_mutex_unlock(&c->mu);
    if (last) break;
  }
  drain(c, src, &c->probe_sc, 0);
  uv_thread_join(&c->scanner);
  uv_cond_destroy(&c->cv);
  uv_mutex_destroy(&c->mu);
  c->threaded = 0;
  /* A set the scanner did not get to is confirmed here, before the one
   * being filled: passes stay in input order. */
  if (c->queued >= 0) {
    cp_check_confirm(c, &c->sets[c->queued]);
    c->queued = -1;
  }
}
