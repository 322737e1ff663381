/*
 * runtime.h -- what the parts of libcogpipe share about a runtime: its Lua
 * state, its loop, and the hooks that let each part (http, audit, ...) tear
 * itself down when the runtime ends. Not part of the public API.
 */
#ifndef CP_RUNTIME_H
#define CP_RUNTIME_H

#include "cogpipe.h"

typedef struct cp_sched cp_sched;
typedef void (*cp_close_fn)(void *data);

/* The runtime a Lua state or any of its coroutines belongs to (kept in the
 * state's extra space, which coroutines inherit). */
cp_runtime *cp_runtime_from_lua(lua_State *L);
lua_State *cp_runtime_main_lua(cp_runtime *rt);

/* Registers fn to run once when the runtime is shutting down, after every
 * task has been cancelled and before the loop is drained; hooks run in
 * reverse order of registration. Parts that own libuv handles close them
 * there. Returns an id for cp_runtime_off_close, or -1 when out of
 * memory (fn is then not registered). */
int cp_runtime_on_close(cp_runtime *rt, cp_close_fn fn, void *data);
void cp_runtime_off_close(cp_runtime *rt, int id);

/* Counts what a part has on the loop -- handles, and requests such as pool
 * work -- so that shutdown waits for the runtime's own and for nothing else
 * on a borrowed loop. Call inc after uv_*_init (or a uv_queue_work that
 * succeeded) and dec in the close callback (or the after-work callback). */
void cp_runtime_handle_inc(cp_runtime *rt);
void cp_runtime_handle_dec(cp_runtime *rt);

/* Marks the run as failed remotely (exit 1) without failing the script; used
 * by parts that record a failure the script may not look at. */
void cp_runtime_note_failure(cp_runtime *rt);

/* Raises the run's exit status to at least st (scripts: cp.exit_status). */
void cp_runtime_request_status(cp_runtime *rt, cp_status st);

/* Pushes the table of functions the embedder registered (lua_core.c). */
void cp_runtime_push_natives(cp_runtime *rt, lua_State *L);

cp_sched *cp_runtime_sched(cp_runtime *rt);

#endif
