/*
 * http_req.c - one HTTP request: its storage, accessors, route matching and
 * query decoding.
 *
 * A request owns two capped buffers: `head` (the URL, then every header name
 * and value, as llhttp hands them over in pieces) and `body`. Header fields
 * are kept as offsets because head moves while it grows; views are handed out
 * only once the request is complete and head no longer changes. Everything
 * runs on the loop's thread.
 */
#include <strings.h>

#include "lib/base/alloc.h"
#include "lib/http/http_int.h"

struct tr_http_req *tr_http__req_new(struct tr_http_conn *c)
{
    struct tr_http_req *req = tr_calloc(1, sizeof(*req));
    if (req == NULL)
        return NULL;
    req->conn = c;
    tr_buf_init(&req->head, c->srv->max_header_bytes);
    tr_buf_init(&req->body, c->srv->max_body_bytes);
    return req;
}

void tr_http__req_free(struct tr_http_req *req)
{
    if (req == NULL)
        return;
    tr_buf_release(&req->head);
    tr_buf_release(&req->body);
    tr_free(req->hdrs);
#ifndef NDEBUG
    memset(req, 0xa5, sizeof(*req));
#endif
    tr_free(req);
}

void tr_http__req_split_url(struct tr_http_req *req)
{
    const char *url = req->head.buf;
    size_t len = req->url_len;
    size_t start = 0;
    /* Absolute form ("http://host:port/path"), which proxies send: skip the authority. */
    if (len > 0 && url[0] != '/') {
        const char *sep = memmem(url, len, "://", 3);
        if (sep != NULL) {
            size_t after = (size_t)(sep - url) + 3;
            const char *slash = memchr(url + after, '/', len - after);
            start = slash != NULL ? (size_t)(slash - url) : len;
        }
    }
    size_t end = len;
    const char *hash = memchr(url + start, '#', len - start);
    if (hash != NULL)
        end = (size_t)(hash - url);
    const char *q = memchr(url + start, '?', end - start);
    size_t path_end = q != NULL ? (size_t)(q - url) : end;
    if (path_end == start)
        req->path = TR_STR("/");
    else
        req->path = (struct tr_str){url + start, path_end - start};
    if (q != NULL)
        req->query = (struct tr_str){q + 1, end - path_end - 1};
    else
        req->query = (struct tr_str){url + end, 0};
}

void tr_http__req_set_params(struct tr_http_req *req, const struct tr_str *names,
                             const struct tr_str *values, int n)
{
    req->n_params = n;
    for (int i = 0; i < n; i++) {
        req->param_names[i] = names[i];
        req->param_values[i] = values[i];
    }
}

/* ===================================================================== */
/* Accessors                                                             */
/* ===================================================================== */

struct tr_str tr_http_req_method(const struct tr_http_req *req)
{
    return (struct tr_str){req->method, strlen(req->method)};
}

struct tr_str tr_http_req_path(const struct tr_http_req *req)
{
    return req->path;
}

struct tr_str tr_http_req_query_string(const struct tr_http_req *req)
{
    return req->query.p ? req->query : (struct tr_str){"", 0};
}

struct tr_str tr_http_req_body(const struct tr_http_req *req)
{
    return (struct tr_str){req->body.buf, req->body.len};
}

struct tr_str tr_http_req_param(const struct tr_http_req *req, const char *name)
{
    for (int i = 0; i < req->n_params; i++) {
        if (tr_str_eq(req->param_names[i], name))
            return req->param_values[i];
    }
    return (struct tr_str){NULL, 0};
}

const void *tr_http_req_principal(const struct tr_http_req *req)
{
    return req->principal;
}

struct tr_str tr_http_req_header(const struct tr_http_req *req, const char *name)
{
    size_t n = strlen(name);
    for (size_t i = 0; i < req->n_hdrs; i++) {
        const struct tr_http_hdr *h = &req->hdrs[i];
        if (h->name_len != n || strncasecmp(req->head.buf + h->name_off, name, n) != 0)
            continue;
        const char *v = req->head.buf + h->value_off;
        size_t len = h->value_len;
        while (len > 0 && (v[len - 1] == ' ' || v[len - 1] == '\t'))
            len--;
        return (struct tr_str){v, len};
    }
    return (struct tr_str){NULL, 0};
}

bool tr_http_req_may_hold(const struct tr_http_req *req)
{
    const struct tr_http_server *srv = req->conn->srv;
    uint32_t cap = srv->max_connections > 2 * TR_HTTP_RESERVE
                       ? srv->max_connections - TR_HTTP_RESERVE
                       : srv->max_connections / 2;
    return srv->n_held <= cap;
}

void tr_http_req_on_abort(struct tr_http_req *req, tr_http_abort_fn cb, void *arg)
{
    req->abort_cb = cb;
    req->abort_arg = arg;
}

