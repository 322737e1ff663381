/*
 * cogpipe.h -- the embedding API of libcogpipe, and the only header an
 * embedder includes. A runtime is one Lua 5.4 state on one libuv loop; it
 * runs pipeline scripts whose tasks are coroutines resumed by the loop.
 *
 * The library never ends the process: no function here aborts or exits,
 * whatever the script does or the input holds. Running out of memory --
 * the system's, or the runtime's memory_limit -- fails the task that hit
 * it (its async call or Lua code raises a memory error), and a run in
 * which memory ran out ends with CP_EFAILED, an error message that says
 * "out of memory", and cp_runtime_out_of_memory() true; the runtime can
 * still be freed, and other runtimes go on.
 */
#ifndef COGPIPE_H
#define COGPIPE_H

#include <lua.h>
#include <uv.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CP_VERSION_MAJOR 0
#define CP_VERSION_MINOR 1
#define CP_VERSION_PATCH 0

/* Outcome of a run; also the process exit codes of the cogpipe command. */
typedef enum cp_status {
  CP_OK = 0,      /* everything succeeded */
  CP_EFAILED = 1, /* the run finished but something failed (remote or task) */
  CP_EUSAGE = 2,  /* usage or configuration error, missing or unloadable script */
  CP_EINVALID = 3 /* input rejected by validation; nothing was sent */
} cp_status;

typedef struct cp_runtime cp_runtime;

typedef struct cp_runtime_options {
  /* Loop to run on; NULL makes the runtime create and own one. A borrowed
   * loop is never closed by the runtime. */
  uv_loop_t *loop;
  /* The Lua half of cogpipe (lua/cogpipe) is compiled into libcogpipe; a
   * program needs no files of it. For development, a directory that holds
   * a tree of it (cogpipe/init.lua ...) replaces that copy, read at each
   * require: this one, else the COGPIPE_LUA_DIR environment variable.
   * NULL or "": the copy compiled in. */
  const char *lua_dir;
  /* Bytes the runtime's Lua state may hold (0: no limit of its own). An
   * allocation past it fails as if the system were out of memory, so a
   * host can bound what a script takes. Native buffers (HTTP bodies,
   * dedupe tables) are not counted; they fail only when the system's
   * memory runs out. */
  size_t memory_limit;
} cp_runtime_options;

/* Called once when a run started with cp_runtime_start_* has finished. */
typedef void (*cp_done_cb)(cp_runtime *rt, cp_status status, void *data);

const char *cp_version(void);

/* Creates a runtime; opts may be NULL. Returns NULL with errno set when it
 * cannot: ENOMEM when out of memory, another value when the loop cannot be
 * initialised. */
cp_runtime *cp_runtime_new(const cp_runtime_options *opts);

/* Cancels unfinished tasks, closes every handle the runtime opened, closes
 * the Lua state and, when the runtime owns it, the loop. Native work that a
 * pool thread already runs cannot be stopped: the call waits for it on the
 * loop (asleep, while the loop's other callbacks run), then returns; the
 * embedder's own handles on a borrowed loop are left as they are. Call it
 * outside the loop's callbacks, as uv_run cannot be re-entered. */
void cp_runtime_free(cp_runtime *rt);

/* Adds fn to the `cogpipe` Lua module under name. Call before running.
 * Returns 0, or -1 when out of memory. */
int cp_runtime_register(cp_runtime *rt, const char *name, lua_CFunction fn);

/* Sets the global `arg` table seen by scripts: arg[0] = script, arg[1..n].
 * Returns 0, or -1 when out of memory. */
int cp_runtime_set_args(cp_runtime *rt, const char *script, int argc,
                        char **argv);

/* Loads and runs a script as the main task and runs the loop until it and
 * every task it spawned have finished. */
cp_status cp_runtime_run_file(cp_runtime *rt, const char *path);
cp_status cp_runtime_run_string(cp_runtime *rt, const char *code,
                                const char *chunkname);

/* Non-blocking variants for a caller that runs the loop itself: they load
 * the script and schedule its main task; done is called from the loop when
 * the run is over. A load error is returned at once (done is not called). */
cp_status cp_runtime_start_file(cp_runtime *rt, const char *path,
                                cp_done_cb done, void *data);
cp_status cp_runtime_start_string(cp_runtime *rt, const char *code,
                                  const char *chunkname, cp_done_cb done,
                                  void *data);

/* The result of the last run: its status, the error message when it failed
 * (NULL otherwise; owned by the runtime, valid until the next run or free),
 * and the values the main chunk returned, pushed onto the runtime's Lua
 * state (returns how many; the caller pops them; 0 when they cannot be
 * pushed for lack of memory). */
cp_status cp_runtime_status(const cp_runtime *rt);
const char *cp_runtime_error(const cp_runtime *rt);
int cp_runtime_push_results(cp_runtime *rt);
/* 1 when memory ran out during the last run (or while loading it): the
 * run's status is then CP_EFAILED at least, whatever the script returned,
 * and cp_runtime_error says what was being done. */
int cp_runtime_out_of_memory(const cp_runtime *rt);

lua_State *cp_runtime_lua(cp_runtime *rt);
uv_loop_t *cp_runtime_loop(cp_runtime *rt);

#ifdef __cplusplus
}
#endif

#endif
