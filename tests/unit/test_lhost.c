/* Unit tests of lhost.c: the memory limit of a state, what is noted when
 * memory runs out, and finding the host from any thread of its state. */
#include "check.h"
#include "lhost.h"

#include <lauxlib.h>
#include <lualib.h>

static int grow(lua_State *L) {
  lua_newtable(L);
  for (lua_Integer i = 1;; i++) {
    lua_pushfstring(L, "%d and some text to make it longer", (int)i);
    lua_rawseti(L, -2, i);
  }
  return 0;
}

/* A state stops at its limit with a memory error that a protected call
 * catches; the host says memory ran out, and the state goes on. */
static void test_limit(void) {
  cp_lhost h;
  lua_State *L = cp_lhost_newstate(&h, (size_t)2 << 20);
  CHECK(L != NULL);
  CHECK(!h.oom);
  lua_pushcfunction(L, grow);
  CHECK_INT(lua_pcall(L, 0, 0, 0), LUA_ERRMEM);
  lua_pop(L, 1);
  CHECK(h.oom);
  CHECK_STR(h.oom_msg, "out of memory");
  CHECK(h.mem_used <= h.mem_limit);
  lua_gc(L, LUA_GCCOLLECT, 0);
  cp_lhost_clear_oom(&h);
  CHECK_INT(luaL_dostring(
                L, "local t = {} for i = 1, 1000 do t[i] = i end return #t"),
            0);
  CHECK_INT(lua_tointeger(L, -1), 1000);
  lua_pop(L, 1);
  CHECK(!h.oom);
  lua_close(L);
  CHECK_INT(h.mem_used, 0);
}

/* The first reason given is the one kept. */
static void test_note(void) {
  cp_lhost h;
  lua_State *L = cp_lhost_newstate(&h, 0);
  cp_lhost_note_oom(&h, NULL);
  CHECK_STR(h.oom_msg, "out of memory");
  cp_lhost_note_oom(&h, "reading a file");
  cp_lhost_note_oom(&h, "writing a file");
  CHECK_STR(h.oom_msg, "out of memory while reading a file");
  cp_lhost_clear_oom(&h);
  CHECK(!h.oom && h.oom_msg[0] == '\0');
  lua_close(L);
}

static void test_of(void) {
  cp_lhost h;
  lua_State *L = cp_lhost_newstate(&h, 0);
  lua_State *co = lua_newthread(L);
  CHECK(cp_lhost_of(L) == &h);
  CHECK(cp_lhost_of(co) == &h);
  lua_State *other = luaL_newstate();
  CHECK(cp_lhost_of(other) == NULL);
  lua_close(other);
  lua_close(L);
}

int main(void) {
  RUN(test_limit);
  RUN(test_note);
  RUN(test_of);
  DONE();
}
