/*
 * fuzz_json.c -- libFuzzer target for the JSON parser on its own (json.c):
 * any bytes. A failure must say where (an offset inside the input, a line
 * and a message); a success must hold unique keys in every object and read
 * back to the same tree when written out again with the encoder's pieces.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "buf.h"
#include "json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void write_value(cp_buf *b, const cp_json *v) {
  switch (v->type) {
  case CP_JSON_NULL: cp_buf_adds(b, "null"); break;
  case CP_JSON_FALSE: cp_buf_adds(b, "false"); break;
  case CP_JSON_TRUE: cp_buf_adds(b, "true"); break;
  case CP_JSON_INT: cp_buf_printf(b, "%lld", (long long)v->u.i); break;
  case CP_JSON_NUMBER:
    if (cp_json_add_number(b, v->u.d)) abort(); /* parsed numbers are finite */
    break;
  case CP_JSON_STRING:
    if (cp_json_add_string(b, v->u.str.s, v->u.str.len)) abort(); /* valid UTF-8 */
    break;
  case CP_JSON_ARRAY:
    cp_buf_addc(b, '[');
    for (size_t i = 0; i < v->u.arr.n; i++) {
      if (i) cp_buf_addc(b, ',');
      write_value(b, v->u.arr.items[i]);
    }
    cp_buf_addc(b, ']');
    break;
  case CP_JSON_OBJECT:
    cp_buf_addc(b, '{');
    for (size_t i = 0; i < v->u.obj.n; i++) {
      const cp_json_member *m = &v->u.obj.members[i];
      for (size_t j = 0; j < i; j++)
        if (v->u.obj.members[j].key_len == m->key_len &&
            memcmp(v->u.obj.members[j].key, m->key, m->key_len) == 0)
          abort(); /* a repeated key was let through */
      if (i) cp_buf_addc(b, ',');
      if (cp_json_add_string(b, m->key, m->key_len)) abort();
      cp_buf_addc(b, ':');
      write_value(b, m->value);
    }
    cp_buf_addc(b, '}');
    break;
  }
}

static int same(const cp_json *a, const cp_json *b) {
  if (a->type != b->type) return 0;
  switch (a->type) {
  case CP_JSON_INT: return a->u.i == b->u.i;
  case CP_JSON_NUMBER: return memcmp(&a->u.d, &b->u.d, sizeof a->u.d) == 0;
  case CP_JSON_STRING:
    return a->u.str.len == b->u.str.len &&
           memcmp(a->u.str.s, b->u.str.s, a->u.str.len) == 0;
  case CP_JSON_ARRAY:
    if (a->u.arr.n != b->u.arr.n) return 0;
    for (size_t i = 0; i < a->u.arr.n; i++)
      if (!same(a->u.arr.items[i], b->u.arr.items[i])) return 0;
    return 1;
  case CP_JSON_OBJECT:
    if (a->u.obj.n != b->u.obj.n) return 0;
    for (size_t i = 0; i < a->u.obj.n; i++) {
      const cp_json_member *x = &a->u.obj.members[i], *y = &b->u.obj.members[i];
      if (x->key_len != y->key_len || memcmp(x->key, y->key, x->key_len) != 0 ||
          !same(x->value, y->value))
        return 0;
    }
    return 1;
  default: return 1;
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  cp_json_error err;
  cp_json_doc *doc = cp_json_parse((const char *)data, size, &err);
  if (!doc) {
    if (err.offset > size || err.line < 1 || err.column < 1 || !err.message[0]) abort();
    return 0;
  }
  cp_buf b = CP_BUF_INIT;
  write_value(&b, cp_json_root(doc));
  cp_json_error err2;
  cp_json_doc *again = cp_json_parse(b.data, b.len, &err2);
  if (!again || !same(cp_json_root(doc), cp_json_root(again))) abort();
  cp_json_doc_free(again);
  cp_json_doc_free(doc);
  cp_buf_free(&b);
  return 0;
}
