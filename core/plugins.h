/* Watching the plugins folder: every <id>.lua is a hook; new, changed and
 * removed files are (re)loaded or stopped while the router runs. */
#ifndef HOOKD_PLUGINS_H
#define HOOKD_PLUGINS_H

#include <uv.h>

#include "router.h"

typedef struct hk_plugins hk_plugins;

/* Loads every hook in dir now, then watches it. Returns NULL with err when
 * dir cannot be read. */
hk_plugins *hk_plugins_start(uv_loop_t *loop, hk_router *router,
                             const char *dir, char *err, size_t errlen);

/* Loads every hook in dir once, without watching (for `hookd check`).
 * Returns the number of files found, or -1 with err. */
int hk_plugins_load_all(hk_router *router, const char *dir, char *err,
                        size_t errlen);

/* Loads <id>.lua now rather than when the watcher notices it (a file the
 * API has just written). */
void hk_plugins_load_one(hk_plugins *p, const char *id);

void hk_plugins_stop(hk_plugins *p);

#endif
