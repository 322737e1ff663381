/*
 * headers.h -- one line of an HTTP answer's head, as libcurl hands it over:
 * the status line, a field, or nothing to keep. Pure text in, spans out:
 * no allocation, no state, no knowledge of calls or of libcurl.
 */
#ifndef CP_HEADERS_H
#define CP_HEADERS_H

#include <stddef.h>

typedef enum cp_header_kind {
  CP_HEADER_NONE,   /* the blank line that ends the head, an obs-fold, junk */
  CP_HEADER_STATUS, /* "HTTP/1.1 429 Too Many Requests": a new answer */
  CP_HEADER_FIELD   /* "Name: value" */
} cp_header_kind;

typedef struct cp_header_line {
  cp_header_kind kind;
  /* spans of the line given (never past it): the field's name as sent
   * (lower-case it to compare), its value without the white space around
   * it; the status line's reason phrase in value (empty when none) */
  const char *name, *value;
  size_t name_len, value_len;
} cp_header_line;

/* Reads line[0..len), with or without its CR LF. */
void cp_header_line_parse(const char *line, size_t len, cp_header_line *out);

#endif
