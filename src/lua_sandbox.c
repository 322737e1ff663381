/*
 * lua_sandbox.c -- the cogpipe._sandbox module: evaluates one tenant file in
 * a Lua state of its own, bounded in memory, wall-clock time and
 * instructions, and copies the table it returns into the caller's state.
 * It knows nothing of what a tenant table means (cogpipe.tenant checks that)
 * and never lets a tenant error end or stall the process that hosts it.
 */
#include <ctype.h>
#include <lauxlib.h>
#include <lualib.h>
#include <math.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "lutil.h"
#include "modules.h"

/* A tenant file describes where a platform is and how to reach it: a few
 * kilobytes of tables. These bounds are generous for that and small enough
 * that a hostile or broken file cannot hurt the run it belongs to. */
#define SANDBOX_MEMORY_MIB 64
#define SANDBOX_MEMORY ((size_t)SANDBOX_MEMORY_MIB << 20)
#define SANDBOX_SECONDS 2
#define SANDBOX_INSTRUCTIONS 10000000L

/* The count hook runs every HOOK_EVERY instructions; the clock is also read
 * before every function call, so no run of C calls outlasts the deadline by
 * more than one call. */
#define HOOK_EVERY 1000

/* A C call cannot be interrupted, so a pattern match is allowed only when an
 * upper bound of its steps is below this. The bound is far above what real
 * matches take: the worst patterns allowed by it (a literal searched for in
 * a long run of its own first byte, nested .- captures) ran for under 0.1 s
 * on a 2-core build machine. */
#define MATCH_STEPS 2e8

/* table.sort without a comparator runs in C from start to end: about n
 * log2 n comparisons, allowed up to this (a quarter of a second or so; a
 * comparator written in Lua is interrupted like any Lua code). */
#define SORT_STEPS 1e7

/* How deep the returned table may nest (a tenant table has 3 or 4 levels),
 * which also bounds the C recursion of the copy. */
#define MAX_DEPTH 50

typedef struct sandbox {
  lua_State *L;      /* the tenant's state; owned, closed by box_close */
  size_t used;       /* bytes the state holds now */
  size_t limit;      /* bytes it may hold; lifted once the tenant is done */
  unsigned refusals; /* allocations refused so far */
  int system_refused; /* the last refusal was the system's, not the limit's */
  int refused_line;  /* tenant line of the last refusal, 0 if unknown */
  int running;       /* the tenant's code is on the stack */
  int stopped;       /* a limit was hit: hooks no longer fire */
  long counts;       /* count hooks so far */
  uint64_t deadline; /* uv_hrtime() after which the file has run too long */
  int return_line;   /* the line the file's value was returned at */
  const char *path;  /* the file as the user named it (caller's string) */
  const char *src;   /* its text (caller's string) */
  size_t src_len;
  int secrets; /* S's registry: the list of values env() returned */
  int missing; /* S's registry: {name, line} of each variable not set */
  char short_src[LUA_IDSIZE]; /* how Lua abbreviates path in messages */
} sandbox;

static sandbox *box_of(lua_State *L) {
  return *(sandbox **)lua_getextraspace(L);
}

/* The line the tenant's code is at: the innermost Lua frame, since every
 * function of the sandbox other than the tenant's own is C. */
static int tenant_line(lua_State *L) {
  lua_Debug ar;
  for (int level = 0; lua_getstack(L, level, &ar); level++) {
    if (lua_getinfo(L, "l", &ar) && ar.currentline > 0) return ar.currentline;
  }
  return 0;
}

/* ---- memory ------------------------------------------------------------- */

/* The tenant state's allocator: refuses any allocation that would take the
 * state past its limit, which Lua reports as a memory error. The line is
 * noted here because Lua runs no message handler for memory errors; only
 * reading the stack is safe at this point (Lua raises its own errors with
 * line numbers from the same places). */
static void *box_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sandbox *b = ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    b->used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > b->limit - b->used) {
    b->refusals++;
    b->system_refused = 0;
    if (b->running) b->refused_line = tenant_line(b->L);
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  /* the process is out of memory: no fault of the tenant file's */
  if (!p) b->system_refused = 1;
  if (!p) return NULL;
  b->used = b->used - old + nsize;
  return p;
}

/* Raises an error without a position: the message handler adds the tenant's
 * file and line, wherever in C this was called from. */