/* ===================================================================== */
/* Query strings                                                         */
/* ===================================================================== */

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/*
 * Decodes one byte of a query component at *i ("%41" -> 'A', '+' -> ' ');
 * an escape that is not two hex digits stands for itself, as browsers do.
 */
static char decode_at(const char *s, size_t len, size_t *i)
{
    char c = s[*i];
    if (c == '+') {
        (*i)++;
        return ' ';
    }
    if (c == '%' && *i + 2 < len) {
        int hi = hexval(s[*i + 1]);
        int lo = hexval(s[*i + 2]);
        if (hi >= 0 && lo >= 0) {
            *i += 3;
            return (char)(hi << 4 | lo);
        }
    }
    (*i)++;
    return c;
}

/* True when the component s[0, len) decodes to exactly name. */
static bool decoded_eq(const char *s, size_t len, const char *name)
{
    size_t i = 0;
    size_t j = 0;
    while (i < len) {
        char c = decode_at(s, len, &i);
        if (name[j] == '\0' || name[j] != c)
            return false;
        j++;
    }
    return name[j] == '\0';
}

bool tr_http_req_query(const struct tr_http_req *req, const char *name, char *out, size_t out_size)
{
    const char *q = req->query.p;
    size_t len = req->query.len;
    size_t pos = 0;
    while (pos <= len && len > 0) {
        const char *amp = memchr(q + pos, '&', len - pos);
        size_t end = amp != NULL ? (size_t)(amp - q) : len;
        const char *eq = memchr(q + pos, '=', end - pos);
        size_t key_end = eq != NULL ? (size_t)(eq - q) : end;
        if (key_end > pos && decoded_eq(q + pos, key_end - pos, name)) {
            size_t vstart = eq != NULL ? key_end + 1 : end;
            size_t vlen = end - vstart;
            size_t i = 0;
            size_t n = 0;
            /* A value with a NUL, or one that does not fit, is refused whole. */
            while (i < vlen) {
                char c = decode_at(q + vstart, vlen, &i);
                if (c == '\0' || n + 1 >= out_size) {
                    if (out_size > 0)
                        out[0] = '\0';
                    return false;
                }
                out[n++] = c;
            }
            if (out_size == 0)
                return false;
            out[n] = '\0';
            return true;
        }
        if (amp == NULL)
            break;
        pos = end + 1;
    }
    return false;
}

/* ===================================================================== */
/* Route matching                                                        */
/* ===================================================================== */

/* Drops one trailing '/' unless it is the root or follows another '/'. */
static struct tr_str strip_trailing_slash(struct tr_str s)
{
    if (s.len > 1 && s.p[s.len - 1] == '/' && s.p[s.len - 2] != '/')
        s.len--;
    return s;
}

/* The next '/'-separated segment of s at *pos (which points after a '/'). */
static struct tr_str next_segment(struct tr_str s, size_t *pos)
{
    const char *slash = memchr(s.p + *pos, '/', s.len - *pos);
    size_t end = slash != NULL ? (size_t)(slash - s.p) : s.len;
    struct tr_str seg = {s.p + *pos, end - *pos};
    *pos = end + 1;
    return seg;
}

bool tr_http_route_match(const char *pattern, struct tr_str path, struct tr_str *names,
                         struct tr_str *values, int *n_params)
{
    int n = 0;
    if (n_params != NULL)
        *n_params = 0;
    struct tr_str pat = strip_trailing_slash((struct tr_str){pattern, strlen(pattern)});
    path = strip_trailing_slash(path);
    if (pat.len == 0 || pat.p[0] != '/' || path.len == 0 || path.p[0] != '/')
        return false;
    /* The root has no segment at all; every other path has at least one. */
    bool pat_root = pat.len == 1;
    bool path_root = path.len == 1;
    if (pat_root || path_root)
        return pat_root && path_root;
    size_t pp = 1;
    size_t sp = 1;
    while (pp <= pat.len && sp <= path.len) {
        struct tr_str ps = next_segment(pat, &pp);
        struct tr_str ss = next_segment(path, &sp);
        if (ps.len >= 2 && ps.p[0] == '{' && ps.p[ps.len - 1] == '}') {
            if (ss.len == 0 || n >= TR_HTTP_MAX_PARAMS)
                return false;
            if (names != NULL)
                names[n] = (struct tr_str){ps.p + 1, ps.len - 2};
            if (values != NULL)
                values[n] = ss;
            n++;
        } else if (ps.len != ss.len || memcmp(ps.p, ss.p, ps.len) != 0) {
            return false;
        }
    }
    /* Both must run out together: no extra segment on either side. */
    if (pp <= pat.len || sp <= path.len)
        return false;
    if (n_params != NULL)
        *n_params = n;
    return true;
}
