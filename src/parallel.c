/*
 * parallel.c -- chunked work over a few short-lived threads (parallel.h).
 * Threads live for one cp_parallel_run call: the kernels that use it run for
 * tens of milliseconds or more, so a pool would save nothing measurable.
 */
#include "parallel.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <uv.h>

#define MAX_THREADS 64
/* The kernels' frames are small (no deep recursion, no large arrays on the
 * stack): 2 MiB is ample, where the default would be RLIMIT_STACK (8 MiB
 * each), which an address-space limit runs out of four times sooner. */
#define WORKER_STACK ((size_t)2 << 20)

typedef struct par_job {
  cp_par_fn fn;
  void *ctx;
  size_t nchunks;
  atomic_size_t next;
} par_job;

typedef struct par_worker {
  par_job *job;
  int id;
} par_worker;

static void drain(par_job *job, int id) {
  for (;;) {
    size_t c = atomic_fetch_add(&job->next, 1);
    if (c >= job->nchunks) return;
    job->fn(job->ctx, c, id);
  }
}

static void worker_main(void *arg) {
  par_worker *w = arg;
  drain(w->job, w->id);
}

void cp_parallel_run(int threads, size_t nchunks, cp_par_fn fn, void *ctx) {
  if (threads > MAX_THREADS) threads = MAX_THREADS;
  if ((size_t)threads > nchunks) threads = (int)nchunks;
  par_job job = {fn, ctx, nchunks, 0};
  if (threads <= 1) {
    drain(&job, 0);
    return;
  }
  uv_thread_t tids[MAX_THREADS];
  par_worker workers[MAX_THREADS];
  int started = 0;
  for (int i = 1; i < threads; i++) {
    workers[i].job = &job;
    workers[i].id = i;
    /* A thread that cannot start (no memory for its stack) only costs
     * speed: the others take its chunks. */
    uv_thread_options_t opts = {UV_THREAD_HAS_STACK_SIZE, WORKER_STACK};
    if (uv_thread_create_ex(&tids[started], &opts, worker_main, &workers[i]) != 0)
      break;
    started++;
  }
  drain(&job, 0);
  for (int i = 0; i < started; i++)
    uv_thread_join(&tids[i]);
}

int cp_parallel_threads(void) {
  const char *env = getenv("COGPIPE_THREADS");
  long n = env && *env ? strtol(env, NULL, 10) : 0;
  if (n <= 0) n = (long)uv_available_parallelism();
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  return (int)n;
}