static int fail(lua_State *L, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static int fail(lua_State *L, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  lua_pushstring(L, msg);
  return lua_error(L);
}

/* Refuses, before the work, a result of at least `bytes` that could never
 * fit; one that does not fit next to what the file already holds is
 * refused by the allocator when it is built. */
static void need(lua_State *L, const char *what, double bytes) {
  if (bytes > (double)box_of(L)->limit)
    fail(L,
         "%s would make a string of %.0f bytes, more than the %d MiB a "
         "config may use",
         what, bytes, SANDBOX_MEMORY_MIB);
}

/* ---- time --------------------------------------------------------------- */

static void hook(lua_State *L, lua_Debug *ar) {
  sandbox *b = box_of(L);
  if (b->stopped) return;
  if (ar->event == LUA_HOOKRET) {
    /* The file's value is returned by the outermost function (the chunk, or
     * what it tail-called): its line is where a refused result is blamed. */
    lua_Debug outer;
    if (!lua_getstack(L, 1, &outer) && lua_getinfo(L, "l", ar) &&
        ar->currentline > 0)
      b->return_line = ar->currentline;
    return;
  }
  if (ar->event == LUA_HOOKCOUNT &&
      ++b->counts >= SANDBOX_INSTRUCTIONS / HOOK_EVERY) {
    b->stopped = 1;
    fail(L, "config ran more than %ld instructions (endless loop?)",
         SANDBOX_INSTRUCTIONS);
  }
  /* Calls made while an error unwinds the file (lauxlib's buffers close
   * themselves then) come after its last line: the error being raised is
   * the one to report. */
  if (uv_hrtime() > b->deadline && tenant_line(L) > 0) {
    b->stopped = 1;
    fail(L, "config ran longer than %d s (endless loop?)", SANDBOX_SECONDS);
  }
}

/* ---- patterns ----------------------------------------------------------- */

/* The string library's matcher backtracks: each repetition item (x*, x+,
 * x-, x?) may try every length its character class can match, for every
 * combination of the items before it. The bound used here: per start
 * position, the product over repetition items of (longest run of subject
 * bytes the class matches + 1), times the pattern's length; a %b or a
 * back-reference may scan the whole subject at each step. The classes follow
 * the reference manual (section 6.4.1); where a pattern is malformed the
 * class is taken to match everything, which only makes the bound larger. */

typedef struct cset {
  unsigned char bit[32];
} cset;

static void cset_add(cset *s, unsigned c) {
  s->bit[c >> 3] = (unsigned char)(s->bit[c >> 3] | (1u << (c & 7)));
}
static int cset_has(const cset *s, unsigned c) {
  return (s->bit[c >> 3] >> (c & 7)) & 1;
}
static void cset_fill(cset *s) { memset(s->bit, 0xff, sizeof s->bit); }
static void cset_invert(cset *s) {
  for (size_t i = 0; i < sizeof s->bit; i++)
    s->bit[i] = (unsigned char)~s->bit[i];
}

typedef int (*ctype_fn)(int);
static const struct {
  char letter;
  ctype_fn test;
} classes[] = {{'a', isalpha}, {'c', iscntrl}, {'d', isdigit}, {'g', isgraph},
               {'l', islower}, {'p', ispunct}, {'s', isspace}, {'u', isupper},
               {'w', isalnum}, {'x', isxdigit}};

/* Adds what %<c> stands for: a class (upper case for its complement) or
 * the character itself. */
static void add_escape(cset *s, unsigned char c) {
  for (size_t i = 0; i < sizeof classes / sizeof *classes; i++) {
    if (classes[i].letter != tolower(c)) continue;
    int complement = isupper(c) != 0;
    for (unsigned ch = 0; ch < 256; ch++)
      if ((classes[i].test((int)ch) != 0) != complement) cset_add(s, ch);
    return;
  }
  cset_add(s, c);
}

/* Reads the set [..] starting at p[i] == '['; returns the index after it. */
static size_t read_set(const char *p, size_t m, size_t i, cset *s) {
  memset(s, 0, sizeof *s);
  size_t j = i + 1;
  int invert = j < m && p[j] == '^';
  if (invert) j++;
  /* a ']' first in the set is one of its members */
  for (int first = 1;; first = 0) {
    if (j >= m) {
      cset_fill(s);
      return m;
    }
    unsigned char c = (unsigned char)p[j];
    if (c == ']' && !first) break;
    if (c == '%') {
      if (j + 1 >= m) {
        cset_fill(s);
        return m;
      }
      add_escape(s, (unsigned char)p[j + 1]);
      j += 2;
    } else if (j + 2 < m && p[j + 1] == '-' && p[j + 2] != ']') {
      for (unsigned ch = c; ch <= (unsigned char)p[j + 2]; ch++)
        cset_add(s, ch);
      j += 3;
    } else {
      cset_add(s, c);
      j++;
    }
  }
  if (invert) cset_invert(s);
  return j + 1;
}

/* Reads the single-character class at p[i]; returns the index after it. */
static size_t read_class(const char *p, size_t m, size_t i, cset *s) {
  memset(s, 0, sizeof *s);
  switch (p[i]) {
  case '.': cset_fill(s); return i + 1;
  case '[': return read_set(p, m, i, s);
  case '%':
    if (i + 1 >= m) {
      cset_fill(s);
      return m;
    }
    add_escape(s, (unsigned char)p[i + 1]);
    return i + 2;
  default: cset_add(s, (unsigned char)p[i]); return i + 1;
  }
}

/* strchr for one byte, where a NUL in a pattern is no member of the set */
static int one_of(char c, const char *set) {
  return c != '\0' && strchr(set, c) != NULL;
}

static size_t longest_run(const cset *s, const unsigned char *subj, size_t n) {
  size_t best = 0, run = 0;
  for (size_t i = 0; i < n; i++) {
    run = cset_has(s, subj[i]) ? run + 1 : 0;
    if (run > best) best = run;
  }
  return best;
}

/* An upper bound of the steps a match of pattern p over subj (n bytes,
 * from where the search starts) can take. Stops early, returning a value
 * over MATCH_STEPS, once the bound is exceeded; the scans of the subject
 * count as steps too, so that estimating never costs more than matching
 * is allowed to. */
static double match_cost(const char *p, size_t m, const unsigned char *subj,
                         size_t n, int may_anchor) {
  size_t i = 0;
  double starts = (double)n + 1;
  if (may_anchor && m > 0 && p[0] == '^') {
    starts = 1;
    i = 1;
  }
  double per_path = (double)m + 1, paths = 1;
  if (starts * per_path > MATCH_STEPS) return starts * per_path;
  cset cache[8];
  size_t cache_run[8], cached = 0;
  double scanned = 0;
  while (i < m) {
    char c = p[i];
    if (c == '(' || c == ')' || (c == '$' && i + 1 == m)) {
      i++;
      continue;
    }
    if (c == '%' && i + 1 < m) {
      char d = p[i + 1];
      if (d == 'b' || isdigit((unsigned char)d)) {
        per_path += (double)n; /* a balance or a back-reference scans */
        i += d == 'b' ? 4 : 2;
        continue;
      }
      if (d == 'f') { /* frontier: one test, no repetition */
        cset s;
        i = i + 2 < m && p[i + 2] == '[' ? read_set(p, m, i + 2, &s) : m;
        continue;
      }
    }
    cset s;
    i = read_class(p, m, i, &s);
    if (i >= m || !one_of(p[i], "*+-?")) continue;
    char q = p[i++];
    per_path += 1;
    size_t run = SIZE_MAX;
    for (size_t k = 0; k < cached; k++)
      if (memcmp(&cache[k], &s, sizeof s) == 0) run = cache_run[k];
    if (run == SIZE_MAX) {
      scanned += (double)n;
      if (scanned > MATCH_STEPS) return scanned;
      run = longest_run(&s, subj, n);
      cache[cached % 8] = s;
      cache_run[cached % 8] = run;
      if (cached < 8) cached++;
    }
    paths *= q == '?' ? (run > 0 ? 2.0 : 1.0) : (double)run + 1;
    if (starts * paths * per_path > MATCH_STEPS) break;
  }
  return starts * paths * per_path;
}

/* Calls the real library function (upvalue 1) with the arguments as given. */
static int call_real(lua_State *L) {
  int n = lua_gettop(L);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, n, LUA_MULTRET);
  return lua_gettop(L);
}

