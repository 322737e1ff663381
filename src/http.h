/*
 * http.h -- asynchronous HTTP for libcogpipe: libcurl's multi interface
 * driven by a libuv loop, with the retry policy (retry.h) and request
 * limiters (limiter.h) applied per call. It never blocks the loop and never
 * calls into Lua; lua_http.c binds it to tasks.
 *
 * A client (cp_http) is one curl multi handle: connections are reused
 * across its calls and HTTP/2 is used where the server offers it. A call
 * (cp_http_call) is one request with all its retries:
 *
 *   cp_http_call *c = cp_http_call_new(h, "POST", url);  // caller owns c
 *   if (!c) ...                                           // out of memory
 *   cp_http_call_header(c, "Content-Type: application/json");
 *   cp_http_call_body(c, body, len);                       // c owns body
 *   cp_http_call_start(c, done, data);      // from here the client owns c
 *   ... done(c, &result, data) runs once, from the loop; c is freed after
 *   done returns. cp_http_call_cancel(c) instead stops it: done never runs.
 *
 * Running out of memory never ends the process: a setter that cannot copy
 * what it is given marks the call, which then completes from the loop with
 * CP_HTTP_MEMORY instead of going out; an answer that cannot be held ends
 * the same way (with unknown set when the request may have been applied).
 */
#ifndef CP_HTTP_H
#define CP_HTTP_H

#include <stddef.h>
#include <curl/curl.h>
#include <lua.h>
#include <uv.h>

#include "limiter.h"
#include "retry.h"
#include "runtime.h"

typedef struct cp_http cp_http;
typedef struct cp_http_call cp_http_call;
typedef struct cp_http_limiter cp_http_limiter;
typedef struct cp_http_cred cp_http_cred;

typedef enum cp_http_kind {
  CP_HTTP_OK,      /* an answer below 400 */
  CP_HTTP_STATUS,  /* an answer of 400 or more (after the retries) */
  CP_HTTP_RESOLVE, /* the host's (or proxy's) name could not be looked up */
  CP_HTTP_CONNECT, /* the connection could not be made */
  CP_HTTP_TLS,     /* TLS handshake or certificate verification failed */
  CP_HTTP_TIMEOUT, /* the time limit of the call or of one attempt */
  CP_HTTP_NETWORK, /* connection reset, closed or garbled mid-request */
  CP_HTTP_IO,      /* a local file (multipart part) could not be read */
  CP_HTTP_USAGE,   /* a request libcurl refused (bad URL, bad option) */
  CP_HTTP_AUTH,    /* not sent: its credential failed or has no value now */
  CP_HTTP_MEMORY,  /* memory ran out preparing it or reading its answer */
  CP_HTTP_CONFIG   /* not sent: libcurl refused one of the options it needs */
} cp_http_kind;

/* Names used as the `kind` of Lua error tables: "http", "resolve", ... */
const char *cp_http_kind_name(cp_http_kind k);

typedef struct cp_http_header {
  const char *name; /* lower case */
  const char *value;
} cp_http_header;

/* What done receives; every pointer is valid only during the callback. */
typedef struct cp_http_result {
  cp_http_kind kind;
  long status; /* 0 when no answer arrived */
  const char *body;
  size_t body_len;
  const cp_http_header *headers; /* of the final answer, in order */
  size_t n_headers;
  /* NULL when kind is CP_HTTP_OK. Names method, host and path, never the
   * query (it can carry keys) nor any header or body. */
  const char *message;
  int retryable;       /* a later run may succeed where this one failed */
  int unknown;         /* the server may or may not have applied it */
  int attempts;        /* requests sent, retries included */
  double elapsed;      /* seconds from start to done, waits included */
  /* With a credential: the generation the last attempt carried (0 when it
   * went out with none), and for CP_HTTP_AUTH whether the credential only
   * lacks a value (set one and send again) rather than having failed. */
  unsigned cred_gen;
  int cred_missing;
} cp_http_result;

typedef void (*cp_http_done_fn)(cp_http_call *c, const cp_http_result *r,
                                void *data);

/* A client on loop. rt may be NULL (a plain loop, as in the unit tests);
 * otherwise the client counts its handles on rt. The first client of the
 * process runs libcurl's global initialisation; when that fails, when the
 * libcurl found at run time is older than 7.85.0, when libcurl refuses an
 * option of the client, or when memory runs out, returns NULL with the
 * reason in err. */
cp_http *cp_http_new(uv_loop_t *loop, cp_runtime *rt, char *err,
                     size_t errlen);
/* Cancels every call (their done callbacks do not run) and closes every
 * handle; the memory goes when the last close callback has run, so the
 * loop must run once more. */
void cp_http_free(cp_http *h);

/* The client of L's runtime, created on first use and freed by a close
 * hook of the runtime; NULL, with the reason in err, when cp_http_new
 * fails. L is the state of the calling Lua function
 * (the runtime's registry is reached through it, which may raise). */
cp_http *cp_http_of(lua_State *L, char *err, size_t errlen);

/* Calls. method and url are copied; NULL when out of memory. The setters
 * may be called until cp_http_call_start. */
