/*
 * test_limiter.c -- unit tests of limiter.c on a simulated clock: burst,
 * steady rate, in-flight cap, slow-down on 429 and recovery.
 */
#include "check.h"
#include "limiter.h"

/* Starts n requests as early as the limiter allows, each finishing at once;
 * returns the simulated time the last one started. */
static double run(cp_limiter *l, int n, double t) {
  for (int i = 0; i < n; i++) {
    double w;
    while ((w = cp_limiter_take(l, t)) != 0) {
      CHECK(w > 0);
      if (w <= 0) return -1;
      t += w;
    }
    cp_limiter_release(l);
  }
  return t;
}

static void burst_then_rate(void) {
  cp_limiter l;
  cp_limiter_init(&l, 5, 5, 0, 100.0);
  /* 5 at once, then 25 at 5/s: the 30th starts 5 s after the first */
  double end = run(&l, 30, 100.0);
  CHECK(end > 104.99 && end < 105.01);
  cp_limiter_init(&l, 5, 5, 0, 0.0);
  CHECK(run(&l, 5, 0.0) == 0.0);
}

static void bucket_refills_to_burst_only(void) {
  cp_limiter l;
  cp_limiter_init(&l, 10, 3, 0, 0.0);
  run(&l, 3, 0.0);
  /* a long pause earns at most `burst` requests */
  CHECK(run(&l, 3, 100.0) == 100.0);
  CHECK(cp_limiter_take(&l, 100.0) > 0);
}

static void in_flight_cap(void) {
  cp_limiter l;
  cp_limiter_init(&l, 0, 1, 2, 0.0);
  CHECK(cp_limiter_take(&l, 0) == 0);
  CHECK(cp_limiter_take(&l, 0) == 0);
  CHECK(cp_limiter_take(&l, 0) < 0);
  cp_limiter_release(&l);
  CHECK(cp_limiter_take(&l, 0) == 0);
  CHECK_INT(l.in_flight, 2);
}

static void slow_down_and_recover(void) {
  cp_limiter l;
  cp_limiter_init(&l, 8, 8, 0, 0.0);
  cp_limiter_slow_down(&l, 1.0);
  CHECK(l.rate == 4.0);
  CHECK(l.tokens <= 0);
  /* the rest of the same burst of 429s does not halve again */
  cp_limiter_slow_down(&l, 1.1);
  CHECK(l.rate == 4.0);
  /* a later episode does */
  cp_limiter_slow_down(&l, 10.0);
  CHECK(l.rate == 2.0);
  /* never below base/16 */
  for (int i = 0; i < 20; i++) cp_limiter_slow_down(&l, 100.0 + i * 100);
  CHECK(l.rate == 0.5);
  /* additive recovery, capped at the configured rate */
  double before = l.rate;
  cp_limiter_speed_up(&l, 3000.0);
  CHECK(l.rate > before);
  for (int i = 0; i < 1000; i++) cp_limiter_speed_up(&l, 3000.0);
  CHECK(l.rate == 8.0);
}

static void window_halves_without_rate(void) {
  cp_limiter l;
  cp_limiter_init(&l, 0, 1, 16, 0.0);
  cp_limiter_slow_down(&l, 1.0);
  CHECK_INT(l.window, 8);
  cp_limiter_slow_down(&l, 1.5); /* same episode */
  CHECK_INT(l.window, 8);
  for (int i = 0; i < 200; i++) cp_limiter_speed_up(&l, 2.0);
  CHECK_INT(l.window, 16);
  /* with no cap at all there is nothing to shrink */
  cp_limiter_init(&l, 0, 1, 0, 0.0);
  cp_limiter_slow_down(&l, 1.0);
  CHECK(cp_limiter_take(&l, 1.0) == 0);
}

int main(void) {
  RUN(burst_then_rate);
  RUN(bucket_refills_to_burst_only);
  RUN(in_flight_cap);
  RUN(slow_down_and_recover);
  RUN(window_halves_without_rate);
  DONE();
}
