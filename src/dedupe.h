/*
 * dedupe.h -- exact dedupe and cross-intent conflicts (DESIGN §5): texts are
 * normalised, hashed with 64-bit XXH3 into an open-addressing table, and a
 * hash match becomes a duplicate only after the bytes compare equal, so no
 * false duplicate is ever reported. Two front ends share the table
 * (dtable.c):
 *   - cp_dedupe_set (dedupe.c): an in-memory set answering each add at
 *     once (Lua's cp.dedupe.new); it keeps a copy of each unique text.
 *   - cp_check (check.c, its threads in handover.c): the report behind
 *     `cogpipe check` over whole files; it keeps no copy of the texts but
 *     their place in the (mapped) input, and confirms hash matches in
 *     batches, sweeping the input in order so the resident set stays
 *     small. Its memory has a bound whatever the input: when the table of
 *     distinct texts would pass it, the texts are split by hash into parts
 *     that fit, each counted in a pass of its own over the input.
 * Neither sends anything nor decides exit codes.
 */
#ifndef CP_DEDUPE_H
#define CP_DEDUPE_H

#include <stddef.h>
#include <stdint.h>

#include "normalize.h"
#include "reader.h"
#include "validate.h"

typedef enum cp_dedupe_result {
  CP_DEDUPE_NEW,
  CP_DEDUPE_DUPLICATE, /* seen before under the same intent (or none) */
  CP_DEDUPE_CONFLICT   /* seen before under a different intent */
} cp_dedupe_result;

uint64_t cp_dedupe_hash(const char *s, size_t len);

/* ---- in-memory set ------------------------------------------------------- */

typedef struct cp_dedupe_set cp_dedupe_set;

/* The first occurrence of a text. intent points into the set and stays
 * valid until the next add. */
typedef struct cp_dedupe_hit {
  uint64_t line;
  const char *intent; /* NULL when it was added without one */
  size_t intent_len;
} cp_dedupe_hit;

cp_dedupe_set *cp_dedupe_set_new(cp_norm_mode mode); /* NULL: out of memory */
void cp_dedupe_set_free(cp_dedupe_set *s);
/* 1 once memory ran out in the set: a text may have gone unstored, so its
 * answers are not to be trusted from then on (adds return NEW). */
int cp_dedupe_set_failed(const cp_dedupe_set *s);
cp_norm_mode cp_dedupe_set_mode(const cp_dedupe_set *s);
/* Adds text (normalised by the set's mode) seen at `line` (< 2^40) under
 * intent (NULL: none; texts without an intent never conflict). On
 * DUPLICATE and CONFLICT, *first describes the first occurrence and nothing
 * is added. A text over CP_DEDUPE_MAX_TEXT bytes once normalised is not
 * stored (NEW is returned): the caller checks lengths first. */
#define CP_DEDUPE_MAX_TEXT (((size_t)1 << 22) - 1)
cp_dedupe_result cp_dedupe_set_add(cp_dedupe_set *s, const char *text,
                                   size_t len, const char *intent,
                                   size_t intent_len, uint64_t line,
                                   cp_dedupe_hit *first);
/* 1 and *first when the text is in the set. */
int cp_dedupe_set_find(cp_dedupe_set *s, const char *text, size_t len,
                       cp_dedupe_hit *first);
size_t cp_dedupe_set_count(const cp_dedupe_set *s);
/* Tests only: keeps just the bits of each hash under mask, to force the
 * collisions the byte comparison must catch. */
void cp_dedupe_set_test_mask(cp_dedupe_set *s, uint64_t mask);

/* ---- whole-file check ----------------------------------------------------- */

/* How much of the input a check keeps mapped by default. */
#define CP_CHECK_RESIDENT_DEFAULT ((size_t)20 << 20)
/* What a check spends by default on its table, its candidate sets, the
 * resident head of the input and room for its longest texts; the rest of
 * its memory (blocks of records in flight, buffers, the program and the
 * pages of the libraries it links, libcurl's and libcrypto's among them)
 * is about 17 MiB more. */
