/*
 * parallel.h -- CPU-bound work split over threads: a caller hands out
 * numbered chunks and waits until every one has run. Used by the dedupe
 * kernels (minhash.c, similarity.c); knows nothing of Lua or of the loop,
 * and must never be called from the loop thread for long (bindings move
 * such work to the libuv pool first, see lua_offload.h).
 */
#ifndef CP_PARALLEL_H
#define CP_PARALLEL_H

#include <stddef.h>

typedef void (*cp_par_fn)(void *ctx, size_t chunk, int worker);

/* Runs fn(ctx, c, w) once for every chunk c in [0, nchunks), on up to
 * `threads` threads counting the caller's (w in [0, threads) names the
 * thread, for per-thread scratch). Chunks are taken in increasing order, so
 * a caller that writes each chunk's output to its own slot gets the same
 * result whatever the timing. threads <= 1 runs everything on the caller. */
void cp_parallel_run(int threads, size_t nchunks, cp_par_fn fn, void *ctx);

/* Threads worth using for CPU work: the CPUs this process may run on
 * (COGPIPE_THREADS overrides), at least 1 and at most 64. */
int cp_parallel_threads(void);

#endif
