/*
 * headers.c -- the parser of headers.h: one line of an answer's head into
 * spans. Owns no memory and keeps nothing; what a call does with the spans
 * (lower-casing, storing, joining repeats) is http.c's.
 */
#include "headers.h"

#include <string.h>

static int blank(char ch) { return ch == ' ' || ch == '\t'; }

void cp_header_line_parse(const char *line, size_t len, cp_header_line *out) {
  memset(out, 0, sizeof *out);
  out->name = out->value = line;
  while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n'))
    len--;
  if (len >= 5 && memcmp(line, "HTTP/", 5) == 0) {
    out->kind = CP_HEADER_STATUS;
    /* the reason phrase: whatever follows the second space */
    const char *sp = memchr(line, ' ', len);
    if (sp) sp = memchr(sp + 1, ' ', len - (size_t)(sp + 1 - line));
    if (sp) {
      out->value = sp + 1;
      out->value_len = len - (size_t)(sp + 1 - line);
    }
    return;
  }
  const char *colon = memchr(line, ':', len);
  /* no name, or a line that goes on the one before (obs-fold, which RFC
   * 9112 lets a client drop): nothing to keep */
  if (!colon || colon == line || blank(line[0])) return;
  const char *v = colon + 1, *end = line + len;
  while (v < end && blank(*v))
    v++;
  while (end > v && blank(end[-1]))
    end--;
  out->kind = CP_HEADER_FIELD;
  out->name_len = (size_t)(colon - line);
  out->value = v;
  out->value_len = (size_t)(end - v);
}
