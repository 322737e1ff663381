/*
 * test_parallel.c -- chunked work over threads: every chunk runs exactly
 * once whatever the thread count, worker numbers stay in range, and the
 * thread count can be set from the environment.
 */
#include <stdatomic.h>
#include <stdlib.h>

#include "check.h"
#include "parallel.h"

typedef struct job {
  atomic_int runs[1000];
  atomic_int bad_worker;
  int threads;
} job;

static void count(void *ctx, size_t chunk, int worker) {
  job *j = ctx;
  atomic_fetch_add(&j->runs[chunk], 1);
  if (worker < 0 || worker >= (j->threads < 1 ? 1 : j->threads))
    atomic_fetch_add(&j->bad_worker, 1);
}

static void test_every_chunk_once(void) {
  int counts[] = {0, 1, 2, 7, 64, 100};
  for (size_t c = 0; c < sizeof counts / sizeof *counts; c++) {
    job *j = calloc(1, sizeof *j);
    j->threads = counts[c];
    cp_parallel_run(counts[c], 1000, count, j);
    int wrong = 0;
    for (int i = 0; i < 1000; i++)
      wrong += atomic_load(&j->runs[i]) != 1;
    CHECK_INT(wrong, 0);
    CHECK_INT(atomic_load(&j->bad_worker), 0);
    free(j);
  }
  /* no chunks: nothing runs, nothing hangs */
  job *j = calloc(1, sizeof *j);
  j->threads = 4;
  cp_parallel_run(4, 0, count, j);
  CHECK_INT(atomic_load(&j->runs[0]), 0);
  free(j);
}

static void test_thread_count(void) {
  setenv("COGPIPE_THREADS", "3", 1);
  CHECK_INT(cp_parallel_threads(), 3);
  setenv("COGPIPE_THREADS", "1000", 1);
  CHECK_INT(cp_parallel_threads(), 64);
  unsetenv("COGPIPE_THREADS");
  CHECK(cp_parallel_threads() >= 1);
}

int main(void) {
  RUN(test_every_chunk_once);
  RUN(test_thread_count);
  DONE();
}
