/*
 * normalize.h -- the named normalisations a text goes through before it is
 * compared for dedupe (DESIGN §5): none, trim, collapse (trim + inner white
 * space to one space) and casefold (collapse + Unicode NFKC case folding).
 * Only transforms text: it never judges whether a text is valid.
 */
#ifndef CP_NORMALIZE_H
#define CP_NORMALIZE_H

#include <stddef.h>

#include "buf.h"

typedef enum cp_norm_mode {
  CP_NORM_NONE,
  CP_NORM_TRIM,
  CP_NORM_COLLAPSE,
  CP_NORM_CASEFOLD
} cp_norm_mode;

/* "none" | "trim" | "collapse" | "casefold" -> 0 and *mode, else -1. */
int cp_norm_mode_parse(const char *name, cp_norm_mode *mode);
const char *cp_norm_mode_name(cp_norm_mode mode);

/* Normalises s[0..len). The result is a span of s itself when the mode
 * needs no rewriting (always for none and trim), otherwise it is written to
 * scratch (reset first). *out stays valid until s or scratch change.
 * Ill-formed UTF-8 never fails: it is kept byte for byte, and casefold then
 * lower-cases only its ASCII letters. Running out of memory does: scratch
 * is left failed (cp_buf_ok) and *out is empty, so a caller that writes to
 * scratch checks it before trusting the result. */
void cp_normalize(cp_norm_mode mode, const char *s, size_t len,
                  cp_buf *scratch, const char **out, size_t *out_len);

/* cp_normalize for text known to be printable ASCII only (as a reader
 * reports it): the same result, without decoding. */
void cp_normalize_plain(cp_norm_mode mode, const char *s, size_t len,
                        cp_buf *scratch, const char **out, size_t *out_len);

/* NFKC case folding alone, white space untouched: what "equal after case
 * folding" means for the examples of one intent batch. Writes to scratch
 * (failed when memory runs out, as for cp_normalize). */
void cp_casefold(const char *s, size_t len, cp_buf *scratch,
                 const char **out, size_t *out_len);

/* Bounds of s without leading and trailing Unicode white space. */
void cp_trim_span(const char *s, size_t len, size_t *start, size_t *end);
/* 1 when s is empty or only white space. */
int cp_is_blank(const char *s, size_t len);

#endif