/* Checks string.<what>(s, pattern, init...) before calling the real one. */
static int guard_match(lua_State *L, const char *what, int init_arg,
                       int plain_arg, int may_anchor) {
  size_t n, m;
  const char *s = luaL_checklstring(L, 1, &n);
  const char *p = luaL_checklstring(L, 2, &m);
  lua_Integer init = init_arg ? luaL_optinteger(L, init_arg, 1) : 1;
  /* where the search starts, as the string library counts it */
  if (init < 0) init = (lua_Integer)n + init + 1;
  if (init < 1) init = 1;
  if ((size_t)init > n + 1) return call_real(L); /* fails at once */
  size_t from = (size_t)init - 1;
  double cost;
  if (plain_arg && lua_toboolean(L, plain_arg))
    cost = ((double)(n - from) + 1) * ((double)m + 1);
  else
    cost =
        match_cost(p, m, (const unsigned char *)s + from, n - from, may_anchor);
  if (cost > MATCH_STEPS)
    return fail(L,
                "string.%s refused: on a string of %zu bytes this pattern "
                "could backtrack more than %.0g steps; use fewer "
                "repetitions (* + - ?) or a shorter string",
                what, n - from, MATCH_STEPS);
  return call_real(L);
}

static int g_find(lua_State *L) { return guard_match(L, "find", 3, 4, 1); }
static int g_match(lua_State *L) { return guard_match(L, "match", 3, 0, 1); }
static int g_gmatch(lua_State *L) {
  /* gmatch takes no anchor: a '^' is matched as itself */
  return guard_match(L, "gmatch", 3, 0, 0);
}
static int g_gsub(lua_State *L) { return guard_match(L, "gsub", 0, 0, 1); }

/* ---- results that would not fit ----------------------------------------- */

