/* Unit tests of require.c: every module of lua/cogpipe is compiled in and
 * loaded from there, with file:line of the source tree in errors, and a
 * tree named by lua_dir or COGPIPE_LUA_DIR replaces that copy whole. */
#include "check.h"
#include "cogpipe.h"
#include "require.h"

#include <dirent.h>
#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

static char lua_root[1024]; /* <source>/lua */

/* The whole file at path (malloc'd, the caller's), its size in *size; NULL
 * when it cannot be read. */
static char *slurp(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) return NULL;
  size_t cap = 1 << 16, n = 0;
  char *data = malloc(cap);
  size_t got;
  while (data && (got = fread(data + n, 1, cap - n, f)) > 0) {
    n += got;
    if (n == cap) data = realloc(data, cap *= 2);
  }
  fclose(f);
  *size = n;
  return data;
}

static void spill(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  CHECK(f != NULL);
  if (!f) return;
  fputs(text, f);
  fclose(f);
}

static void remove_tree(const char *path) {
  DIR *d = opendir(path);
  if (!d) {
    unlink(path);
    return;
  }
  struct dirent *e;
  while ((e = readdir(d))) {
    if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
    char sub[1024];
    snprintf(sub, sizeof sub, "%s/%s", path, e->d_name);
    remove_tree(sub);
  }
  closedir(d);
  rmdir(path);
}

static const cp_lua_module *find(const char *name) {
  for (const cp_lua_module *m = cp_lua_modules; m->name; m++)
    if (strcmp(m->name, name) == 0) return m;
  return NULL;
}

/* Checks that the module called name is the file lua/<rel>, byte for byte,
 * with the chunk name "@lua/<rel>". */
static void compare_module(const char *name, const char *rel) {
  char file[1024], chunk[600];
  snprintf(file, sizeof file, "%s/%s", lua_root, rel);
  snprintf(chunk, sizeof chunk, "@lua/%s", rel);
  const cp_lua_module *m = find(name);
  if (!m) {
    fprintf(stderr, "%s: not compiled in as %s\n", file, name);
    CHECK(m != NULL);
    return;
  }
  CHECK_STR(m->chunkname, chunk);
  size_t size = 0;
  char *text = slurp(file, &size);
  CHECK(text != NULL);
  CHECK_INT(m->size, size);
  CHECK(text && m->size == size && memcmp(m->code, text, size) == 0);
  free(text);
}

/* Checks each .lua file under lua/<rel> against the embedded copy; returns
 * how many names it should have there. */
static int compare_tree(const char *rel) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", lua_root, rel);
  DIR *d = opendir(path);
  CHECK(d != NULL);
  if (!d) return 0;
  int seen = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    char sub[512], file[1024];
    snprintf(sub, sizeof sub, "%s/%s", rel, e->d_name);
    snprintf(file, sizeof file, "%s/%s", lua_root, sub);
    struct stat st;
    CHECK(stat(file, &st) == 0);
    if (S_ISDIR(st.st_mode)) {
      seen += compare_tree(sub);
      continue;
    }
    size_t len = strlen(sub);
    if (len < 4 || strcmp(sub + len - 4, ".lua") != 0) continue;
    /* found as package.path's "?.lua;?/init.lua" would: cogpipe/cmd/run.lua
     * is cogpipe.cmd.run, cogpipe/cmd/init.lua cogpipe.cmd.init and
     * cogpipe.cmd */
    char name[512];
    snprintf(name, sizeof name, "%.*s", (int)(len - 4), sub);
    for (char *p = name; *p; p++)
      if (*p == '/') *p = '.';
    compare_module(name, sub);
    seen++;
    size_t nlen = strlen(name);
    if (nlen > 5 && strcmp(name + nlen - 5, ".init") == 0) {
      name[nlen - 5] = 0;
      compare_module(name, sub);
      seen++;
    }
  }
  closedir(d);
  return seen;
}

