/*
 * validate.h -- the streaming checks every utterance goes through (DESIGN
 * §4.1, §5): UTF-8 validity, byte order mark, control characters, length in
 * code points, file size; and the sink that collects problems with file,
 * line, column and byte offset. Knows nothing of file formats (reader.c
 * does) and never stops at the first problem.
 */
#ifndef CP_VALIDATE_H
#define CP_VALIDATE_H

#include <stddef.h>
#include <stdint.h>

#define CP_DEFAULT_MAX_BYTES 52428800u /* 50 MiB, the dataset upload limit */
#define CP_DEFAULT_MAX_CHARS 500u      /* an intent example's limit */
#define CP_DEFAULT_MAX_PROBLEMS 1000u

typedef struct cp_limits {
  uint64_t max_bytes; /* 0: no size limit */
  size_t max_chars;   /* per text, in code points; 0: no limit */
} cp_limits;

void cp_limits_init(cp_limits *lim); /* the defaults above */

typedef enum cp_problem_kind {
  CP_PROB_TOO_LARGE, /* the file is over max_bytes */
  CP_PROB_BOM,       /* U+FEFF */
  CP_PROB_UTF8,      /* ill-formed UTF-8 */
  CP_PROB_CONTROL,   /* a control character other than tab */
  CP_PROB_TOO_LONG,  /* more than max_chars code points */
  CP_PROB_SYNTAX,    /* JSON or CSV that does not parse */
  CP_PROB_FIELD,     /* a required field missing, empty or of the wrong type */
  CP_PROB_ANNOTATION,/* an annotation out of bounds or malformed */
  CP_PROB_KINDS
} cp_problem_kind;

const char *cp_problem_kind_name(cp_problem_kind kind);

typedef struct cp_problem {
  const char *file; /* owned by the sink */
  uint64_t line;    /* 1-based */
  uint64_t column;  /* 1-based, in code points */
  uint64_t offset;  /* byte offset in the file, 0-based */
  cp_problem_kind kind;
  char reason[160];
} cp_problem;

/* Every problem is counted; the first max_kept are kept for the report. */
typedef struct cp_problems {
  cp_problem *items;
  size_t n, max_kept;
  uint64_t total;
  uint64_t by_kind[CP_PROB_KINDS];
  char **files; /* every file name the kept problems point into */
  size_t nfiles;
  /* Memory ran out keeping a problem or a file name: the counts are whole,
   * the kept list may not be (and keeps nothing after that). */
  int out_of_memory;
} cp_problems;

void cp_problems_init(cp_problems *p, size_t max_kept);
void cp_problems_free(cp_problems *p);
/* Names the file the following problems belong to (copied). */
void cp_problems_set_file(cp_problems *p, const char *file);
void cp_problems_add(cp_problems *p, uint64_t line, uint64_t column,
                     uint64_t offset, cp_problem_kind kind, const char *fmt,
                     ...) __attribute__((format(printf, 6, 7)));

/* What the check of one text found. */
typedef struct cp_text_info {
  size_t chars;     /* code points; each ill-formed byte counts one */
  unsigned issues;  /* problems reported */
  int plain;        /* printable ASCII only: fast paths may be taken */
} cp_text_info;

/* Receives each problem of a text at its byte offset and code point index
 * within the text; the caller turns those into file positions. */
typedef void (*cp_issue_fn)(void *ud, size_t byte_off, size_t char_idx,
                            cp_problem_kind kind, const char *reason);

/* Checks one text (no line terminator): UTF-8, U+FEFF, control characters
 * (tab allowed; cr_note adds a hint about CRLF when a CR is found), length.
 * file_start says the text begins the file, which names a BOM as such. */
void cp_text_check(const cp_limits *lim, const char *s, size_t len,
                   int file_start, cp_issue_fn fn, void *ud,
                   cp_text_info *info);

/* cp_text_check for one line of a file: problems go to sink at the given
 * 1-based line, with columns from 1 and offsets from `offset`. */
void cp_line_check(const cp_limits *lim, cp_problems *sink, const char *s,
                   size_t len, uint64_t line, uint64_t offset,
                   cp_text_info *info);

#endif
