/*
 * fuzz_headers.c -- libFuzzer target for headers.c, which reads every line
 * of every answer's head a server (or anything in between) sends. Checks
 * that the spans stay inside the line, that a field's name and value have
 * the shape the parser promises, and that a field written back out parses
 * to the same name and value.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "headers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const char *p, size_t n, const char *line, size_t len) {
  return p >= line && n <= len && (size_t)(p - line) <= len - n;
}

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *line =
      malloc(size ? size : 1); /* exactly the bytes: ASan sees overreads */
  if (!line) return 0;
  memcpy(line, data, size);
  cp_header_line h;
  cp_header_line_parse(line, size, &h);
  if (!inside(h.name, h.name_len, line, size) ||
      !inside(h.value, h.value_len, line, size))
    abort();
  if (h.kind == CP_HEADER_STATUS && (size < 5 || memcmp(line, "HTTP/", 5) != 0))
    abort();
  if (h.kind == CP_HEADER_FIELD) {
    if (h.name_len == 0 || memchr(h.name, ':', h.name_len) || blank(h.name[0]))
      abort();
    if (h.value_len && (blank(h.value[0]) || blank(h.value[h.value_len - 1])))
      abort();
    /* written back as a client would see it, it reads the same */
    size_t n = h.name_len + 2 + h.value_len + 2;
    char *again = malloc(n);
    if (again) {
      memcpy(again, h.name, h.name_len);
      memcpy(again + h.name_len, ": ", 2);
      memcpy(again + h.name_len + 2, h.value, h.value_len);
      memcpy(again + n - 2, "\r\n", 2);
      cp_header_line g;
      cp_header_line_parse(again, n, &g);
      int trailing_crlf = h.value_len && (h.value[h.value_len - 1] == '\r' ||
                                          h.value[h.value_len - 1] == '\n');
      int starts_http = h.name_len >= 5 && memcmp(h.name, "HTTP/", 5) == 0;
      if (!trailing_crlf && !starts_http &&
          (g.kind != CP_HEADER_FIELD || g.name_len != h.name_len ||
           g.value_len != h.value_len ||
           memcmp(g.value, h.value, h.value_len) != 0))
        abort();
      free(again);
    }
  }
  free(line);
  return 0;
}
