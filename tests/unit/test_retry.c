/*
 * test_retry.c -- unit tests of retry.c: which answers are retried for which
 * methods, the "unknown outcome" rule, Retry-After parsing and backoff,
 * failed name lookups and the time limit of a whole request.
 */
#include <math.h>

#include "check.h"
#include "retry.h"

static void statuses(void) {
  CHECK(cp_retry_status_retryable(408));
  CHECK(cp_retry_status_retryable(429));
  CHECK(cp_retry_status_retryable(500));
  CHECK(cp_retry_status_retryable(502));
  CHECK(cp_retry_status_retryable(503));
  CHECK(cp_retry_status_retryable(599));
  CHECK(!cp_retry_status_retryable(501));
  CHECK(!cp_retry_status_retryable(511));
  CHECK(!cp_retry_status_retryable(400));
  CHECK(!cp_retry_status_retryable(401));
  CHECK(!cp_retry_status_retryable(404));
  CHECK(!cp_retry_status_retryable(200));
  CHECK(!cp_retry_status_retryable(600));
}

static void methods(void) {
  CHECK(cp_retry_method_idempotent("GET"));
  CHECK(cp_retry_method_idempotent("get"));
  CHECK(cp_retry_method_idempotent("PUT"));
  CHECK(cp_retry_method_idempotent("DELETE"));
  CHECK(cp_retry_method_idempotent("HEAD"));
  CHECK(!cp_retry_method_idempotent("POST"));
  CHECK(!cp_retry_method_idempotent("PATCH"));
}