#define CP_CHECK_MEMORY_DEFAULT ((size_t)32 << 20)
/* The longest text (in bytes, as read and once normalised) a check
 * deduplicates; a longer one is reported as a problem instead. */
#define CP_CHECK_MAX_TEXT ((size_t)1 << 20)
/* The texts of the listed duplicates, and those of the listed conflicts,
 * add up to at most this many bytes each: the list ends before the text
 * that would pass it. */
#define CP_CHECK_LISTED_TEXT ((size_t)2 << 20)

typedef struct cp_check_opts {
  cp_norm_mode mode;
  cp_limits limits;
  size_t max_problems; /* kept for the report; all are counted */
  size_t max_items;    /* duplicates kept, and conflicts kept */
  size_t resident_bytes; /* the head of the input kept mapped, so that
                            repeats of its texts are compared at once;
                            those of later texts, by re-reading the input.
                            Less of it stays mapped when the table or long
                            texts need the memory. */
  size_t memory_bytes;     /* the table, the candidate sets, the resident
                              head and room for the longest texts,
                              together; 0: CP_CHECK_MEMORY_DEFAULT */
  uint64_t test_hash_mask; /* tests only; 0 keeps full hashes */
} cp_check_opts;

void cp_check_opts_init(cp_check_opts *o);

/* One repeat: a duplicate, or a conflict when the intents differ. */
typedef struct cp_check_item {
  const char *file; /* owned by the check */
  uint64_t line;
  const char *first_file; /* where the text was first seen */
  uint64_t first_line;
  char *text;         /* the normalised text; owned by the check */
  char *intent;       /* owned; NULL for files without intents */
  char *first_intent; /* owned; NULL for files without intents */
} cp_check_item;

typedef struct cp_check_report {
  uint64_t files, bytes; /* bytes: the files' sizes, read or not */
  uint64_t lines;       /* records read: lines, JSON lines, CSV rows */
  uint64_t blank_lines; /* empty or white space only; skipped */
  uint64_t invalid;     /* records with a problem; not deduplicated */
  uint64_t utterances;  /* valid, non-blank records */
  uint64_t unique;      /* distinct normalised texts among them */
  uint64_t duplicates;  /* repeats under the same intent */
  uint64_t conflicts;   /* repeats under a different intent */
  double success_rate;  /* unique / lines * 100 (DESIGN §4.1) */
  cp_problems problems;
  cp_check_item *dups; /* the first max_items of each (see also
                          CP_CHECK_LISTED_TEXT) */
  size_t n_dups;
  cp_check_item *conflict_items;
  size_t n_conflicts;
  unsigned passes; /* passes over the input that counted repeats: 1, or
                      more when the distinct texts were too many at once */
} cp_check_report;

typedef struct cp_check cp_check;

cp_check *cp_check_new(const cp_check_opts *o); /* NULL: out of memory */
/* 1 once memory ran out in the check (on any of its threads): the report
 * is incomplete and must not be given as a result. A file checked after
 * that fails at once ("out of memory"). */
int cp_check_failed(const cp_check *c);
/* Checks one more file; texts are compared across every file of the check.
 * Nothing past the size limit (opts.limits.max_bytes) is read. Returns 0,
 * or -1 (the file is at fault) or -2 (the process or the system is out of
 * file descriptors or memory) with a message in err when the file cannot
 * be read, as cp_file_map_open; the check itself goes on. The file stays
 * open until cp_check_free: a pass may read it again. */
int cp_check_file(cp_check *c, const char *path, cp_format fmt, char *err,
                  size_t errlen);
/* The same over bytes in memory, which must live until cp_check_free. */
void cp_check_buffer(cp_check *c, const char *name, const char *data,
                     size_t len, cp_format fmt);
/* Confirms what is pending, runs the passes still needed, and returns the
 * report, owned by the check. Nothing more can be checked after it. */
const cp_check_report *cp_check_finish(cp_check *c);
void cp_check_free(cp_check *c);

#endif
