/*
 * check_internal.h -- what the two files of the whole-file check share:
 * its state (struct cp_check), the blocks and candidate sets its threads
 * pass between them, and the work check.c lends the hand-over
 * (handover.c). For those two files only: the check's API is dedupe.h.
 */
#ifndef CP_CHECK_INTERNAL_H
#define CP_CHECK_INTERNAL_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "buf.h"
#include "dedupe.h"
#include "dtable.h"

#define BLOCK_RECS 8192                 /* records handed over at once */
#define BLOCK_BYTES ((size_t)1 << 20)   /* input a block spans, or text it
                                           copies, before it is handed over */
#define HLL_BITS 12      /* HyperLogLog registers: 2^this, within 2% */
#define NBLOCKS 3                       /* blocks in flight */
#define REGION_SHIFT 18                 /* 256 KiB regions for the sweep */
#define INTENT_CHUNK 1024
#define INTENT_TOP 4096 /* intents beyond the first 4M are not told apart */
/* Table entries that the scanner readies ahead of the prober
 * (entries_ahead in handover.c); the memory bound counts them. */
#define AHEAD_ENTS (2 * EWINDOW)

typedef struct source {
  char *name;
  cp_file_map map; /* mapped files; buffers have map.mapped == 0 */
  const char *data;
  size_t size;     /* bytes to read: up to the size limit */
  uint64_t file_size;
  cp_format fmt;
  uint64_t base;   /* global offset of data[0] */
  size_t pos;      /* probing is done with data[0..pos) */
  size_t released; /* pages below this were last dropped */
  size_t mapped;   /* pages below this were mapped ahead of the reader */
} source;

typedef struct pending {
  uint64_t hash;
  uint64_t at;   /* as in entry */
  uint64_t line; /* as in entry */
  uint32_t text, len; /* its normalised text: in the block, or (SPAN) in
                         the input, where `at` points */
} pending;

#define SPAN 0x80000000u

/* A record of a block that repeats a text of the resident head, as the
 * prober found it: it is compared and counted (take_compare) before the
 * block is filled again. */
typedef struct match {
  uint64_t fat, fline; /* the entry it matched */
  uint32_t rec;        /* its index in the block */
} match;

typedef struct block {
  _Alignas(64) pending *items; /* the scanner writes one while the prober reads another */
  size_t n;
  cp_buf text;
  size_t start, end; /* reader positions before its first record and
                        after its last */
  int last;   /* the source's final block */
  size_t lmax; /* the longest text the scanner had seen when it filled it */
  uint64_t keep; /* the resident head when it was probed */
  match *matches;
  size_t nmatches;
} block;

typedef struct cand {
  uint64_t line;  /* the repeat: source << 40 | line */
  uint64_t fat;   /* the entry its hash matched */
  uint64_t fline;
  uint32_t text, len; /* its normalised text in the set */
  uint32_t intent, pad;
} cand;

/* One confirming pass's worth of candidates. */
typedef struct cset {
  cand *cands;    /* cbytes of them (set_grow), cready mapped (set_ready) */
  size_t n, cbytes, cready;
  char *texts;    /* their texts back to back: tcap bytes, tready mapped */
  size_t tlen, tcap, tready;
  uint32_t *order; /* the sweep's order: by region of the first occurrence */
  size_t *start;   /* where each region's part of order begins (nreg + 1) */
  size_t *todo;    /* the regions that have candidates */
  size_t nreg, ntodo;
  uint8_t *ok;
  size_t order_cap;
} cset;

/* Decode and normalise scratch, one per thread that confirms, and the copy
 * of the earlier input that the region being confirmed compares against. */
typedef struct scratch {
  cp_buf dec, norm, view;
} scratch;

/* A repeat kept for the report. A long text is not copied: it is the
 * normalised text of the first occurrence, read again from the input when
 * the report is made, so that a list of long texts takes no memory while
 * the check runs. */
typedef struct item {
  uint64_t key;       /* the repeat: source << 40 | line */
  uint64_t first_key; /* its first occurrence, the same way */
  uint64_t fat;       /* the first occurrence's bytes, as in entry */
  uint32_t intent, first_intent;
  char *text; /* owned; the text itself when short, or for a repeat of a
                 hash collision, whose first occurrence's place is not
                 known; else NULL */
} item;

#define ITEM_COPY 256 /* texts up to this long are copied at once */

/* The items one side keeps: duplicates ([0]) or conflicts ([1]), in input
 * order. */
typedef struct kept {
  item *v;
  size_t n, cap;
} kept;

