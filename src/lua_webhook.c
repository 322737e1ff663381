/*
 * lua_webhook.c -- cogpipe._webhook, the raw primitives under
 * lua/cogpipe/webhook.lua: Standard Webhooks signing and checking, message
 * ids, and the directory listing and process test the outbox needs. Never
 * puts a secret in a result or an error.
 */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "lutil.h"
#include "modules.h"
#include "webhook.h"

/* Checks that the value at idx is a secret or a non-empty list of them;
 * returns how many. Raises on wrong types (a programming error). */
static int check_secrets(lua_State *L, int idx) {
  if (lua_type(L, idx) == LUA_TSTRING) return 1;
  luaL_argexpected(L, lua_istable(L, idx), idx, "secret or list of secrets");
  int n = (int)luaL_len(L, idx);
  luaL_argcheck(L, n > 0, idx, "empty list of secrets");
  for (int i = 1; i <= n; i++) {
    if (lua_rawgeti(L, idx, i) != LUA_TSTRING)
      luaL_argerror(L, idx, "every secret must be a string");
    lua_pop(L, 1);
  }
  return n;
}

/* The i-th secret (1-based) at idx, as pushed on the stack. */
static const char *secret_at(lua_State *L, int idx, int i, size_t *len) {
  if (lua_type(L, idx) == LUA_TSTRING)
    lua_pushvalue(L, idx);
  else
    lua_rawgeti(L, idx, i);
  return lua_tolstring(L, -1, len);
}

/* Decodes secret i; on failure pushes nil, err and returns NULL. The key
 * is the caller's: wipe and free it. Leaves the stack as it found it. */
static unsigned char *key_at(lua_State *L, int idx, int i, int n,
                             size_t *keylen) {
  size_t len;
  const char *s = secret_at(L, idx, i, &len);
  const char *why = NULL;
  unsigned char *key = cp_webhook_key(s, len, keylen, &why);
  lua_pop(L, 1);
  if (!key && why == CP_WEBHOOK_NOMEM)
    cp_lua_nomem(L, "reading a webhook secret");
  if (!key) {
    if (n > 1)
      cp_lua_fail(L, "config", "%s (secret %d)", why, i);
    else
      cp_lua_fail(L, "config", "%s", why);
  }
  return key;
}

/* key comes from cp_webhook_key. */
static void drop_key(unsigned char *key, size_t len) {
  OPENSSL_cleanse(key, len);
  free(key);
}

/* sign(secret | {secret, ...}, id, timestamp, body) -> "v1,... v1,..." |
 * nil, err: one signature per secret, for key rotation. */
