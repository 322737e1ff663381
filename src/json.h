/*
 * json.h -- the JSON codec of libcogpipe: a strict RFC 8259 parser into an
 * arena-allocated tree, and an encoder. Integers stay integers (int64); a
 * number that cannot be held exactly is an error, never rounded. The Lua
 * binding (lua_json.c) converts between this tree and Lua values.
 */
#ifndef CP_JSON_H
#define CP_JSON_H

#include <stddef.h>
#include <stdint.h>

#include "buf.h"

typedef enum cp_json_type {
  CP_JSON_NULL,
  CP_JSON_FALSE,
  CP_JSON_TRUE,
  CP_JSON_INT,    /* no fraction or exponent, fits int64 */
  CP_JSON_NUMBER, /* has a fraction or exponent: a double */
  CP_JSON_STRING, /* UTF-8, unescaped, NUL-terminated, may contain NUL */
  CP_JSON_ARRAY,
  CP_JSON_OBJECT
} cp_json_type;

typedef struct cp_json cp_json;
typedef struct cp_json_member {
  const char *key; /* unescaped, NUL-terminated */
  size_t key_len;
  cp_json *value;
} cp_json_member;

struct cp_json {
  cp_json_type type;
  size_t offset; /* byte offset of the value in the source text */
  union {
    int64_t i;
    double d;
    struct {
      const char *s;
      size_t len;
    } str;
    struct {
      cp_json **items;
      size_t n;
    } arr;
    struct {
      cp_json_member *members; /* in source order; keys are unique */
      size_t n;
    } obj;
  } u;
};

typedef struct cp_json_doc cp_json_doc; /* owns every node and string */

typedef struct cp_json_error {
  size_t offset; /* byte offset of the problem */
  int line;      /* 1-based */
  int column;    /* 1-based, in bytes */
  char message[128];
  int out_of_memory; /* the text may be fine: memory ran out parsing it */
} cp_json_error;

/* Parses exactly one JSON value (surrounding white space allowed). Returns
 * NULL and fills err on failure. Nesting deeper than 512 is an error, and
 * so is an object that repeats a key (the message gives its path). Running
 * out of memory is a failure too, with err->out_of_memory set: callers
 * must not report the text as invalid then. */
cp_json_doc *cp_json_parse(const char *text, size_t len, cp_json_error *err);
const cp_json *cp_json_root(const cp_json_doc *doc);
void cp_json_doc_free(cp_json_doc *doc);

/* Looks up a member of an object; NULL when v is not an object or has no
 * such key. */
const cp_json *cp_json_get(const cp_json *v, const char *key);
const char *cp_json_type_name(cp_json_type t);

/* Appends s as a JSON string literal (quotes included). Returns -1 without
 * appending anything when s is not valid UTF-8. Like every append, a
 * buffer that runs out of memory is left failed (cp_buf_ok). */
int cp_json_add_string(cp_buf *b, const char *s, size_t len);
/* Appends a double in the shortest form that reads back to the same value;
 * -1 for NaN and infinities, which JSON cannot carry. */
int cp_json_add_number(cp_buf *b, double d);

#endif