static void verdicts(void) {
  /* idempotent: every retryable status and transient failure */
  CHECK_INT(cp_retry_decide(1, 503, 0, CP_SENT_ALL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(1, 429, 0, CP_SENT_ALL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(1, 0, 1, CP_SENT_ALL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(1, 404, 0, CP_SENT_ALL), CP_RETRY_NO);
  CHECK_INT(cp_retry_decide(1, 200, 0, CP_SENT_ALL), CP_RETRY_NO);
  CHECK_INT(cp_retry_decide(1, 0, 0, CP_SENT_NONE), CP_RETRY_NO);
  /* POST: 408/429 were not processed; 5xx and resets after the body are
   * unknown; failures before the body was complete are retried */
  CHECK_INT(cp_retry_decide(0, 429, 0, CP_SENT_ALL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(0, 408, 0, CP_SENT_ALL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(0, 500, 0, CP_SENT_ALL), CP_RETRY_UNKNOWN);
  CHECK_INT(cp_retry_decide(0, 503, 0, CP_SENT_ALL), CP_RETRY_UNKNOWN);
  CHECK_INT(cp_retry_decide(0, 501, 0, CP_SENT_ALL), CP_RETRY_NO);
  CHECK_INT(cp_retry_decide(0, 400, 0, CP_SENT_ALL), CP_RETRY_NO);
  CHECK_INT(cp_retry_decide(0, 0, 1, CP_SENT_ALL), CP_RETRY_UNKNOWN);
  CHECK_INT(cp_retry_decide(0, 0, 0, CP_SENT_ALL), CP_RETRY_UNKNOWN);
  CHECK_INT(cp_retry_decide(0, 0, 1, CP_SENT_PARTIAL), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(0, 0, 1, CP_SENT_NONE), CP_RETRY_YES);
  CHECK_INT(cp_retry_decide(0, 0, 0, CP_SENT_NONE), CP_RETRY_NO);
}

static void retry_after(void) {
  double d = -1;
  CHECK_INT(cp_retry_after_parse("1", 0, &d), 0);
  CHECK(d == 1.0);
  CHECK_INT(cp_retry_after_parse(" 120 ", 0, &d), 0);
  CHECK(d == 120.0);
  CHECK_INT(cp_retry_after_parse("0", 0, &d), 0);
  CHECK(d == 0.0);
  /* 784111777 = Sun, 06 Nov 1994 08:49:37 GMT (RFC 9110's example) */
  time_t t0 = 784111777;
  CHECK_INT(cp_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", t0 - 30, &d), 0);
  CHECK(fabs(d - 30) < 1e-9);
  CHECK_INT(cp_retry_after_parse("Sunday, 06-Nov-94 08:49:37 GMT", t0 - 5, &d), 0);
  CHECK(fabs(d - 5) < 1e-9);
  CHECK_INT(cp_retry_after_parse("Sun Nov  6 08:49:37 1994", t0 - 7, &d), 0);
  CHECK(fabs(d - 7) < 1e-9);
  /* a date in the past means "now" */
  CHECK_INT(cp_retry_after_parse("Sun, 06 Nov 1994 08:49:37 GMT", t0 + 100, &d), 0);
  CHECK(d == 0.0);
  CHECK_INT(cp_retry_after_parse("", 0, &d), -1);
  CHECK_INT(cp_retry_after_parse("-1", 0, &d), -1);
  CHECK_INT(cp_retry_after_parse("1.5", 0, &d), -1);
  CHECK_INT(cp_retry_after_parse("soon", 0, &d), -1);
  CHECK_INT(cp_retry_after_parse(NULL, 0, &d), -1);
  /* huge values are capped, not overflowed */
  CHECK_INT(cp_retry_after_parse("99999999999999999999999999", 0, &d), 0);
  CHECK(d > 86400.0 && d < 1e9);
}

static void backoff(void) {
  cp_retry_policy p;
  cp_retry_policy_default(&p);
  p.base = 1;
  p.cap = 10;
  CHECK(cp_retry_backoff(&p, 1, 0.0) == 0.0);
  CHECK(fabs(cp_retry_backoff(&p, 1, 0.5) - 0.5) < 1e-9);
  CHECK(fabs(cp_retry_backoff(&p, 3, 0.5) - 2.0) < 1e-9);
  CHECK(cp_retry_backoff(&p, 10, 0.999) <= 10.0);
  CHECK(cp_retry_backoff(&p, 10, 0.999) > 9.9);
  CHECK(cp_retry_backoff(&p, 1000, 0.5) <= 10.0);
  /* full jitter: the whole range [0, ceiling) is used */
  for (int n = 1; n < 8; n++)
    CHECK(cp_retry_backoff(&p, n, 0.999999) <= fmin(10.0, ldexp(1.0, n - 1)));
  /* Retry-After: never sooner, spread capped at 1 s */
  CHECK(cp_retry_after_delay(1.0, 0.0) == 1.0);
  CHECK(cp_retry_after_delay(1.0, 0.99) >= 1.0);
  CHECK(cp_retry_after_delay(1.0, 0.99) < 1.1);
  CHECK(cp_retry_after_delay(100.0, 0.99) < 101.0);
}

/* A failed lookup is tried again once, within a second whatever the
 * policy's backoff would be. */
static void resolve(void) {
  cp_retry_policy p;
  cp_retry_policy_default(&p);
  CHECK_INT(CP_RETRY_RESOLVE_TRIES, 2);
  CHECK(cp_retry_resolve_delay(&p, 0.999) <= 0.5);
  p.base = 20;
  p.cap = 60;
  CHECK(cp_retry_resolve_delay(&p, 0.999) <= 1.0);
  CHECK(cp_retry_resolve_delay(&p, 0.999) > 0.9);
  CHECK(cp_retry_resolve_delay(&p, 0.0) == 0.0);
  p.base = 0.01;
  CHECK(cp_retry_resolve_delay(&p, 0.999) <= 0.01);
}

/* A retry must fit in what is left of the request's time, with room for
 * an attempt of its own. */
static void fits(void) {
  CHECK(cp_retry_fits(-1, 1e6)); /* no limit */
  CHECK(cp_retry_fits(10, 1));
  CHECK(cp_retry_fits(1.1, 1.0));
  CHECK(!cp_retry_fits(1.05, 1.0)); /* 0.05 s would be left: too little */
  CHECK(!cp_retry_fits(1, 2));
  CHECK(!cp_retry_fits(0, 0));
}

int main(void) {
  RUN(statuses);
  RUN(methods);
  RUN(verdicts);
  RUN(retry_after);
  RUN(backoff);
  RUN(resolve);
  RUN(fits);
  DONE();
}
