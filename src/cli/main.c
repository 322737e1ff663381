/*
 * main.c -- the cogpipe command: a thin client of libcogpipe's public API,
 * as lua.c is of liblua. It parses the command line, runs a script or a
 * command module (lua/cogpipe/cmd/<name>.lua) in a runtime, and turns the
 * outcome into an exit status. It has no back door into the library.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "cogpipe.h"

static const char *progname = "cogpipe";

/* Messages about memory come from stdio on stderr, which is unbuffered:
 * they need no memory of their own. */
static void out_of_memory(const char *name, const char *doing) {
  fprintf(stderr, "%s: out of memory while %s the %s command; it failed (exit status 1)\n",
          progname, doing, name);
}

static cp_runtime *new_runtime(const char *name) {
  cp_runtime *rt = cp_runtime_new(NULL);
  if (!rt && errno == ENOMEM) out_of_memory(name, "starting");
  else if (!rt) fprintf(stderr, "%s: cannot create a runtime: %s\n", progname, strerror(errno));
  return rt;
}

static int report(cp_runtime *rt, cp_status st) {
  const char *err = cp_runtime_error(rt);
  if (err) fprintf(stderr, "%s: %s\n", progname, err);
  return (int)st;
}

/* Every command is a Lua module cogpipe.cmd.<name> (run, check, audit, ...)
 * whose main(args) returns the exit status; the runtime's own status (a
 * failed task nobody waited for, a requested status) wins when it is worse. */
static const char dispatch[] =
    "local name = ...\n"
    "local ok, mod = pcall(require, 'cogpipe.cmd.' .. name)\n"
    "if not ok then\n"
    "  if tostring(mod):find(\"module 'cogpipe.cmd.\" .. name .. \"' not found\", 1, true) then\n"
    "    io.stderr:write('cogpipe: unknown command \\'' .. name .. '\\' (see cogpipe help)\\n')\n"
    "    return 2\n"
    "  end\n"
    "  error(mod, 0)\n"
    "end\n"
    "if (arg[1] == '--help' or arg[1] == '-h') and mod.usage then\n"
    "  io.stdout:write(mod.usage)\n"
    "  return 0\n"
    "end\n"
    "return mod.main(arg)\n";

static int valid_command(const char *name) {
  if (!*name) return 0;
  for (const char *p = name; *p; p++)
    if (!((*p >= 'a' && *p <= 'z') || *p == '_')) return 0;
  return 1;
}

static int cmd_module(const char *name, int argc, char **argv) {
  if (!valid_command(name)) {
    fprintf(stderr, "%s: unknown command '%s' (see %s help)\n", progname,
            name, progname);
    return CP_EUSAGE;
  }
  cp_runtime *rt = new_runtime(name);
  if (!rt) return CP_EFAILED;
  if (cp_runtime_set_args(rt, name, argc, argv) != 0) {
    out_of_memory(name, "starting");
    cp_runtime_free(rt);
    return CP_EFAILED;
  }
  lua_State *L = cp_runtime_lua(rt);
  /* The chunk takes the command name as its vararg. */
  char code[sizeof dispatch + 64];
  snprintf(code, sizeof code, "return (function(...)\n%s\nend)('%s')", dispatch,
           name);
  cp_status st = cp_runtime_run_string(rt, code, "=cogpipe");
  int exitcode = report(rt, st);
  if (st == CP_OK) {
    int n = cp_runtime_push_results(rt);
    if (n > 0 && lua_isinteger(L, -n)) exitcode = (int)lua_tointeger(L, -n);
    lua_pop(L, n);
  }
  if ((int)st > exitcode) exitcode = (int)st;
  if (cp_runtime_out_of_memory(rt)) {
    /* whatever the command said it found, it may not have seen it all */
    out_of_memory(name, "running");
    exitcode = CP_EFAILED;
  }
  cp_runtime_free(rt);
  return exitcode;
}

int main(int argc, char **argv) {
  /* The usage texts live with the commands (cogpipe.cmd.help gathers
   * them), so that help, --help and the README cannot drift apart. */
  static char usage_error[] = "--usage-error";
  if (argc < 2) return cmd_module("help", 1, (char *[]){usage_error});
  const char *cmd = argv[1];
  if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
    printf("cogpipe %s (%s, libuv %s)\n", cp_version(), LUA_RELEASE,
           uv_version_string());
    return CP_OK;
  }
  if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0)
    return cmd_module("help", 0, argv + 2);
  if (cmd[0] == '-') {
    fprintf(stderr, "%s: unknown option '%s' (see %s help)\n", progname, cmd,
            progname);
    return CP_EUSAGE;
  }
  return cmd_module(cmd, argc - 2, argv + 2);
}
