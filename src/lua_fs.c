/*
 * lua_fs.c -- the cogpipe.fs Lua module: the few file-system operations the
 * Lua half needs and standard Lua lacks (durable writes, directories, a
 * terminal test). It does no buffering or parsing of its own.
 */
#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#include "buf.h"
#include "lutil.h"
#include "modules.h"

/* fs.sync(file): flushes a Lua file handle and fsyncs it, so what was
 * written survives a crash. */
static int l_sync(lua_State *L) {
  luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  luaL_argcheck(L, s->closef != NULL && s->f != NULL, 1, "file is closed");
  if (fflush(s->f) != 0 || fsync(fileno(s->f)) != 0)
    return cp_lua_fail(L, "io", "fsync: %s", strerror(errno));
  lua_pushboolean(L, 1);
  return 1;
}

/* fs.mkdir(path): creates path and its parents (mode 0700: the state
 * directory holds journals and pending webhook bodies). */
static int l_mkdir(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode = luaL_optinteger(L, 2, 0700);
  char *p = cp_strdup(path);
  if (!p) return cp_lua_nomem(L, "creating a directory");
  int rc = 0;
  for (char *q = p + 1;; q++) {
    if (*q == '/' || *q == '\0') {
      char c = *q;
      *q = '\0';
      if (mkdir(p, (mode_t)mode) != 0 && errno != EEXIST) {
        rc = errno;
        *q = c;
        break;
      }
      *q = c;
      if (c == '\0') break;
    }
  }
  free(p); /* before anything can raise */
  if (rc) return cp_lua_fail(L, "io", "mkdir %s: %s", path, strerror(rc));
  lua_pushboolean(L, 1);
  return 1;
}

/* fs.stat(path) -> {size=, mtime=, type="file"|"dir"|"other"} or nil, err */
static int l_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat st;
  if (stat(path, &st) != 0)
    return cp_lua_fail(L, "io", "%s: %s", path, strerror(errno));
  lua_createtable(L, 0, 3);
  cp_lua_setint(L, "size", (lua_Integer)st.st_size);
  cp_lua_setint(L, "mtime", (lua_Integer)st.st_mtime);
  cp_lua_setstr(L, "type", S_ISREG(st.st_mode)   ? "file"
                           : S_ISDIR(st.st_mode) ? "dir"
                                                 : "other");
  return 1;
}

/* fs.isatty(file) -> boolean, for progress output on terminals only. */
static int l_isatty(lua_State *L) {
  luaL_Stream *s = luaL_checkudata(L, 1, LUA_FILEHANDLE);
  int fd = s->f ? fileno(s->f) : -1;
  lua_pushboolean(L, fd >= 0 && uv_guess_handle(fd) == UV_TTY);
  return 1;
}

/* fsync of the directory holding path, so that a rename into it survives
 * a crash too. Returns 0 or an errno (ENOMEM: out of memory). */
static int sync_parent(const char *path) {
  const char *slash = strrchr(path, '/');
  char *dir = slash ? cp_strndup(path, slash == path ? 1 : (size_t)(slash - path))
                    : cp_strdup(".");
  if (!dir) return ENOMEM;
  int err = 0;
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) err = errno;
  else {
    if (fsync(fd) != 0 && errno != EINVAL) err = errno;
    close(fd);
  }
  free(dir);
  return err;
}

/* fs.write_atomic(path, data): write to a temporary file beside path, fsync,
 * rename over path and fsync its directory; readers see the old or the new
 * content, never a torn one, and after a crash the new one. */
static int l_write_atomic(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  cp_buf tmp = CP_BUF_INIT;
  cp_buf_printf(&tmp, "%s.tmp.%ld", path, (long)getpid());
  if (!cp_buf_ok(&tmp)) {
    cp_buf_free(&tmp);
    return cp_lua_nomem(L, "writing a file");
  }
  int fd = open(tmp.data, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  int err = 0;
  if (fd < 0) {
    err = errno;
  } else {
    size_t off = 0;
    while (off < len) {
      ssize_t n = write(fd, data + off, len - off);
      if (n < 0) {
        if (errno == EINTR) continue;
        err = errno;
        break;
      }
      off += (size_t)n;
    }
    if (!err && fsync(fd) != 0) err = errno;
    if (close(fd) != 0 && !err) err = errno;
    if (!err && rename(tmp.data, path) != 0) err = errno;
    if (err) unlink(tmp.data);
    else err = sync_parent(path);
  }
  cp_buf_free(&tmp);
  if (err == ENOMEM) return cp_lua_nomem(L, "writing a file");
  if (err) return cp_lua_fail(L, "io", "write %s: %s", path, strerror(err));
  lua_pushboolean(L, 1);
  return 1;
}

static const luaL_Reg fs_fns[] = {{"sync", l_sync},
                                  {"mkdir", l_mkdir},
                                  {"stat", l_stat},
                                  {"isatty", l_isatty},
                                  {"write_atomic", l_write_atomic},
                                  {NULL, NULL}};

int luaopen_cogpipe_fs(lua_State *L) {
  luaL_newlib(L, fs_fns);
  return 1;
}
