/*
 * retry.c -- the retry policy of DESIGN 4.4 (see retry.h). Pure functions:
 * they never sleep, read a clock or draw random numbers; http.c does that.
 */
#include "retry.h"

#include <ctype.h>
#include <math.h>
#include <string.h>
#include <strings.h>

#include <curl/curl.h>

void cp_retry_policy_default(cp_retry_policy *p) {
  /* 8 tries: with 30% of answers rate limited, a request fails all of them
   * with probability 0.3^8 (7e-5); a batch of hundreds still gets through. */
  p->tries = 8;
  p->base = 0.5;
  p->cap = 30.0;
  p->max_wait = 300.0;
  p->idempotent = -1;
}

int cp_retry_method_idempotent(const char *method) {
  static const char *const idem[] = {"GET",    "HEAD",    "PUT",
                                     "DELETE", "OPTIONS", "TRACE"};
  for (size_t i = 0; i < sizeof idem / sizeof idem[0]; i++)
    if (strcasecmp(method, idem[i]) == 0) return 1;
  return 0;
}

int cp_retry_status_retryable(long status) {
  if (status == 408 || status == 429) return 1;
  /* 501 (not implemented) and 511 (network login needed) will not change by
   * asking again. */
  return status >= 500 && status <= 599 && status != 501 && status != 511;
}

cp_retry_verdict cp_retry_decide(int idempotent, long status, int transient,
                                 cp_retry_sent sent) {
  if (status > 0) {
    if (!cp_retry_status_retryable(status)) return CP_RETRY_NO;
    /* 408 and 429 say the request was not processed; a 5xx to a POST may
     * come after the server already stored it. */
    if (idempotent || status == 408 || status == 429) return CP_RETRY_YES;
    return CP_RETRY_UNKNOWN;
  }
  if (sent == CP_SENT_ALL && !idempotent) return CP_RETRY_UNKNOWN;
  return transient ? CP_RETRY_YES : CP_RETRY_NO;
}

int cp_retry_after_parse(const char *value, time_t now, double *delay) {
  if (!value) return -1;
  while (*value == ' ' || *value == '\t') value++;
  size_t n = strlen(value);
  while (n > 0 && (value[n - 1] == ' ' || value[n - 1] == '\t' ||
                   value[n - 1] == '\r' || value[n - 1] == '\n'))
    n--;
  if (n == 0) return -1;

  size_t digits = 0;
  while (digits < n && isdigit((unsigned char)value[digits])) digits++;
  if (digits == n) {
    /* delay-seconds; anything past a day is as good as "give up", and
     * capping keeps the double exact. */
    double d = 0;
    for (size_t i = 0; i < n && d < 86400.0 * 365; i++)
      d = d * 10 + (value[i] - '0');
    *delay = d;
    return 0;
  }

  char date[64];
  if (n >= sizeof date) return -1;
  memcpy(date, value, n);
  date[n] = '\0';
  /* An HTTP date must name a weekday; curl_getdate alone also accepts bare
   * numbers and other loose forms a server does not mean as a date. */
  if (!isalpha((unsigned char)date[0])) return -1;
  time_t t = curl_getdate(date, NULL);
  if (t == (time_t)-1) return -1;
  *delay = t > now ? difftime(t, now) : 0.0;
  return 0;
}

double cp_retry_backoff(const cp_retry_policy *p, int n, double u) {
  if (n < 1) n = 1;
  double ceiling = p->base * ldexp(1.0, n > 60 ? 60 : n - 1);
  if (ceiling > p->cap) ceiling = p->cap;
  if (u < 0) u = 0;
  if (u >= 1) u = 0.999999;
  return u * ceiling;
}

/* A name that does not resolve is rarely fixed by waiting. The system
 * resolver has already asked its servers again (resolv.conf's attempts and
 * timeout) before it gave up, and what is left is a name that does not
 * exist (a typo in a base URL), a machine without network or DNS, or a
 * resolver that had a moment's trouble (restarting, a reply lost after its
 * own retries). libcurl reports them all as one error, so a lookup is tried
 * once more, soon, which covers the last case; eight tries with growing
 * backoff only made an offline run wait half a minute to say the same. */
double cp_retry_resolve_delay(const cp_retry_policy *p, double u) {
  cp_retry_policy quick = *p;
  if (quick.cap > 1.0) quick.cap = 1.0;
  return cp_retry_backoff(&quick, 1, u);
}

int cp_retry_fits(double left, double wait) {
  return left < 0 || left - wait >= CP_RETRY_MIN_ATTEMPT;
}

double cp_retry_after_delay(double retry_after, double u) {
  double spread = retry_after * 0.1;
  if (spread > 1.0) spread = 1.0;
  if (u < 0) u = 0;
  if (u >= 1) u = 0.999999;
  return retry_after + u * spread;
}