cp_http_call *cp_http_call_new(cp_http *h, const char *method,
                               const char *url);
/* "Name: value", copied. */
void cp_http_call_header(cp_http_call *c, const char *line);
/* Takes ownership of body (malloc'd). */
void cp_http_call_body(cp_http_call *c, char *body, size_t len);
/* The call's MIME body, created on first use and owned by the call; parts
 * that name a file are read from disk while sending, never held whole.
 * NULL when it cannot be made (the call then fails as out of memory). */
curl_mime *cp_http_call_mime(cp_http_call *c);
/* Seconds; 0 or less for none (connect: libcurl's 300 s). total bounds the
 * whole call from when it is first handed to the network: every attempt
 * and the waits between them, but never the time it spends queued behind
 * its limiter or its origin's gate, so that a call that was never sent
 * never times out. No retry starts that would not fit in it. attempt
 * bounds each attempt on its own; connect, each connection's set-up. */
void cp_http_call_timeouts(cp_http_call *c, double total, double attempt,
                           double connect);
/* ca_file: PEM bundle to verify the server with, copied (NULL: the system's).
 * insecure: no verification at all; prints a warning on stderr. */
void cp_http_call_tls(cp_http_call *c, const char *ca_file, int insecure);
void cp_http_call_retry(cp_http_call *c, const cp_retry_policy *p);
/* The call waits for l before each attempt; it holds a reference on l. */
void cp_http_call_limiter(cp_http_call *c, cp_http_limiter *l);
/* The call takes its credential header from cr at each attempt, when it
 * goes on the wire (not when it is queued); it holds a reference on cr. */
void cp_http_call_cred(cp_http_call *c, cp_http_cred *cr);
/* Records a failure to report instead of sending (e.g. a part's file is
 * missing): the call completes from the loop with that error. Copied.
 * cp_http_call_nomem records that something could not be set for lack of
 * memory (a part libcurl could not add). */
void cp_http_call_fail(cp_http_call *c, cp_http_kind kind, const char *msg);
void cp_http_call_nomem(cp_http_call *c);

void cp_http_call_start(cp_http_call *c, cp_http_done_fn done, void *data);
/* Stops and frees a started or unstarted call; done never runs. Not from
 * inside its own done callback. */
void cp_http_call_cancel(cp_http_call *c);

/* Every request to one origin (scheme, host, port) passes one gate of the
 * client, whichever tenant or limiter it belongs to: a 429, or a 503 with
 * Retry-After, closes the gate for every request to that origin until the
 * time the server named (the platform counts per client, not per request),
 * and no request goes on the wire before. cp_http_origin_limit adds a
 * request rate to the gate, or lowers the one it has: tenants that reach
 * the same origin share it. url names the origin; -1 when it cannot be
 * parsed. */
int cp_http_origin_limit(cp_http *h, const char *url, double rate,
                         double burst);
/* Seconds until the gate of url's origin opens again (0 when open). */
double cp_http_origin_paused(cp_http *h, const char *url);

/* Credentials: a header whose value may change while requests wait (an
 * OAuth2 token refreshed or revoked). Each attempt takes the value current
 * when it is sent; a call finding no value (never set, invalidated or past
 * expires_at) or a failed credential completes with CP_HTTP_AUTH without
 * being sent. Reference counted like limiters. The value is a secret: it is
 * wiped when replaced and never appears in a message. */
cp_http_cred *cp_http_cred_new(const char *header); /* NULL: out of memory */
void cp_http_cred_unref(cp_http_cred *cr);
/* A new value (copied) good until expires_at (seconds on now's clock, 0:
 * no expiry): the generation goes up by one. Returns 0, or -1 when out of
 * memory (the credential is then left as it was). */
int cp_http_cred_set(cp_http_cred *cr, const char *value, double expires_at);
/* Drops the value if gen is still the current generation (a 401 answered
 * a request that carried it); a newer value is kept. */
void cp_http_cred_invalidate(cp_http_cred *cr, unsigned gen);
/* Fails the credential for good: every call using it that is not on the
 * wire completes with CP_HTTP_AUTH and msg, and later ones at once. */
void cp_http_cred_fail(cp_http *h, cp_http_cred *cr, const char *msg);
typedef struct cp_http_cred_state {
  unsigned gen;   /* 0 before the first value */
  int has_value;  /* a value that has not expired */
  int proven;     /* an answer other than 401 came to the current value */
  int failed;
} cp_http_cred_state;
void cp_http_cred_get(const cp_http_cred *cr, cp_http_cred_state *out);
/* The seconds clock of expires_at and of the limiters. */
double cp_http_now(void);

/* Limiters, shared by the calls of one tenant. Reference counted: the
 * creator holds one reference, each call using it another. NULL when out
 * of memory. */
cp_http_limiter *cp_http_limiter_new(double rate, double burst,
                                     int max_in_flight);
void cp_http_limiter_unref(cp_http_limiter *l);
const cp_limiter *cp_http_limiter_state(const cp_http_limiter *l);
size_t cp_http_limiter_waiting(const cp_http_limiter *l);

#endif
