/*
 * retry.h -- the retry policy of DESIGN 4.4 as pure functions: which answers
 * and transport failures may be retried for which method, when an outcome is
 * "unknown", Retry-After parsing and full-jitter backoff. No I/O, no clock,
 * no randomness of its own: callers pass the time and the random draw.
 */
#ifndef CP_RETRY_H
#define CP_RETRY_H

#include <time.h>

typedef struct cp_retry_policy {
  int tries;       /* attempts in all, first one included; 1 = no retry */
  double base;     /* backoff seconds before the first retry (upper bound) */
  double cap;      /* backoff never exceeds this many seconds */
  double max_wait; /* a Retry-After longer than this ends the retries */
  /* -1: decided by the method (GET, HEAD, PUT, DELETE, OPTIONS, TRACE are
   * idempotent); 1: the caller knows a replay is harmless (a token request,
   * a POST carrying an idempotency key); 0: never replay once sent. */
  int idempotent;
} cp_retry_policy;

/* tries 8, base 0.5 s, cap 30 s, max_wait 300 s, idempotent by method. */
void cp_retry_policy_default(cp_retry_policy *p);

/* How far a failed attempt got, which decides whether replaying it could
 * apply it twice. */
typedef enum cp_retry_sent {
  CP_SENT_NONE,    /* nothing reached the server (resolve, connect, TLS) */
  CP_SENT_PARTIAL, /* the request was cut before its body was complete */
  CP_SENT_ALL      /* the whole request went out; the server may have acted */
} cp_retry_sent;

typedef enum cp_retry_verdict {
  CP_RETRY_NO,     /* final: success, or a failure a replay cannot fix */
  CP_RETRY_YES,    /* replay after a delay */
  CP_RETRY_UNKNOWN /* final: the server may or may not have applied it */
} cp_retry_verdict;

int cp_retry_method_idempotent(const char *method);

/* 408, 429 and 500-599 except 501 and 511. */
int cp_retry_status_retryable(long status);

/* Verdict for an answer with an HTTP status (status > 0), or for a transport
 * failure (status 0) where transient says whether the error is one a
 * replay can fix (connection refused or reset: yes; certificate rejected:
 * no). For a non-idempotent request: 408 and 429 mean "not processed" and
 * are retried; other retryable statuses (5xx) and failures after the whole
 * request was sent are UNKNOWN; failures before that are retried. */
cp_retry_verdict cp_retry_decide(int idempotent, long status, int transient,
                                 cp_retry_sent sent);

/* Parses a Retry-After value: delay-seconds or an HTTP date (IMF-fixdate,
 * RFC 850 or asctime), relative to now (Unix seconds). Stores the delay in
 * seconds (0 for a date in the past) and returns 0; -1 when unparsable. */
int cp_retry_after_parse(const char *value, time_t now, double *delay);

/* Full-jitter exponential backoff before retry number n (1 = first retry):
 * u * min(cap, base * 2^(n-1)), where u is a uniform draw in [0, 1). */
double cp_retry_backoff(const cp_retry_policy *p, int n, double u);

/* A failed name lookup is tried at most this many times in all, the
 * second time after cp_retry_resolve_delay (retry.c says why). */
#define CP_RETRY_RESOLVE_TRIES 2
/* The wait before looking a name up again: the first backoff of p, never
 * more than a second; u as for cp_retry_backoff. */
double cp_retry_resolve_delay(const cp_retry_policy *p, double u);

/* Whether another attempt after wait seconds still fits a request's time
 * limit when left seconds of it remain (left < 0: no limit): it must have
 * at least CP_RETRY_MIN_ATTEMPT seconds of its own, or it could only time
 * out and hide the answer that made it necessary. */
#define CP_RETRY_MIN_ATTEMPT 0.1
int cp_retry_fits(double left, double wait);

/* Delay honouring a server's Retry-After: never less than it, plus a spread
 * of up to 10% (at most 1 s) so that clients told the same instant do not
 * all come back at once. */
double cp_retry_after_delay(double retry_after, double u);

#endif