/* Repeats counted by one side. The prober counts those it settles against
 * the cache, the confirming passes the others; each sees its own in input
 * order, and the report merges the two. A text whose 64-bit hash matched
 * another text's is settled in the side set of the side that saw it: all
 * texts with one hash go to the same table entry, so the same side. */
typedef struct tally {
  uint64_t duplicates, conflicts, unique;
  kept items[2];
  cp_dedupe_set *side;
  uint64_t *side_keys; /* (source, line) codes of the side set's texts, by
                          the "line" the set keeps for them (a 40-bit
                          number, too small for the code) */
  size_t nside;
} tally;

/* The two threads each write their own part, a cache line apart from the
 * other's: counters bumped per record on a line the other thread writes
 * too would bounce between the cores at every record. */
struct cp_check {
  cp_check_opts o;
  source *srcs;
  size_t nsrcs;
  uint64_t total; /* global offset of the next source */
  uint64_t keep;  /* input below this global offset stays mapped; only
                     lowered (lower_keep), read and written atomically */
  int finished;
  /* Passes. The first pass over each file validates and counts records;
   * the repeats are counted in it too unless the table overflowed, and
   * else in passes over the parts of the hash space (part_bits > 0). */
  int primary;         /* the pass validates and counts records */
  int overflow;        /* the table passed its bound: this pass no longer
                          counts repeats (atomic: the scanner reads it) */
  int unbounded;       /* the part cannot be split further: no bound */
  unsigned part_bits;  /* records whose hash is in part `part` of 2^bits */
  uint64_t part;
  size_t part_expect;  /* the part's distinct texts, as estimated */
  uint64_t table_bytes; /* the table's and candidate sets' memory as the
                           prober last planned it, for the scanner; atomic */
  cp_problems *sink;   /* problems: the report's, or `muted` */
  cp_problems muted;   /* problems found again by later passes */
  tally acc;           /* what finished passes counted */
  uint8_t hll[(size_t)1 << HLL_BITS]; /* distinct hashes past an overflow */
  /* The hand-over, under mu. */
  block blocks[NBLOCKS];
  size_t head, tail; /* blocks handed over and not yet probed: [head, tail) */
  size_t compared;   /* blocks whose matches are counted: [0, compared) */
  int comparing;     /* a thread is counting block `compared` */
  size_t probed_ents; /* entries in the table after the last probed block */
  int queued;        /* the set waiting to be confirmed, or -1 */
  cset *job;         /* the set whose regions are being compared, */
  size_t job_next, job_done; /* the next region to take, those done */
  uv_mutex_t mu;
  uv_cond_t cv;
  uv_thread_t scanner;
  int threaded;
  /* Scanning and counting (the scanning thread, or the caller at the end). */
  _Alignas(64) cp_check_report rep;
  cp_dedupe_set *intents;          /* names -> ids (the line field holds the id) */
  char **intent_names[INTENT_TOP]; /* id - 1 -> name, in chunks that never move */
  size_t nintents;
  cp_buf sn;     /* normalise scratch */
  size_t lmax;   /* the longest text seen so far */
  scratch sc;    /* decode and normalise scratch of comparing and confirming */
  tally now;     /* repeats of the resident head */
  tally later;   /* the confirming passes' */
  size_t ahead;     /* table entries [0, ahead) are populated (entries_ahead) */
  size_t ahead_end; /* entries in the chunks allocated before scanning */
  /* Probing (the calling thread). */
  _Alignas(64) table t;
  scratch probe_sc; /* its decode and normalise scratch */
  cset sets[2];
  int filling; /* the set being filled */
  /* Memory ran out on some thread: the threads go on handing blocks over
   * (so none waits for ever) but the report is not a result. */
  atomic_int failed;
};

/* ---- the work of a pass (check.c), as the hand-over runs it ------------ */

/* Probing side: takes one block of pending records. */
void cp_check_consume(cp_check *c, size_t src, block *b);
/* Compares and counts the repeats of resident texts the prober found in
 * block b of source src, with the decode and normalise scratch sc. */
void cp_check_compare_block(cp_check *c, size_t src, block *b, scratch *sc);
/* Confirming a set: sort its candidates by region, compare each region
 * (either thread may take one), count them in input order. */
void cp_check_confirm_sort(cp_check *c, cset *set);
void cp_check_confirm_region(cp_check *c, cset *set, size_t r, scratch *sc);
void cp_check_confirm_count(cp_check *c, cset *set);
/* All three, when no scanner runs. */
void cp_check_confirm(cp_check *c, cset *set);

#endif
