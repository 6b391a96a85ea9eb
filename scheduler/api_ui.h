/*
 * api_ui.h - the web view (GET /ui/...) and the read routes it needs that the
 * rest of the API does not answer (api_ui.c); part "api".
 *
 * The view's files live in scheduler/ui/ and are compiled into the binary
 * (cmake/embed_ui.cmake writes ui_assets.c): nothing is fetched at run time
 * and there is no JavaScript build. Every path under /ui/ that is not one of
 * those files answers the app shell (index.html), whose script routes on the
 * address, so that /ui/runs/{id} can be bookmarked. docs/ui.md.
 */
#ifndef TR_SCHED_API_UI_H
#define TR_SCHED_API_UI_H

#include <stddef.h>

#include "lib/http/http_server.h"

/* One embedded file. */
struct ui_asset
{
    const char *path;          /* "/ui/app.js" */
    const char *content_type;
    const char *etag;          /* quoted: "\"0123abcd...\"" */
    const unsigned char *data;
    size_t len;
};

/* ui_assets.c (generated): the files, then an entry with a NULL path. */
extern const struct ui_asset ui_assets[];
extern const size_t ui_n_assets;

/* The embedded file served at path (exact, "/ui/app.js"), or NULL. */
const struct ui_asset *ui_asset_find(const char *path, size_t len);

void h_ui(struct tr_http_req *req, void *arg);
void h_run_graph(struct tr_http_req *req, void *arg);

/* Its lines of the route table (api.c), with their roles (auth.h): the page's
 * files are open, the graph is a read. The shell's client-side routes are up
 * to three segments deep below /ui/. */
#define UI_ROUTES                                                                                  \
    {"GET", "/ui", h_ui, AUTH_OPEN}, {"GET", "/ui/{a}", h_ui, AUTH_OPEN},                          \
        {"GET", "/ui/{a}/{b}", h_ui, AUTH_OPEN}, {"GET", "/ui/{a}/{b}/{c}", h_ui, AUTH_OPEN},      \
        {"GET", "/v1/runs/{id}/graph", h_run_graph, AUTH_VIEWER}

/* The prefix served without a token (static files holding no data): api.c
 * gives it to the HTTP server. */
#define UI_PUBLIC_PREFIX "/ui"

#endif