static int g_rep(lua_State *L) {
  size_t l, lsep;
  luaL_checklstring(L, 1, &l);
  lua_Integer n = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (n <= 0) return call_real(L);
  double total = (double)n * (double)l + (double)(n - 1) * (double)lsep;
  /* the library would copy nothing n times: a loop as long as n */
  if (total == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  need(L, "string.rep", total);
  return call_real(L);
}

/* string.format: the literal text plus every %s and %q argument is a lower
 * bound of the result. */
static int g_format(lua_State *L) {
  size_t m;
  const char *f = luaL_checklstring(L, 1, &m);
  double total = 0;
  int arg = 1;
  for (size_t i = 0; i < m; i++) {
    if (f[i] != '%') {
      total += 1;
      continue;
    }
    if (++i < m && f[i] == '%') {
      total += 1;
      continue;
    }
    while (i < m && one_of(f[i], "-+ #0"))
      i++;
    while (i < m && isdigit((unsigned char)f[i]))
      i++;
    double prec = -1;
    if (i < m && f[i] == '.') {
      prec = 0;
      while (++i < m && isdigit((unsigned char)f[i]))
        prec = prec * 10 + (f[i] - '0');
    }
    if (i >= m) break; /* malformed: the library says so */
    arg++;
    if ((f[i] == 's' || f[i] == 'q') && lua_type(L, arg) == LUA_TSTRING) {
      double len = (double)lua_rawlen(L, arg);
      total += prec >= 0 && f[i] == 's' && prec < len ? prec : len;
    } else {
      total += 1;
    }
  }
  need(L, "string.format", total);
  return call_real(L);
}

static int g_concat(lua_State *L) {
  size_t lsep;
  luaL_checktype(L, 1, LUA_TTABLE);
  luaL_optlstring(L, 2, "", &lsep);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  lua_Integer j = luaL_opt(L, luaL_checkinteger, 4, luaL_len(L, 1));
  double total = 0;
  /* stops at the first value that is not a string or a number; the library
   * reports it */
  for (lua_Integer k = i; k <= j; k++) {
    int t = lua_geti(L, 1, k);
    double len = t == LUA_TSTRING ? (double)lua_rawlen(L, -1) : 1;
    lua_pop(L, 1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) break;
    total += len;
    if (k > i) total += (double)lsep;
    if (k == LUA_MAXINTEGER) break;
  }
  need(L, "table.concat", total);
  return call_real(L);
}

/* table.move copies element by element, nils included: a range wider than
 * any table the sandbox can hold is only a long loop. */
static int g_move(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer f = luaL_checkinteger(L, 2);
  lua_Integer e = luaL_checkinteger(L, 3);
  luaL_checkinteger(L, 4);
  lua_Integer most = (lua_Integer)(SANDBOX_MEMORY / 16);
  if (e >= f && (f <= 0 ? e >= most + f : e - f >= most))
    return fail(L, "table.move of more than %lld elements refused",
                (long long)most);
  return call_real(L);
}

static int g_sort(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  if (lua_isnoneornil(L, 2)) {
    double n = (double)luaL_len(L, 1);
    if (n > 1 && n * log2(n) > SORT_STEPS)
      return fail(L,
                  "table.sort of %.0f elements refused: without a comparator "
                  "a config may sort about %.0f",
                  n, SORT_STEPS / 20);
  }
  return call_real(L);
}

/* ---- the environment ---------------------------------------------------- */

/* env("NAME") reads a variable, which becomes a secret. env("NAME",
 * default) falls back to the default, which is not a secret. A variable
 * that is not set (and has no default) is not an error yet: it is noted,
 * with its line, and stands as a marker string (CP_ENV_MISSING, the name,
 * CP_ENV_MISSING) wherever the file puts it, so that the caller can tell
 * which of the missing ones the pipeline at hand reads, and name them all
 * at once. */
#define CP_ENV_MISSING "\x01cogpipe-env-missing\x01"
static int l_env(lua_State *L) {
  if (lua_type(L, 1) != LUA_TSTRING || lua_rawlen(L, 1) == 0)
    return fail(L, "env() needs a variable name");
  const char *var = lua_tostring(L, 1);
  const char *v = getenv(var);
  if (!v || !*v) {
    if (!lua_isnoneornil(L, 2)) {
      lua_settop(L, 2);
      return 1;
    }
    lua_rawgeti(L, LUA_REGISTRYINDEX, box_of(L)->missing);
    lua_createtable(L, 0, 2);
    lua_pushvalue(L, 1);
    lua_setfield(L, -2, "name");
    lua_pushinteger(L, tenant_line(L));
    lua_setfield(L, -2, "line");
    lua_rawseti(L, -2, (lua_Integer)lua_rawlen(L, -2) + 1);
    lua_pushfstring(L, CP_ENV_MISSING "%s" CP_ENV_MISSING, var);
    return 1;
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, box_of(L)->secrets);
  lua_pushstring(L, v);
  lua_pushvalue(L, -1);
  lua_rawseti(L, -3, (lua_Integer)lua_rawlen(L, -3) + 1);
  return 1;
}

static int undefined_global(lua_State *L) {
  return fail(L,
              "undefined global '%s' (tenant files may only use env() and "
              "pure functions)",
              luaL_tolstring(L, 2, NULL));
}

static int global_assignment(lua_State *L) {
  return fail(L, "assignment to global '%s' (use local)",
              luaL_tolstring(L, 2, NULL));
}

/* Calls luaopen_<lib> and leaves the library's table on the stack. */
static void open_lib(lua_State *L, lua_CFunction open) {
  lua_pushcfunction(L, open);
  lua_call(L, 0, 1);
}

static void copy_fields(lua_State *L, int from, const char *const *names) {
  for (; *names; names++) {
    lua_getfield(L, from, *names);
    lua_setfield(L, -2, *names);
  }
}

/* Wraps lib[name] (lib at the top) in a guard that calls the original. */
static void guard(lua_State *L, const char *name, lua_CFunction fn) {
  lua_getfield(L, -1, name);
  lua_pushcclosure(L, fn, 1);
  lua_setfield(L, -2, name);
}

/* Sets a library table aside under registry._LOADED so that errors the real
 * functions raise name them ("bad argument #2 to 'string.format'"). */
static void keep_originals(lua_State *L, const char *name) {
  lua_getfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_newtable(L);
  lua_pushnil(L);
  while (lua_next(L, -4)) {
    lua_pushvalue(L, -2);
    lua_insert(L, -2);
    lua_rawset(L, -4);
  }
  lua_setfield(L, -2, name);
  lua_pop(L, 1);
}

/* Builds the tenant's globals (protected: may run out of memory). Only the
 * allow list is reachable: the base library's own global table, with load,
 * pcall, getmetatable and the rest, is replaced, and of os only the clock
 * functions are kept. There is no pcall, so no error, budget included, can
 * be swallowed. */
static int setup(lua_State *L) {
  static const char *const base_names[] = {
      "assert", "error",    "ipairs",   "next", "pairs",
      "select", "tonumber", "tostring", "type", NULL};
  static const char *const os_names[] = {"time", "date", "clock", NULL};
  lua_newtable(L);
  lua_setfield(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  lua_newtable(L);
  box_of(L)->secrets = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_newtable(L);
  box_of(L)->missing = luaL_ref(L, LUA_REGISTRYINDEX);

  lua_newtable(L); /* the tenant's globals */
  int env = lua_gettop(L);
  open_lib(L, luaopen_base);
  lua_pushvalue(L, env);
  copy_fields(L, -2, base_names);
  lua_pop(L, 2);

  /* the string table is also the strings' metatable's __index, so methods
   * ("x"):rep(n) go through the same guards */
  open_lib(L, luaopen_string);
  keep_originals(L, "string");
  guard(L, "find", g_find);
  guard(L, "match", g_match);
  guard(L, "gmatch", g_gmatch);
  guard(L, "gsub", g_gsub);
  guard(L, "rep", g_rep);
  guard(L, "format", g_format);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  lua_setfield(L, env, "string");

  open_lib(L, luaopen_table);
  keep_originals(L, "table");
  guard(L, "concat", g_concat);
  guard(L, "move", g_move);
  guard(L, "sort", g_sort);
  lua_setfield(L, env, "table");

  open_lib(L, luaopen_math);
  lua_setfield(L, env, "math");
  open_lib(L, luaopen_utf8);
  lua_setfield(L, env, "utf8");
  open_lib(L, luaopen_os);
  lua_newtable(L);
  copy_fields(L, -2, os_names);
  lua_setfield(L, env, "os");
  lua_pop(L, 1);

  lua_pushcfunction(L, l_env);
  lua_setfield(L, env, "env");
  lua_createtable(L, 0, 2);
  lua_pushcfunction(L, undefined_global);
  lua_setfield(L, -2, "__index");
  lua_pushcfunction(L, global_assignment);
  lua_setfield(L, -2, "__newindex");
  lua_setmetatable(L, env);
  lua_rawseti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  return 0;
}

/* Sets the sandbox up and loads the tenant's text (protected: may run out
 * of memory). Returns the load status and the chunk or the message. */
static int prepare(lua_State *L) {
  sandbox *b = box_of(L);
  lua_pushcfunction(L, setup);
  lua_call(L, 0, 0);
  /* Lua shortens "@<path>" in its messages; learn how, to undo it */
  const char *chunkname = lua_pushfstring(L, "@%s", b->path);
  lua_Debug ar;
  if (luaL_loadbufferx(L, "", 0, chunkname, "t") == LUA_OK &&
      lua_getinfo(L, ">S", &ar))
    memcpy(b->short_src, ar.short_src, sizeof b->short_src);
  lua_settop(L, 1);
  lua_pushinteger(L, luaL_loadbufferx(L, b->src, b->src_len, chunkname, "t"));
  lua_insert(L, -2);
  return 2;
}

/* ---- errors ------------------------------------------------------------- */

/* Pushes msg onto D as "<file>:<line>: <why>", with the file as the user
 * named it: Lua's own prefix (which shortens long paths) is replaced, and a
 * message without one gets line (when known). */
static const char *push_located(lua_State *D, const sandbox *b, const char *msg,
                                int line) {
  size_t sl = strlen(b->short_src);
  if (sl > 0 && strncmp(msg, b->short_src, sl) == 0 && msg[sl] == ':' &&
      isdigit((unsigned char)msg[sl + 1]))
    return lua_pushfstring(D, "%s%s", b->path, msg + sl);
  if (line > 0) return lua_pushfstring(D, "%s:%d: %s", b->path, line, msg);
  return lua_pushfstring(D, "%s: %s", b->path, msg);
}

/* Message handler of the tenant's chunk. No pcall exists in the sandbox, so
 * an error here always ends the file: the memory limit is lifted for the
 * message, and the hooks stop. */
static int on_error(lua_State *L) {
  sandbox *b = box_of(L);
  b->running = 0;
  b->stopped = 1;
  b->limit = SIZE_MAX;
  const char *msg = lua_tostring(L, 1);
  if (!msg)
    msg =
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  else if (b->refusals && strcmp(msg, "not enough memory") == 0)
    msg = lua_pushfstring(L, "config needs more than %d MiB of memory",
                          SANDBOX_MEMORY_MIB);
  push_located(L, b, msg, tenant_line(L));
  return 1;
}

/* ---- the copy ----------------------------------------------------------- */

/* Copies the result from the tenant's state S to the caller's D. Nothing
 * here may raise in S, which has no protection around it: only reads that
 * allocate nothing are made there. Errors in D (memory) unwind to the
 * caller's pcall, and the box closes S. */
typedef struct copier {
  sandbox *b;
  lua_State *S, *D;
  int done, active; /* D: table identity -> its copy; tables being copied */
  char path[256];   /* the key path, e.g. webhooks[1].url */
  size_t plen;
  char why[400]; /* on refusal: why, and the line it is blamed on */
  int line;
} copier;

static void path_add(copier *c, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
static void path_add(copier *c, const char *fmt, ...) {
  if (c->plen >= sizeof c->path - 1) return;
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(c->path + c->plen, sizeof c->path - c->plen, fmt, ap);
  va_end(ap);
  if (n > 0) c->plen += (size_t)n;
  if (c->plen >= sizeof c->path) c->plen = sizeof c->path - 1;
}

static int is_name(const char *s, size_t len) {
  if (len == 0 || len > 60 || isdigit((unsigned char)s[0])) return 0;
  for (size_t i = 0; i < len; i++)
    if (!isalnum((unsigned char)s[i]) && s[i] != '_') return 0;
  return 1;
}

/* Appends the key at S[-2] to the path; 0 if keys of its type are refused. */
static int path_key(copier *c) {
  lua_State *S = c->S;
  switch (lua_type(S, -2)) {
  case LUA_TSTRING: {
    size_t len;
    const char *k = lua_tolstring(S, -2, &len);
    if (is_name(k, len))
      path_add(c, "%s%s", c->plen ? "." : "", k);
    else
      path_add(c, "[\"%.*s%s\"]", len > 40 ? 40 : (int)len, k,
               len > 40 ? "..." : "");
    return 1;
  }
  case LUA_TNUMBER:
    if (lua_isinteger(S, -2))
      path_add(c, "[%lld]", (long long)lua_tointeger(S, -2));
    else
      path_add(c, "[%.14g]", (double)lua_tonumber(S, -2));
    return 1;
  case LUA_TBOOLEAN:
    path_add(c, "[%s]", lua_toboolean(S, -2) ? "true" : "false");
    return 1;
  default: return 0;
  }
}

static const char *path_or_root(copier *c) {
  return c->plen ? c->path : "the config";
}

static int refuse(copier *c, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int refuse(copier *c, int line, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(c->why, sizeof c->why, fmt, ap);
  va_end(ap);
  /* a function knows where it was defined; anything else is blamed on the
   * return statement */
  c->line = line > 0 ? line : c->b->return_line;
  return -1;
}

static int copy_value(copier *c, int depth);

/* Copies the table at the top of S and pushes the copy onto D. */
static int copy_table(copier *c, int depth) {
  lua_State *S = c->S, *D = c->D;
  const void *id = lua_topointer(S, -1);
  if (lua_rawgetp(D, c->active, id) != LUA_TNIL)
    return refuse(c, 0,
                  "%s is a table that contains itself (a cycle); a config "
                  "must be a tree of values",
                  path_or_root(c));
  lua_pop(D, 1);
  if (lua_rawgetp(D, c->done, id) == LUA_TTABLE) return 0; /* shared */
  lua_pop(D, 1);
  if (depth >= MAX_DEPTH)
    return refuse(c, 0, "%s is nested more than %d tables deep",
                  path_or_root(c), MAX_DEPTH);
  if (!lua_checkstack(S, 4))
    return refuse(c, 0, "%s: out of stack space", path_or_root(c));
  luaL_checkstack(D, 8, "copying a tenant table");
  lua_pushboolean(D, 1);
  lua_rawsetp(D, c->active, id);
  lua_newtable(D);
  int copy = lua_gettop(D);
  int src = lua_gettop(S);
  lua_pushnil(S);
  while (lua_next(S, src)) {
    size_t plen = c->plen;
    if (!path_key(c))
      return refuse(c, 0,
                    "%s has a key that is a %s; keys must be strings, "
                    "numbers or booleans",
                    path_or_root(c), lua_typename(S, lua_type(S, -2)));
    if (lua_type(S, -2) == LUA_TSTRING) {
      size_t len;
      const char *k = lua_tolstring(S, -2, &len);
      lua_pushlstring(D, k, len);
    } else if (lua_type(S, -2) == LUA_TBOOLEAN) {
      lua_pushboolean(D, lua_toboolean(S, -2));
    } else if (lua_isinteger(S, -2)) {
      lua_pushinteger(D, lua_tointeger(S, -2));
    } else {
      lua_pushnumber(D, lua_tonumber(S, -2));
    }
    if (copy_value(c, depth + 1) != 0) return -1;
    lua_rawset(D, copy);
    lua_pop(S, 1);
    c->plen = plen;
    c->path[plen] = '\0';
  }
  lua_pushnil(D);
  lua_rawsetp(D, c->active, id);
  lua_pushvalue(D, copy);
  lua_rawsetp(D, c->done, id);
  return 0;
}

/* Copies the value at the top of S (leaving it there) onto D. */
static int copy_value(copier *c, int depth) {
  lua_State *S = c->S, *D = c->D;
  switch (lua_type(S, -1)) {
  case LUA_TNIL: lua_pushnil(D); return 0;
  case LUA_TBOOLEAN: lua_pushboolean(D, lua_toboolean(S, -1)); return 0;
  case LUA_TNUMBER:
    if (lua_isinteger(S, -1))
      lua_pushinteger(D, lua_tointeger(S, -1));
    else
      lua_pushnumber(D, lua_tonumber(S, -1));
    return 0;
  case LUA_TSTRING: {
    size_t len;
    const char *s = lua_tolstring(S, -1, &len);
    lua_pushlstring(D, s, len);
    return 0;
  }
  case LUA_TTABLE: return copy_table(c, depth);
  case LUA_TFUNCTION: {
    lua_Debug ar;
    lua_pushvalue(S, -1);
    int line = lua_getinfo(S, ">S", &ar) ? ar.linedefined : 0;
    return refuse(c, line,
                  "%s is a function; a config may hold only tables, "
                  "strings, numbers and booleans",
                  path_or_root(c));
  }
  default:
    return refuse(c, 0,
                  "%s is a %s; a config may hold only tables, strings, "
                  "numbers and booleans",
                  path_or_root(c), lua_typename(S, lua_type(S, -1)));
  }
}

/* ---- the module --------------------------------------------------------- */

static void box_close(sandbox *b) {
  if (b->L) lua_close(b->L);
  b->L = NULL;
}

static int box_gc(lua_State *L) {
  box_close(lua_touserdata(L, 1));
  return 0;
}

/* Turns the located message at the top of L into nil and an error table
 * {kind="config", message=, file=, line=}. */
static void push_config_error(lua_State *L, const sandbox *b) {
  const char *msg = lua_tostring(L, -1);
  lua_pushnil(L);
  cp_lua_push_error(L, "config", "%s", msg);
  cp_lua_setstr(L, "file", b->path);
  size_t pl = strlen(b->path);
  if (strncmp(msg, b->path, pl) == 0 && isdigit((unsigned char)msg[pl + 1]))
    cp_lua_setint(L, "line", strtol(msg + pl + 1, NULL, 10));
  lua_remove(L, -3);
}

/* Pushes onto L the list {name, line} of the variables env() found unset. */
static void push_missing(lua_State *L, const sandbox *b) {
  lua_State *S = b->L;
  lua_newtable(L);
  if (lua_rawgeti(S, LUA_REGISTRYINDEX, b->missing) == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(S, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      if (lua_rawgeti(S, -1, i) == LUA_TTABLE) {
        lua_createtable(L, 0, 2);
        if (lua_getfield(S, -1, "name") == LUA_TSTRING) {
          lua_pushstring(L, lua_tostring(S, -1));
          lua_setfield(L, -2, "name");
        }
        lua_pop(S, 1);
        lua_getfield(S, -1, "line");
        lua_pushinteger(L, lua_tointeger(S, -1));
        lua_setfield(L, -2, "line");
        lua_pop(S, 1);
        lua_rawseti(L, -2, i);
      }
      lua_pop(S, 1);
    }
  }
  lua_pop(S, 1);
}

/* Pushes onto L the list of the values env() returned in S. */
static void push_secrets(lua_State *L, const sandbox *b) {
  lua_State *S = b->L;
  lua_newtable(L);
  if (lua_rawgeti(S, LUA_REGISTRYINDEX, b->secrets) == LUA_TTABLE) {
    lua_Integer n = (lua_Integer)lua_rawlen(S, -1);
    for (lua_Integer i = 1; i <= n; i++) {
      size_t len;
      if (lua_rawgeti(S, -1, i) == LUA_TSTRING) {
        const char *v = lua_tolstring(S, -1, &len);
        lua_pushlstring(L, v, len);
        lua_rawseti(L, -2, i);
      }
      lua_pop(S, 1);
    }
  }
  lua_pop(S, 1);
}

/* Runs the chunk at the top of S under the limits. Returns the status of the
 * protected call, with its result or located message on S. */
static int run_chunk(sandbox *b) {
  lua_State *S = b->L;
  lua_pushcfunction(S, on_error);
  lua_insert(S, -2);
  b->deadline = uv_hrtime() + (uint64_t)SANDBOX_SECONDS * 1000000000u;
  b->running = 1;
  lua_sethook(S, hook, LUA_MASKCOUNT | LUA_MASKCALL | LUA_MASKRET, HOOK_EVERY);
  int st = lua_pcall(S, 0, 1, -2);
  lua_sethook(S, NULL, 0, 0);
  b->running = 0;
  return st;
}

/* Copies the table at the top of S to L (returns 1), or pushes nil and the
 * error (returns 0). */
static int push_result(lua_State *L, sandbox *b) {
  copier c = {.b = b, .S = b->L, .D = L};
  lua_newtable(L);
  c.done = lua_gettop(L);
  lua_newtable(L);
  c.active = lua_gettop(L);
  if (copy_value(&c, 0) == 0) {
    lua_replace(L, c.done);
    lua_settop(L, c.done);
    return 1;
  }
  lua_settop(L, c.done - 1);
  push_located(L, b, c.why, c.line);
  push_config_error(L, b);
  return 0;
}

/* sandbox.eval(source, path) -> table, secrets, line, missing
 *                             | nil, err, secrets, missing
 * Evaluates the text of a tenant file named path (used in messages) in a
 * fresh bounded state. On success: a copy of the table it returned, the
 * values it read through env(), and the line it returned at. Any error of
 * the file is a config error whose message starts "<path>:<line>: " (the
 * line when there is one); the secrets read before it let the caller
 * redact the message. missing lists {name, line} of the variables env()
 * found unset; each stands in the result as a marker (sandbox.MISSING, the
 * name, sandbox.MISSING) for the caller to resolve. */
static int l_eval(lua_State *L) {
  size_t len;
  const char *src = luaL_checklstring(L, 1, &len);
  const char *path = luaL_checkstring(L, 2);
  lua_settop(L, 2);

  /* The box owns S: whatever raises in L from here on, closing the box
   * (a to-be-closed slot) closes S. Nothing may raise in S outside a
   * protected call: after one, only reads that allocate nothing are made
   * there, and the memory limit is lifted. */
  sandbox *b = lua_newuserdatauv(L, sizeof *b, 0);
  memset(b, 0, sizeof *b);
  if (luaL_newmetatable(L, "cogpipe.sandbox")) {
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, box_gc);
    lua_setfield(L, -2, "__close");
  }
  lua_setmetatable(L, -2);
  lua_toclose(L, 3);
  b->limit = SANDBOX_MEMORY;
  b->path = path;
  b->src = src;
  b->src_len = len;
  b->L = lua_newstate(box_alloc, b);
  if (!b->L) /* only memory can be missing */
    return cp_lua_nomem(L, "creating the sandbox for a tenant file");
  lua_State *S = b->L;
  *(sandbox **)lua_getextraspace(S) = b;

  int ok = 0, ran = 0;
  lua_pushcfunction(S, prepare);
  int st = lua_pcall(S, 0, 2, 0);
  if (st == LUA_OK) {
    st = (int)lua_tointeger(S, -2);
    if (st == LUA_OK) {
      st = run_chunk(b);
      ran = 1;
    }
  }
  b->limit = SIZE_MAX;

  if (st == LUA_ERRMEM && b->system_refused)
    return cp_lua_nomem(L, "evaluating a tenant file");
  if (st == LUA_ERRMEM) {
    push_located(L, b,
                 lua_pushfstring(L, "config needs more than %d MiB of memory",
                                 SANDBOX_MEMORY_MIB),
                 b->refused_line);
    push_config_error(L, b);
  } else if (st != LUA_OK) {
    const char *msg =
        lua_type(S, -1) == LUA_TSTRING ? lua_tostring(S, -1) : "error";
    if (ran && st == LUA_ERRRUN)
      lua_pushstring(L, msg); /* on_error located it */
    else
      push_located(L, b, msg, 0);
    push_config_error(L, b);
  } else if (lua_type(S, -1) != LUA_TTABLE) {
    push_located(L, b,
                 lua_pushfstring(L, "config must return a table, not %s",
                                 luaL_typename(S, -1)),
                 b->return_line);
    push_config_error(L, b);
  } else {
    ok = push_result(L, b);
  }
  push_secrets(L, b);
  if (ok) lua_pushinteger(L, b->return_line);
  push_missing(L, b);
  lua_closeslot(L, 3);
  return 4;
}

static const luaL_Reg sandbox_fns[] = {{"eval", l_eval}, {NULL, NULL}};

int luaopen_cogpipe_sandbox(lua_State *L) {
  luaL_newlib(L, sandbox_fns);
  lua_pushinteger(L, (lua_Integer)SANDBOX_MEMORY);
  lua_setfield(L, -2, "MEMORY_LIMIT");
  lua_pushinteger(L, SANDBOX_SECONDS);
  lua_setfield(L, -2, "TIME_LIMIT");
  lua_pushinteger(L, SANDBOX_INSTRUCTIONS);
  lua_setfield(L, -2, "INSTRUCTION_LIMIT");
  lua_pushliteral(L, CP_ENV_MISSING);
  lua_setfield(L, -2, "MISSING");
  return 1;
}
