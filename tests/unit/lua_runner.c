/* Runs one Lua test file inside the hook runtime (lua/ and the C modules
 * hookd.json and hookd.core), so runtime modules are tested as they run in
 * the router; FILE's folder is searched first by require, for the shared
 * test module testing.lua. Usage: lua_runner FILE.lua; exit status 0 when
 * it ran without error. Built by CMake as the target lua_runner; by hand:
 *   gcc -std=c11 -D_GNU_SOURCE -Icore -I/usr/include/luajit-2.1 \
 *     -DHOOKD_VERSION='"dev"' -DHOOKD_DEFAULT_LUA_DIR='"'$PWD/lua'"' \
 *     tests/unit/lua_runner.c core/bridge.c core/lua_json.c \
 *     core/datetime.c core/buf.c core/log.c \
 *     -lluajit-5.1 -llua5.1-cjson -lm -rdynamic -o /tmp/lua_runner */
#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#include "bridge.h"

static int traceback_cb(lua_State *L) {
  luaL_traceback(L, L, lua_tostring(L, 1), 1);
  return 1;
}

/* Prepends "<folder of file>/?.lua;" to package.path. */
static void path_add_dir_of(lua_State *L, const char *file) {
  const char *slash = strrchr(file, '/');

  lua_getglobal(L, "package");
  if (slash != NULL) lua_pushlstring(L, file, (size_t)(slash - file));
  else lua_pushliteral(L, ".");
  lua_pushliteral(L, "/?.lua;");
  lua_getfield(L, -3, "path");
  lua_concat(L, 3);
  lua_setfield(L, -2, "path");
  lua_pop(L, 1);
}

int main(int argc, char **argv) {
  char err[512];
  lua_State *L;
  int rc;

  if (argc != 2) {
    fprintf(stderr, "usage: %s FILE.lua\n", argv[0]);
    return 2;
  }
  L = luaL_newstate();
  if (hk_lua_open_runtime(L, HOOKD_DEFAULT_LUA_DIR, err, sizeof err) != 0) {
    fprintf(stderr, "%s\n", err);
    return 2;
  }
  path_add_dir_of(L, argv[1]);
  lua_pushcfunction(L, traceback_cb);
  if (luaL_loadfile(L, argv[1]) != 0) {
    fprintf(stderr, "%s\n", lua_tostring(L, -1));
    return 1;
  }
  rc = lua_pcall(L, 0, 0, 1);
  if (rc != 0) fprintf(stderr, "FAIL %s\n", lua_tostring(L, -1));
  lua_close(L);
  return rc == 0 ? 0 : 1;
}