static void test_every_module_is_compiled_in(void) {
  int seen = compare_tree("cogpipe");
  int embedded = 0;
  for (const cp_lua_module *m = cp_lua_modules; m->name; m++)
    embedded++;
  CHECK(seen > 20);
  CHECK_INT(embedded, seen); /* and none that the tree no longer has */
  CHECK(find("cogpipe") && find("cogpipe.cmd.run") &&
        find("cogpipe.cmd.init") && find("cogpipe.cognigy.client"));
}

/* Runs code in a fresh runtime (lua_dir as given) and returns its first
 * two results as strings, or the error, in out (two slots of 1024). */
static cp_status run(const char *lua_dir, const char *code, char out[2][1024]) {
  cp_runtime_options opts = {0};
  opts.lua_dir = lua_dir;
  cp_runtime *rt = cp_runtime_new(&opts);
  CHECK(rt != NULL);
  if (!rt) return CP_EFAILED;
  cp_status st = cp_runtime_run_string(rt, code, "=test");
  out[0][0] = out[1][0] = 0;
  if (st == CP_OK) {
    lua_State *L = cp_runtime_lua(rt);
    int n = cp_runtime_push_results(rt);
    for (int i = 0; i < n && i < 2; i++) {
      snprintf(out[i], 1024, "%s", luaL_tolstring(L, -n + i, NULL));
      lua_pop(L, 1); /* the string luaL_tolstring pushed */
    }
    lua_pop(L, n);
  } else {
    snprintf(out[0], 1024, "%s", cp_runtime_error(rt));
  }
  cp_runtime_free(rt);
  return st;
}

static char tmp[256];

static void test_embedded_copy_is_used_and_not_shadowed(void) {
  /* a cogpipe/ on package.path ahead of everything else is not taken */
  char path[512], code[1024], out[2][1024];
  snprintf(path, sizeof path, "%s/decoy", tmp);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/decoy/cogpipe", tmp);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/decoy/cogpipe/pipeline.lua", tmp);
  spill(path, "error('the decoy was loaded')\n");
  snprintf(code, sizeof code,
           "package.path = '%s/decoy/?.lua;' .. package.path\n"
           "local p, where = require 'cogpipe.pipeline'\n"
           "return where, debug.getinfo(p.new, 'S').source\n",
           tmp);
  CHECK_INT(run(NULL, code, out), CP_OK);
  CHECK_STR(out[0], ":embedded:");
  CHECK_STR(out[1], "@lua/cogpipe/pipeline.lua");
  /* "cogpipe" itself, and the command's modules */
  CHECK_INT(run(NULL,
                "return select(2, require 'cogpipe'), "
                "select(2, require 'cogpipe.cmd.check')",
                out),
            CP_OK);
  CHECK_STR(out[0], ":embedded:");
  CHECK_STR(out[1], ":embedded:");
  /* an unknown module is still "not found", and says where it looked */
  CHECK_INT(run(NULL, "require 'cogpipe.no_such'", out), CP_EFAILED);
  CHECK(strstr(out[0], "module 'cogpipe.no_such' not found") != NULL);
  CHECK(strstr(out[0], "no module 'cogpipe.no_such' compiled into cogpipe"));
}

static void test_errors_name_the_source_file_and_line(void) {
  char out[2][1024];
  CHECK_INT(run(NULL,
                "local ok, tb = xpcall(require('cogpipe.pipeline').new, "
                "debug.traceback, {})\n"
                "return tb:match('lua/cogpipe/pipeline%.lua:(%d+):'), tb\n",
                out),
            CP_OK);
  long line = strtol(out[0], NULL, 10);
  CHECK(line > 0);
  /* the line named is the one in the source tree that raised */
  char file[1024];
  snprintf(file, sizeof file, "%s/cogpipe/pipeline.lua", lua_root);
  size_t size = 0;
  char *text = slurp(file, &size);
  CHECK(text != NULL);
  if (!text || line <= 0) {
    fprintf(stderr, "traceback: %s\n", out[1]);
    free(text);
    return;
  }
  char *p = text, *end = text + size;
  for (long i = 1; i < line && p < end; i++) {
    p = memchr(p, '\n', (size_t)(end - p));
    p = p ? p + 1 : end;
  }
  char *eol = memchr(p, '\n', (size_t)(end - p));
  if (eol) *eol = 0;
  CHECK(strstr(p, "error(") != NULL);
  free(text);
}

