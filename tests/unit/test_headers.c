/* Unit tests for headers.c: the lines of an answer's head as a client
 * meets them, tidy and not. */
#include <string.h>

#include "check.h"
#include "headers.h"

static cp_header_line parse(const char *s) {
  cp_header_line h;
  cp_header_line_parse(s, strlen(s), &h);
  return h;
}

static int span_is(const char *p, size_t n, const char *want) {
  return n == strlen(want) && memcmp(p, want, n) == 0;
}

static void status_lines(void) {
  cp_header_line h = parse("HTTP/1.1 429 Too Many Requests\r\n");
  CHECK_INT(h.kind, CP_HEADER_STATUS);
  CHECK(span_is(h.value, h.value_len, "Too Many Requests"));
  h = parse("HTTP/2 200\r\n"); /* HTTP/2 has no reason phrase */
  CHECK_INT(h.kind, CP_HEADER_STATUS);
  CHECK_INT(h.value_len, 0);
  h = parse("HTTP/1.1 503 \r\n");
  CHECK_INT(h.kind, CP_HEADER_STATUS);
  CHECK_INT(h.value_len, 0);
}

static void fields(void) {
  cp_header_line h = parse("Retry-After:  120 \t\r\n");
  CHECK_INT(h.kind, CP_HEADER_FIELD);
  CHECK(span_is(h.name, h.name_len, "Retry-After"));
  CHECK(span_is(h.value, h.value_len, "120"));
  h = parse("X-Empty:\r\n");
  CHECK_INT(h.kind, CP_HEADER_FIELD);
  CHECK_INT(h.value_len, 0);
  h = parse("Location: http://a.example:8080/x\n"); /* a bare LF, a colon in the
                                                       value */
  CHECK(span_is(h.value, h.value_len, "http://a.example:8080/x"));
}

static void nothing_to_keep(void) {
  CHECK_INT(parse("\r\n").kind, CP_HEADER_NONE);
  CHECK_INT(parse("").kind, CP_HEADER_NONE);
  CHECK_INT(parse("no colon here\r\n").kind, CP_HEADER_NONE);
  CHECK_INT(parse(": no name\r\n").kind, CP_HEADER_NONE);
  /* an obs-fold continues the line before: dropped, not a field named " x" */
  CHECK_INT(parse(" x: y\r\n").kind, CP_HEADER_NONE);
  CHECK_INT(parse("\tx: y\r\n").kind, CP_HEADER_NONE);
}

int main(void) {
  RUN(status_lines);
  RUN(fields);
  RUN(nothing_to_keep);
  DONE();
}
