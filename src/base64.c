/*
 * base64.c -- standard base64 (RFC 4648, section 4) with padding: encoding,
 * and a strict decoder (see base64.h). Knows nothing of what the bytes
 * mean; webhook secrets and embedding vectors decode through it, and
 * cogpipe.base64 (lua_base64.c) hands both ways to Lua.
 */
#include "base64.h"

#include <stdint.h>

static const char b64[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

size_t cp_base64_encode(const unsigned char *in, size_t len, char *out) {
  size_t o = 0;
  for (size_t i = 0; i < len; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16;
    if (i + 1 < len) v |= (uint32_t)in[i + 1] << 8;
    if (i + 2 < len) v |= in[i + 2];
    out[o++] = b64[v >> 18 & 63];
    out[o++] = b64[v >> 12 & 63];
    out[o++] = i + 1 < len ? b64[v >> 6 & 63] : '=';
    out[o++] = i + 2 < len ? b64[v & 63] : '=';
  }
  out[o] = '\0';
  return o;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+') return 62;
  if (c == '/') return 63;
  return -1;
}

int cp_base64_decode(const char *in, size_t len, unsigned char *out,
                     size_t *outlen) {
  if (len % 4 != 0) return -1;
  size_t o = 0;
  for (size_t i = 0; i < len; i += 4) {
    int last = i + 4 == len;
    int v[4];
    for (int k = 0; k < 4; k++) {
      char c = in[i + (size_t)k];
      /* '=' only at the end: "xx==" or "xxx=" */
      v[k] = c == '=' && last && k >= 2 ? -2 : b64_value(c);
      if (v[k] == -1) return -1;
    }
    if (v[2] == -2 && v[3] != -2) return -1;
    uint32_t bits = (uint32_t)v[0] << 18 | (uint32_t)v[1] << 12 |
                    (uint32_t)(v[2] < 0 ? 0 : v[2]) << 6 |
                    (uint32_t)(v[3] < 0 ? 0 : v[3]);
    out[o++] = (unsigned char)(bits >> 16);
    if (v[2] >= 0) out[o++] = (unsigned char)(bits >> 8);
    if (v[3] >= 0) out[o++] = (unsigned char)bits;
  }
  *outlen = o;
  return 0;
}

const char *cp_base64_problem(const char *in, size_t len, size_t *at) {
  size_t i = 0;
  for (; i < len && in[i] != '='; i++) {
    if (b64_value(in[i]) < 0) {
      *at = i;
      return "a byte outside the base64 alphabet";
    }
  }
  if (i < len) { /* padding: "xx==" or "xxx=", ending the text */
    size_t pad = len - i;
    if (pad > 2 || (pad == 2 && in[i + 1] != '=') || i % 4 + pad != 4) {
      *at = i;
      return "padding ('=') that does not end the last group of four";
    }
  }
  if (len % 4 != 0) {
    *at = len;
    return "a length that is not a multiple of 4";
  }
  return NULL;
}
