/*
 * limiter.c -- token bucket, in-flight cap and AIMD adaptation (limiter.h).
 * Pure arithmetic over a struct; the waiting and waking live in http.c.
 */
#include "limiter.h"

void cp_limiter_init(cp_limiter *l, double rate, double burst,
                     int max_in_flight, double now) {
  l->base_rate = rate > 0 ? rate : 0;
  l->rate = l->base_rate;
  l->burst = burst >= 1 ? burst : 1;
  l->tokens = l->burst;
  l->stamp = now;
  l->base_window = max_in_flight > 0 ? max_in_flight : 0;
  l->window = l->base_window;
  l->in_flight = 0;
  l->calm_until = now;
  l->successes = 0;
}

static void refill(cp_limiter *l, double now) {
  if (now > l->stamp) {
    l->tokens += (now - l->stamp) * l->rate;
    if (l->tokens > l->burst) l->tokens = l->burst;
  }
  l->stamp = now;
}

double cp_limiter_take(cp_limiter *l, double now) {
  if (l->window > 0 && l->in_flight >= l->window) return -1;
  if (l->rate > 0) {
    refill(l, now);
    if (l->tokens < 1) {
      double wait = (1 - l->tokens) / l->rate;
      /* Never answer 0 for "wait": the caller would spin. */
      return wait > 1e-6 ? wait : 1e-6;
    }
    l->tokens -= 1;
  }
  l->in_flight++;
  return 0;
}

void cp_limiter_release(cp_limiter *l) {
  if (l->in_flight > 0) l->in_flight--;
}

void cp_limiter_slow_down(cp_limiter *l, double now) {
  if (now < l->calm_until) return;
  if (l->rate > 0) {
    refill(l, now);
    l->rate /= 2;
    if (l->rate < l->base_rate / 16) l->rate = l->base_rate / 16;
    if (l->tokens > 0) l->tokens = 0;
    /* One episode lasts about as long as the requests already in flight
     * take to come back; a second at the new rate covers that. */
    l->calm_until = now + 1.0 + 1.0 / l->rate;
  } else if (l->window > 1) {
    l->window /= 2;
    l->calm_until = now + 1.0;
  } else if (l->base_window == 0) {
    l->calm_until = now + 1.0;
  }
  l->successes = 0;
}

void cp_limiter_speed_up(cp_limiter *l, double now) {
  if (l->rate > 0 && l->rate < l->base_rate) {
    refill(l, now); /* tokens earned so far count at the old rate */
    /* Twenty successes bring a halved rate back to where it was. */
    l->rate += l->base_rate / 40;
    if (l->rate > l->base_rate) l->rate = l->base_rate;
  }
  if (l->window > 0 && l->window < l->base_window) {
    /* +1 per window's worth of successes: additive per round trip. */
    if (++l->successes >= l->window) {
      l->window++;
      l->successes = 0;
    }
  }
}
