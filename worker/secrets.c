/*
 * secrets.c - trellis.secret and the redaction of secret values
 * (worker/secrets.h; docs/pipelines.md "Secrets").
 *
 * A name is [A-Za-z0-9_.-], 1 to 128 bytes, not starting with '.': never a
 * path, so a task cannot read outside the folder. The folder wins over the
 * environment; the environment is read under TRELLIS_SECRET_<NAME> only, so
 * that a pipeline cannot read the worker's other variables through it. One
 * trailing newline ("\n" or "\r\n") of a file is dropped, as `kubectl create
 * secret --from-file` and `echo` leave one.
 *
 * Every value read is kept (once) for redaction until the worker exits:
 * outputs, errors and log lines are searched for each and the matches are
 * replaced before the bytes leave for the scheduler. Values shorter than
 * REDACT_MIN bytes are not searched for (they would match everywhere).
 */
#include "worker/secrets.h"

#include <errno.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/base/alloc.h"
#include "lib/base/vec.h"
#include "worker/executor.h"

#define NAME_MAX_LEN 128u
#define VALUE_MAX (64u << 10)
#define REDACT_MIN 4u

struct secret
{
    char *value;
    size_t len;
};

static char *g_dir;
static struct secret *g_vals;
static size_t g_n, g_cap;

int tr_secrets_init(const char *dir)
{
    tr_free(g_dir);
    g_dir = NULL;
    if (dir != NULL && (g_dir = tr_strdup(dir)) == NULL)
        return TR_ENOMEM;
    return 0;
}

void tr_secrets_free(void)
{
    for (size_t i = 0; i < g_n; i++) {
        explicit_bzero(g_vals[i].value, g_vals[i].len);
        tr_free(g_vals[i].value);
    }
    tr_free(g_vals);
    g_vals = NULL;
    g_n = g_cap = 0;
    tr_free(g_dir);
    g_dir = NULL;
}

bool tr_secrets_any(void)
{
    return g_n > 0;
}

static bool name_ok(const char *s, size_t n)
{
    if (n == 0 || n > NAME_MAX_LEN || s[0] == '.')
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                  c == '_' || c == '.' || c == '-';
        if (!ok)
            return false;
    }
    return true;
}

/* Keeps a copy of the value for redaction (once). */
static void remember(const char *v, size_t len)
{
    if (len < REDACT_MIN)
        return;
    for (size_t i = 0; i < g_n; i++) {
        if (g_vals[i].len == len && memcmp(g_vals[i].value, v, len) == 0)
            return;
    }
    char *copy = tr_memdup(v, len);
    if (copy == NULL || TR_VEC_RESERVE(g_vals, g_cap, g_n + 1) != 0) {
        tr_free(copy);
        return; /* not remembered: the caller fails the read rather than leak it */
    }
    g_vals[g_n++] = (struct secret){copy, len};
}

static bool remembered(const char *v, size_t len)
{
    if (len < REDACT_MIN)
        return true;
    for (size_t i = 0; i < g_n; i++) {
        if (g_vals[i].len == len && memcmp(g_vals[i].value, v, len) == 0)
            return true;
    }
    return false;
}

/* Reads DIR/NAME into buf: 1 read, 0 no such file, <0 error (errno-like). */
static int read_file(const char *name, struct tr_buf *buf)
{
    if (g_dir == NULL)
        return 0;
    int dfd = open(g_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return -errno;
    /* No symlink is followed past the folder's own entry: Kubernetes' ..data
     * links are entries of the folder itself, so O_NOFOLLOW is not used. */
    int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
    int err = fd < 0 ? errno : 0;
    close(dfd);
    if (fd < 0)
        return err == ENOENT ? 0 : -err;
    struct stat sb;
    if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
        close(fd);
        return -EISDIR;
    }
    int rc = 1;
    char chunk[4096];
    for (;;) {
        ssize_t got = read(fd, chunk, sizeof(chunk));
        if (got < 0 && errno == EINTR)
            continue;
        if (got < 0) {
            rc = -errno;
            break;
        }
        if (got == 0)
            break;
        if (buf->len + (size_t)got > VALUE_MAX) {
            rc = -EFBIG;
            break;
        }
        if (tr_buf_add(buf, chunk, (size_t)got) < 0) {
            rc = -ENOMEM;
            break;
        }
    }
    explicit_bzero(chunk, sizeof(chunk));
    close(fd);
    if (rc == 1 && buf->len > 0 && buf->buf[buf->len - 1] == '\n') {
        buf->len--;
        if (buf->len > 0 && buf->buf[buf->len - 1] == '\r')
            buf->len--;
        buf->buf[buf->len] = '\0';
    }
    return rc;
}