static int l_sign(lua_State *L) {
  int n = check_secrets(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lua_Integer ts = luaL_checkinteger(L, 3);
  size_t blen;
  const char *body = luaL_checklstring(L, 4, &blen);
  luaL_Buffer out;
  luaL_buffinit(L, &out);
  for (int i = 1; i <= n; i++) {
    size_t keylen;
    unsigned char *key = key_at(L, 1, i, n, &keylen);
    if (!key) return 2;
    cp_buf sig = CP_BUF_INIT;
    int rc = cp_webhook_sign(key, keylen, id, (int64_t)ts, body, blen, &sig);
    drop_key(key, keylen);
    /* C memory goes before anything that can raise */
    char text[64];
    int ok = rc == 0 && cp_buf_ok(&sig) && sig.len < sizeof text;
    if (ok) memcpy(text, sig.data, sig.len + 1);
    size_t tlen = sig.len;
    cp_buf_free(&sig);
    if (!ok) return cp_lua_nomem(L, "signing a webhook");
    lua_pushlstring(L, text, tlen);
    if (i > 1) luaL_addchar(&out, ' ');
    luaL_addvalue(&out);
  }
  luaL_pushresult(&out);
  return 1;
}

/* verify(secret | {...}, id, timestamp, body, header) -> boolean | nil, err:
 * whether a signature in header matches one of the secrets. */
static int l_verify(lua_State *L) {
  int n = check_secrets(L, 1);
  const char *id = luaL_checkstring(L, 2);
  lua_Integer ts = luaL_checkinteger(L, 3);
  size_t blen;
  const char *body = luaL_checklstring(L, 4, &blen);
  const char *header = luaL_checkstring(L, 5);
  int ok = 0;
  for (int i = 1; i <= n; i++) {
    size_t keylen;
    unsigned char *key = key_at(L, 1, i, n, &keylen);
    if (!key) return 2;
    int r = cp_webhook_verify(key, keylen, id, (int64_t)ts, body, blen, header);
    drop_key(key, keylen);
    if (r < 0) return cp_lua_nomem(L, "checking a webhook signature");
    ok |= r;
  }
  lua_pushboolean(L, ok);
  return 1;
}

/* check_secret(secret) -> true | nil, err */
static int l_check_secret(lua_State *L) {
  int n = check_secrets(L, 1);
  for (int i = 1; i <= n; i++) {
    size_t keylen;
    unsigned char *key = key_at(L, 1, i, n, &keylen);
    if (!key) return 2;
    drop_key(key, keylen);
  }
  lua_pushboolean(L, 1);
  return 1;
}

static int l_new_id(lua_State *L) {
  char id[31];
  cp_webhook_new_id(id);
  lua_pushstring(L, id);
  return 1;
}

/* The open directory lives in a userdata whose __gc closes it, so a Lua
 * error while names are pushed cannot leak it. */
static int dirbox_gc(lua_State *L) {
  DIR **box = lua_touserdata(L, 1);
  if (*box) closedir(*box);
  *box = NULL;
  return 0;
}

/* list(dir [, suffix]) -> sorted names (no "." or ".."; only those ending
 * in suffix when given) | nil, err. A missing directory is an empty list. */
static int l_list(lua_State *L) {
  const char *dir = luaL_checkstring(L, 1);
  size_t sl = 0;
  const char *suffix = luaL_optlstring(L, 2, NULL, &sl);
  lua_settop(L, 2);
  DIR **box = lua_newuserdatauv(L, sizeof *box, 0); /* 3 */
  *box = NULL;
  if (luaL_newmetatable(L, "cogpipe.webhook.dir")) {
    lua_pushcfunction(L, dirbox_gc);
    lua_setfield(L, -2, "__gc");
  }
  lua_setmetatable(L, -2);
  lua_getglobal(L, "table"); /* 4 */
  lua_newtable(L);           /* 5: the names */
  *box = opendir(dir);
  if (!*box) {
    if (errno == ENOENT) return 1;
    return cp_lua_fail(L, "io", "cannot list %s: %s", dir, strerror(errno));
  }
  lua_Integer n = 0;
  struct dirent *e;
  while ((e = readdir(*box))) {
    const char *nm = e->d_name;
    size_t len = strlen(nm);
    if (strcmp(nm, ".") == 0 || strcmp(nm, "..") == 0) continue;
    if (suffix && (len < sl || strcmp(nm + len - sl, suffix) != 0)) continue;
    lua_pushlstring(L, nm, len);
    lua_rawseti(L, 5, ++n);
  }
  closedir(*box);
  *box = NULL;
  lua_getfield(L, 4, "sort");
  lua_pushvalue(L, 5);
  lua_call(L, 1, 0); /* table.sort(names) */
  lua_settop(L, 5);
  return 1;
}

static int l_pid(lua_State *L) {
  lua_pushinteger(L, (lua_Integer)getpid());
  return 1;
}

/* pid_alive(pid) -> boolean: a process with this id exists (ours or not). */
static int l_pid_alive(lua_State *L) {
  lua_Integer pid = luaL_checkinteger(L, 1);
  luaL_argcheck(L, pid > 0, 1, "process id expected");
  int alive = kill((pid_t)pid, 0) == 0 || errno == EPERM;
  lua_pushboolean(L, alive);
  return 1;
}

static const luaL_Reg webhook_fns[] = {{"sign", l_sign},
                                       {"verify", l_verify},
                                       {"check_secret", l_check_secret},
                                       {"new_id", l_new_id},
                                       {"list", l_list},
                                       {"pid", l_pid},
                                       {"pid_alive", l_pid_alive},
                                       {NULL, NULL}};

int luaopen_cogpipe_webhook_native(lua_State *L) {
  luaL_newlib(L, webhook_fns);
  return 1;
}
