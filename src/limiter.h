/*
 * limiter.h -- a per-tenant request limiter as pure arithmetic: a token
 * bucket (requests per second with a burst), a cap on requests in flight,
 * and AIMD adaptation (halve on 429, recover a little on each success).
 * It keeps no queue and no timer and reads no clock: callers pass the time
 * and http.c queues the requests that must wait.
 */
#ifndef CP_LIMITER_H
#define CP_LIMITER_H

typedef struct cp_limiter {
  double base_rate; /* configured requests per second; 0 = no rate limit */
  double rate;      /* current rate, base_rate / 16 <= rate <= base_rate */
  double burst;     /* bucket size: requests that may start back to back */
  double tokens;    /* requests that may start now (fractional) */
  double stamp;     /* time tokens was last brought up to date */
  int base_window;  /* configured max in flight; 0 = unlimited */
  int window;       /* current max in flight, 1 <= window <= base_window */
  int in_flight;
  double calm_until; /* 429s before this time belong to the same episode */
  int successes;     /* since the window last grew */
} cp_limiter;

/* rate <= 0: no rate limit; burst < 1 becomes 1 (a rate with no burst
 * would let nothing through); max_in_flight <= 0: unlimited. The bucket
 * starts full. now is in seconds from any fixed origin. */
void cp_limiter_init(cp_limiter *l, double rate, double burst,
                     int max_in_flight, double now);

/* Asks to start a request. Returns 0 and counts it in flight when it may
 * start now; a positive number of seconds after which asking again will
 * succeed (rate); or a negative value when only cp_limiter_release can let
 * it through (in-flight cap). */
double cp_limiter_take(cp_limiter *l, double now);

/* A request that took a slot has finished (or was abandoned). */
void cp_limiter_release(cp_limiter *l);

/* The server answered 429: halve the rate (or, with no rate, the in-flight
 * window) and empty the bucket. A burst of 429s from requests that were in
 * flight together counts as one episode, so it halves once, not per answer. */
void cp_limiter_slow_down(cp_limiter *l, double now);

/* A request succeeded: recover additively towards the configured limits. */
void cp_limiter_speed_up(cp_limiter *l, double now);

#endif
