/*
 * reader.h -- the input formats users keep utterances in: one utterance a
 * line, JSON Lines ({"text", "intent", "annotations"?}) and CSV with a
 * header (text,intent[,...], RFC 4180 quoting). A reader walks a byte span
 * (usually a read-only mapping released behind it) record by record and
 * reports malformed input to a problem sink with line, column and offset.
 * It never deduplicates and never holds more than the current record.
 */
#ifndef CP_READER_H
#define CP_READER_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"
#include "json.h"
#include "validate.h"

typedef enum cp_format { CP_FMT_LINES, CP_FMT_JSONL, CP_FMT_CSV } cp_format;

/* "lines" | "jsonl" | "csv" -> 0 and *fmt, else -1. */
int cp_format_parse(const char *name, cp_format *fmt);
const char *cp_format_name(cp_format fmt);
/* From the file name: .jsonl/.ndjson -> jsonl, .csv -> csv, else lines. */
cp_format cp_format_guess(const char *path);

/* How a record's text is written in the input, so that it can be decoded
 * again later from its raw bytes alone (dedupe re-reads first occurrences
 * instead of keeping a copy of every text). */
typedef enum cp_text_enc {
  CP_TEXT_RAW = 0, /* the bytes are the text */
  CP_TEXT_JSON = 1,/* the inside of a JSON string literal, with escapes */
  CP_TEXT_CSV = 2  /* the inside of a quoted CSV field, with "" escapes */
} cp_text_enc;

/* Decodes raw bytes written in enc. The result is raw itself for
 * CP_TEXT_RAW, else written to scratch (reset first; left failed, with an
 * empty result, when memory runs out). */
void cp_text_decode(cp_text_enc enc, const char *raw, size_t len,
                    cp_buf *scratch, const char **out, size_t *out_len);

typedef struct cp_record {
  const char *text; /* decoded text; valid until the next call */
  size_t len;
  const char *intent; /* NULL for line files or when missing */
  size_t intent_len;
  const cp_json *annotations; /* JSON Lines only; valid until the next call */
  uint64_t line;   /* 1-based line where the record starts */
  uint64_t offset; /* byte offset where the record starts */
  size_t span;     /* bytes it takes in the input, line ending included */
  const char *raw; /* the text as written in the input, and how */
  size_t raw_len;
  cp_text_enc enc;
  size_t chars; /* code points of text */
  int blank;    /* text empty or only white space */
  int invalid;  /* a problem was reported for this record */
  int plain;    /* text is printable ASCII only */
} cp_record;

typedef struct cp_reader cp_reader;

/* A reader over data[0..len), which must outlive it. name labels problems
 * (copied). Problems go to sink (borrowed), which the reader points at
 * name. lim NULL means the defaults; NULL when out of memory. The reader
 * never looks past the size limit (lim->max_bytes): an input over it is
 * reported too large, at the first byte past the limit, and its records
 * end with the last one that lies wholly within the limit. */
cp_reader *cp_reader_new(const char *name, const char *data, size_t len,
                         cp_format fmt, const cp_limits *lim,
                         cp_problems *sink);
/* Says that data holds only the first len bytes of an input of `size`
 * bytes, cut at the size limit (a file mapped no further than its limit,
 * cp_file_map_open): len must be at least the limit, and the report of
 * the size names the whole input's. Call before the first record. */
void cp_reader_set_size(cp_reader *r, uint64_t size);
/* 1 with *rec filled, 0 at the end of the input -- or once memory ran
 * out, which cp_reader_failed then says: the records read are not all. */
int cp_reader_next(cp_reader *r, cp_record *rec);
int cp_reader_failed(const cp_reader *r);
struct cp_file_map;
/* Says that data is m's mapping and that the caller will not look at the
 * bytes of a record longer than longer_than bytes: the reader reads such
 * a record in pieces and drops each piece's pages behind it, so that one
 * very long line never needs to be resident as a whole (a JSON Lines
 * record that long is reported as too long, not parsed). Should the
 * caller look after all, the pages are read in again. */
void cp_reader_drop_long(cp_reader *r, struct cp_file_map *m,
                         size_t longer_than);
/* Bytes consumed so far. */
size_t cp_reader_pos(const cp_reader *r);
void cp_reader_free(cp_reader *r);

/* A file mapped read-only, as far as its size limit. Pages are read on
 * demand and can be dropped again (cp_file_map_release), so a reader
 * streams through a file larger than memory would like with a bounded
 * resident set. */
typedef struct cp_file_map {
  const char *data;
  size_t size;        /* bytes mapped: the whole file, or up to the limit */
  uint64_t file_size; /* the file's own size */
  int fd;
  int mapped;
} cp_file_map;

/* Opens the regular file at path and maps its first `limit` bytes (all of
 * it when limit is 0 or the file is no larger): nothing past the limit is
 * ever read. Never blocks: a FIFO, a device, a directory or a socket is
 * refused as such, before it is opened where that could wait for a
 * writer. 0, or -1 with a message in err naming the file and the cause
 * (missing, not a regular file, unreadable, ...), or -2 with one when the
 * process or the system ran out of something (file descriptors: "too
 * many open files"; memory) rather than the file being at fault. A
 * mapping refused for want of memory also counts as an allocation
 * failure (cp_alloc_failures). */
int cp_file_map_open(cp_file_map *m, const char *path, uint64_t limit,
                     char *err, size_t errlen);
/* Drops the resident pages of [from, to); later reads fault them back in. */
void cp_file_map_release(cp_file_map *m, size_t from, size_t to);
/* Maps the pages of [from, to) in one call, ahead of reading them front
 * to back, instead of a page fault every few pages as they are reached.
 * Only a hint: failures are ignored. */
void cp_file_map_prefetch(cp_file_map *m, size_t from, size_t to);
/* Copies [from, to) of the file into dst, reading it rather than touching
 * the mapping: for a look at a part read once, a copy is cheaper than
 * mapping its pages in and dropping them again (page-table work per 4 KiB,
 * dearest under hypervisors that shadow page tables). */
void cp_file_map_copy(const cp_file_map *m, size_t from, size_t to, char *dst);
void cp_file_map_close(cp_file_map *m);

#endif