int tr_lua_secret(lua_State *L)
{
    size_t n;
    const char *name = luaL_checklstring(L, 1, &n);
    if (tr_task_running(L) == NULL)
        return luaL_error(L, "trellis.secret can only be called while a task runs");
    if (!name_ok(name, n))
        return luaL_error(L, "invalid secret name '%s' (letters, digits, '_', '.', '-'; at most "
                             "128; not starting with '.')", name);
    struct tr_buf b;
    tr_buf_init(&b, VALUE_MAX + 16);
    int rc = read_file(name, &b);
    if (rc < 0) {
        explicit_bzero(b.buf, b.alloc);
        tr_buf_release(&b);
        return luaL_error(L, "secret '%s' cannot be read from the secrets folder: %s", name,
                          strerror(-rc));
    }
    const char *v = rc == 1 ? b.buf : NULL;
    size_t len = rc == 1 ? b.len : 0;
    if (v == NULL) {
        char var[sizeof("TRELLIS_SECRET_") + NAME_MAX_LEN];
        snprintf(var, sizeof(var), "TRELLIS_SECRET_%s", name);
        v = getenv(var);
        len = v ? strlen(v) : 0;
    }
    if (v == NULL) {
        tr_buf_release(&b);
        return luaL_error(L, "secret_not_found: %s", name);
    }
    remember(v, len);
    if (!remembered(v, len)) {
        explicit_bzero(b.buf, b.alloc);
        tr_buf_release(&b);
        return luaL_error(L, "secret '%s': not enough memory to keep it redacted", name);
    }
    lua_pushlstring(L, v ? v : "", len);
    if (b.alloc)
        explicit_bzero(b.buf, b.alloc);
    tr_buf_release(&b);
    return 1;
}

/* ===================================================================== */
/* Redaction                                                             */
/* ===================================================================== */

/* The first value found in p[0..len), its length in *vlen; NULL when none. */
static const char *find_any(const char *p, size_t len, size_t *vlen)
{
    const char *best = NULL;
    for (size_t i = 0; i < g_n; i++) {
        const char *m = memmem(p, len, g_vals[i].value, g_vals[i].len);
        if (m != NULL && (best == NULL || m < best || (m == best && g_vals[i].len > *vlen))) {
            best = m;
            *vlen = g_vals[i].len;
        }
    }
    return best;
}

int tr_secrets_redact(const char *p, size_t len, struct tr_buf *out)
{
    size_t vlen = 0;
    const char *m = g_n ? find_any(p, len, &vlen) : NULL;
    if (m == NULL)
        return 0;
    tr_buf_reset(out);
    int rc = 0;
    const char *end = p + len;
    while (m != NULL && rc == 0) {
        rc = tr_buf_add(out, p, (size_t)(m - p));
        if (rc == 0)
            rc = tr_buf_addstr(out, TR_SECRET_REDACTED);
        p = m + vlen;
        vlen = 0;
        m = find_any(p, (size_t)(end - p), &vlen);
    }
    if (rc == 0)
        rc = tr_buf_add(out, p, (size_t)(end - p));
    return rc < 0 ? TR_ENOMEM : 1;
}

/* Packs s, redacted. */
static int pack_str(msgpack_packer *pk, const char *s, size_t n, struct tr_buf *tmp)
{
    int r = tr_secrets_redact(s, n, tmp);
    if (r < 0)
        return r;
    if (r == 1) {
        s = tmp->buf;
        n = tmp->len;
    }
    return msgpack_pack_str(pk, n) || msgpack_pack_str_body(pk, s, n) ? TR_ENOMEM : 0;
}

static int repack(msgpack_packer *pk, const msgpack_object *o, struct tr_buf *tmp, int depth)
{
    if (depth > 256)
        return TR_EINVAL;
    int rc = 0;
    switch (o->type) {
    case MSGPACK_OBJECT_STR:
        return pack_str(pk, o->via.str.ptr, o->via.str.size, tmp);
    case MSGPACK_OBJECT_ARRAY:
        if (msgpack_pack_array(pk, o->via.array.size))
            return TR_ENOMEM;
        for (uint32_t i = 0; rc == 0 && i < o->via.array.size; i++)
            rc = repack(pk, &o->via.array.ptr[i], tmp, depth + 1);
        return rc;
    case MSGPACK_OBJECT_MAP:
        if (msgpack_pack_map(pk, o->via.map.size))
            return TR_ENOMEM;
        for (uint32_t i = 0; rc == 0 && i < o->via.map.size; i++) {
            rc = repack(pk, &o->via.map.ptr[i].key, tmp, depth + 1);
            if (rc == 0)
                rc = repack(pk, &o->via.map.ptr[i].val, tmp, depth + 1);
        }
        return rc;
    default:
        return msgpack_pack_object(pk, *o) ? TR_ENOMEM : 0;
    }
}

static int buf_write(void *data, const char *p, size_t n)
{
    return tr_buf_add(data, p, n) < 0 ? -1 : 0;
}

int tr_secrets_redact_mp(const char *p, size_t len, struct tr_buf *out)
{
    size_t vlen = 0;
    /* Strings are raw bytes in msgpack: no match in the bytes, none in the strings. */
    if (g_n == 0 || find_any(p, len, &vlen) == NULL)
        return 0;
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = msgpack_unpack_next(&u, p, len, &off) == MSGPACK_UNPACK_SUCCESS ? 0 : TR_EINVAL;
    struct tr_buf tmp;
    tr_buf_init(&tmp, 0);
    tr_buf_reset(out);
    if (rc == 0) {
        msgpack_packer pk;
        msgpack_packer_init(&pk, out, buf_write);
        rc = repack(&pk, &u.data, &tmp, 0);
    }
    tr_buf_release(&tmp);
    msgpack_unpacked_destroy(&u);
    return rc < 0 ? rc : 1;
}
