/*
 * secrets.h -- the runtime's secret registry and the redaction every output
 * path applies (audit records, webhook bodies, error messages, summaries).
 * It decides what counts as a secret and rewrites text; it does no I/O.
 */
#ifndef CP_SECRETS_H
#define CP_SECRETS_H

#include <stddef.h>

#include "buf.h"
#include "runtime.h"

/* What a secret is replaced with. */
#define CP_REDACTED "[redacted]"

/* Registered values shorter than this are refused: redacting every "abc"
 * in a run's output would destroy it, and such a value is no secret. */
#define CP_SECRET_MIN 4

typedef struct cp_secrets cp_secrets;

cp_secrets *cp_secrets_new(void); /* the caller owns it; NULL: out of memory */
void cp_secrets_free(cp_secrets *s);

/* Registers a value (copied) to redact wherever it appears, together with
 * its percent-encoded and JSON-escaped forms. Returns 0 (also when it was
 * already known), -1 when the value is shorter than CP_SECRET_MIN, -2 when
 * memory ran out (some forms may be missing: the caller must not go on as
 * if the value were covered). */
int cp_secret_add(cp_secrets *s, const char *v, size_t len);
size_t cp_secrets_count(const cp_secrets *s);

/* 1 when a field (object key, header name, form or query parameter) of this
 * name holds a secret: password, token, client_secret, Authorization,
 * X-API-Key, ..., compared without case and with '-' equal to '_'. */
int cp_secret_field(const char *name, size_t len);

/* Appends in[0..len) to out with every secret replaced by CP_REDACTED: the
 * registered values; the values of Authorization, Proxy-Authorization,
 * X-API-Key and Cookie header lines; Bearer and Basic credentials; and the
 * values of secret-named `name=value` pairs and `"name": "value"` JSON
 * members embedded in text. s may be NULL (built-in rules only). Returns
 * the number of replacements. When memory runs out out is left failed
 * (cp_buf_ok): its text is cut short, and must not be used. */
size_t cp_secret_redact(const cp_secrets *s, const char *in, size_t len,
                        cp_buf *out);

/* The registry of L's runtime, created on first use; it lives as long as
 * the runtime's Lua state (a userdata in its registry frees it). L is the
 * calling Lua function's state: this may raise a memory error. */
cp_secrets *cp_secrets_of(lua_State *L);

#endif