/* A tree with cogpipe/pipeline.lua only, of its own. */
static void make_tree(char *dir, size_t size) {
  char path[512];
  snprintf(dir, size, "%s/tree", tmp);
  mkdir(dir, 0700);
  snprintf(path, sizeof path, "%s/cogpipe", dir);
  mkdir(path, 0700);
  snprintf(path, sizeof path, "%s/cogpipe/pipeline.lua", dir);
  spill(path, "return { from_tree = true }\n");
}

static const char from_tree[] = "local p, where = require 'cogpipe.pipeline'\n"
                                "return tostring(p.from_tree), where\n";

static void test_lua_dir_replaces_the_copy(void) {
  char dir[256], want[512], out[2][1024];
  make_tree(dir, sizeof dir);
  unsetenv("COGPIPE_LUA_DIR");
  CHECK_INT(run(dir, from_tree, out), CP_OK);
  CHECK_STR(out[0], "true");
  snprintf(want, sizeof want, "%s/cogpipe/pipeline.lua", dir);
  CHECK_STR(out[1], want);
  /* what the tree lacks is not taken from the copy: an error names it */
  CHECK_INT(run(dir, "require 'cogpipe.runner'", out), CP_EFAILED);
  CHECK(strstr(out[0], "module 'cogpipe.runner' is missing from") != NULL);
  CHECK(strstr(out[0], dir) != NULL);
  CHECK(strstr(out[0], "COGPIPE_LUA_DIR") != NULL);
  /* and a module of nobody's is still not found */
  CHECK_INT(run(dir, "require 'no_such_module'", out), CP_EFAILED);
  CHECK(strstr(out[0], "module 'no_such_module' not found") != NULL);
}

static void test_environment_names_the_tree(void) {
  char dir[256], out[2][1024];
  make_tree(dir, sizeof dir);
  setenv("COGPIPE_LUA_DIR", dir, 1);
  CHECK_INT(run(NULL, from_tree, out), CP_OK);
  CHECK_STR(out[0], "true");
  /* the embedder's lua_dir wins over the environment */
  CHECK_INT(run(lua_root, from_tree, out), CP_OK);
  CHECK_STR(out[0], "nil");
  CHECK(strstr(out[1], "/lua/cogpipe/pipeline.lua") != NULL);
  /* empty is none */
  setenv("COGPIPE_LUA_DIR", "", 1);
  CHECK_INT(run(NULL, from_tree, out), CP_OK);
  CHECK_STR(out[0], "nil");
  CHECK_STR(out[1], ":embedded:");
  unsetenv("COGPIPE_LUA_DIR");
}

int main(void) {
  const char *src = getenv("COGPIPE_SOURCE_DIR");
  snprintf(lua_root, sizeof lua_root, "%s/lua", src ? src : ".");
  snprintf(tmp, sizeof tmp, "%s/cogpipe-require-XXXXXX",
           getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
  if (!mkdtemp(tmp)) {
    perror("mkdtemp");
    return 1;
  }
  unsetenv("COGPIPE_LUA_DIR");
  RUN(test_every_module_is_compiled_in);
  RUN(test_embedded_copy_is_used_and_not_shadowed);
  RUN(test_errors_name_the_source_file_and_line);
  RUN(test_lua_dir_replaces_the_copy);
  RUN(test_environment_names_the_tree);
  remove_tree(tmp);
  DONE();
}
