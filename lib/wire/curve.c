/*
 * curve.c - CURVE key files and the ZAP handler thread (see curve.h).
 *
 * The handler answers RFC 27 (ZAP) requests: version "1.0", request id,
 * domain, address, identity, mechanism, then the client's 32-byte public key
 * for CURVE. Anything that is not a CURVE request with a listed key gets
 * status 400. Keys are compared as Z85 text.
 */
#include "lib/wire/curve.h"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <semaphore.h>
#include <stdatomic.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"
#include "lib/base/vec.h"

struct tr_zap
{
    void *zctx;             /* borrowed context */
    pthread_t thread;
    bool started;
    sem_t bound;            /* posted by the thread once its socket is bound (or failed) */
    bool bind_ok;
    char (*keys)[TR_CURVE_KEY_LEN + 1]; /* allowed public keys, Z85 */
    struct tr_zap_limits *limits;       /* per key, "" when unrestricted */
    size_t n_keys;
    size_t cap_keys;
    atomic_uint_fast64_t refused;
    struct tr_log_limiter log_limit; /* handler thread only */
};

/* ====================================================================== */
/* Key files                                                               */
/* ====================================================================== */

static bool is_z85_key(const char *s, size_t n)
{
    if (n != TR_CURVE_KEY_LEN)
        return false;
    /* zmq_z85_decode reads up to the NUL, so give it exactly the key. */
    char key[TR_CURVE_KEY_LEN + 1];
    memcpy(key, s, n);
    key[n] = '\0';
    uint8_t bin[32];
    return zmq_z85_decode(bin, key) != NULL;
}

static int write_file(const char *path, const char *text, mode_t mode, struct tr_error *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL, mode);
    if (fd < 0)
        return tr_error_set(err, errno == EEXIST ? TR_EEXIST : -errno, "cannot create '%s': %s",
                            path, strerror(errno));
    size_t len = strlen(text);
    ssize_t w = write(fd, text, len);
    int rc = (w == (ssize_t)len && fsync(fd) == 0) ? 0 : -errno;
    close(fd);
    if (rc < 0)
        return tr_error_set(err, rc, "cannot write '%s': %s", path, strerror(-rc));
    return 0;
}

int tr_curve_keygen(const char *dir, const char *name, struct tr_error *err)
{
    char pub[TR_CURVE_KEY_LEN + 1], sec[TR_CURVE_KEY_LEN + 1];
    if (zmq_curve_keypair(pub, sec) != 0)
        return tr_error_set(err, TR_EIO, "cannot make a key pair: %s", zmq_strerror(errno));
    char path[4096], text[128];
    snprintf(path, sizeof(path), "%s/%s.key", dir, name);
    snprintf(text, sizeof(text), "public %s\nsecret %s\n", pub, sec);
    int rc = write_file(path, text, 0600, err);
    explicit_bzero(text, sizeof(text));
    explicit_bzero(sec, sizeof(sec));
    if (rc < 0)
        return rc;
    snprintf(path, sizeof(path), "%s/%s.pub", dir, name);
    snprintf(text, sizeof(text), "%s\n", pub);
    return write_file(path, text, 0644, err);
}

/* Finds "label <key>" (or a bare key when label is NULL) in the file at path. */
static int read_key(const char *path, const char *label, char *out, struct tr_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tr_error_set(err, -errno, "cannot read key file '%s': %s", path, strerror(errno));
    char line[256];
    int rc = tr_error_set(err, TR_EINVAL, "no %s key in '%s'", label ? label : "public", path);
    while (fgets(line, sizeof(line), f) != NULL) {
        char *p = line;
        size_t lab = label ? strlen(label) : 0;
        if (label && (strncmp(p, label, lab) != 0 || (p[lab] != ' ' && p[lab] != '\t')))
            continue;
        p += lab;
        while (*p == ' ' || *p == '\t')
            p++;
        size_t n = strcspn(p, " \t\r\n");
        if (is_z85_key(p, n)) {
            memcpy(out, p, n);
            out[n] = '\0';
            rc = 0;
            tr_error_init(err);
            break;
        }
    }
    explicit_bzero(line, sizeof(line));
    fclose(f);
    return rc;
}

int tr_curve_load_pair(const char *path, char *pub, char *sec, struct tr_error *err)
{
    int rc = read_key(path, "public", pub, err);
    if (rc == 0)
        rc = read_key(path, "secret", sec, err);
    return rc;
}

int tr_curve_load_public(const char *path, char *pub, struct tr_error *err)
{
    if (read_key(path, "public", pub, NULL) == 0)
        return 0;
    return read_key(path, NULL, pub, err);
}

/* ====================================================================== */
/* Allow list                                                              */
/* ====================================================================== */

static int add_key(struct tr_zap *z, const char *key, const struct tr_zap_limits *lim)
{
    size_t cap = z->cap_keys;
    if (TR_VEC_RESERVE(z->keys, z->cap_keys, z->n_keys + 1) != 0)
        return TR_ENOMEM;
    if (z->cap_keys != cap || z->limits == NULL) {
        struct tr_zap_limits *l = tr_reallocarray(z->limits, z->cap_keys, sizeof(*l));
        if (l == NULL)
            return TR_ENOMEM;
        z->limits = l;
    }
    z->limits[z->n_keys] = *lim;
    memcpy(z->keys[z->n_keys++], key, TR_CURVE_KEY_LEN + 1);
    return 0;
}

/* A pool or tenant name: 1 to 63 of A-Z a-z 0-9 _ . - */
static bool limit_name_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n >= TR_ZAP_NAME_MAX)
        return false;
    return strspn(s, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") == n;
}

/* The fields after a key: pool=NAME and tenant=NAME, each at most once. */
static int parse_limits(char *p, struct tr_zap_limits *lim, const char *path, unsigned lineno,
                        struct tr_error *err)
{
    memset(lim, 0, sizeof(*lim));
    char *save = NULL;
    for (char *f = strtok_r(p, " \t\r\n", &save); f != NULL;
         f = strtok_r(NULL, " \t\r\n", &save)) {
        char *dst = NULL;
        if (strncmp(f, "pool=", 5) == 0 && lim->pool[0] == '\0')
            dst = lim->pool;
        else if (strncmp(f, "tenant=", 7) == 0 && lim->tenant[0] == '\0')
            dst = lim->tenant;
        const char *v = f + (dst == lim->pool ? 5 : 7);
        if (dst == NULL || !limit_name_ok(v))
            return tr_error_set(err, TR_EINVAL,
                                "'%s' line %u: unexpected '%.40s' after the key (a line is KEY "
                                "[pool=NAME] [tenant=NAME])",
                                path, lineno, f);
        snprintf(dst, TR_ZAP_NAME_MAX, "%s", v);
    }
    return 0;
}

static int load_list_file(struct tr_zap *z, const char *path, struct tr_error *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return tr_error_set(err, -errno, "cannot read worker keys '%s': %s", path,
                            strerror(errno));
    char line[256];
    int rc = 0;
    unsigned lineno = 0;
    while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
        lineno++;
        char *p = line;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p == '#' || *p == '\n' || *p == '\r' || *p == '\0')
            continue;
        if (strncmp(p, "public ", 7) == 0)
            p += 7;
        size_t n = strcspn(p, " \t\r\n");
        if (!is_z85_key(p, n)) {
            rc = tr_error_set(err, TR_EINVAL, "'%s' line %u: not a Z85 public key", path, lineno);
            break;
        }
        bool more = p[n] != '\0';
        p[n] = '\0';
        struct tr_zap_limits lim;
        rc = parse_limits(more ? p + n + 1 : p + n, &lim, path, lineno, err);
        if (rc == 0)
            rc = add_key(z, p, &lim);
    }
    fclose(f);
    return rc;
}

static int load_list(struct tr_zap *z, const char *path, struct tr_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return tr_error_set(err, -errno, "cannot read worker keys '%s': %s", path,
                            strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return load_list_file(z, path, err);
    DIR *d = opendir(path);
    if (d == NULL)
        return tr_error_set(err, -errno, "cannot read '%s': %s", path, strerror(errno));
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d)) != NULL) {
        size_t n = strlen(e->d_name);
        if (n < 5 || strcmp(e->d_name + n - 4, ".pub") != 0)
            continue;
        char file[4096];
        snprintf(file, sizeof(file), "%s/%s", path, e->d_name);
        rc = load_list_file(z, file, err);
    }
    closedir(d);
    return rc;
}

/* ====================================================================== */
/* The handler thread                                                      */
/* ====================================================================== */

static bool allowed(const struct tr_zap *z, const char *key)
{
    bool hit = false;
    for (size_t i = 0; i < z->n_keys; i++)
        hit |= memcmp(z->keys[i], key, TR_CURVE_KEY_LEN) == 0;
    return hit;
}

static void send_part(void *s, const void *p, size_t n, bool more)
{
    zmq_send(s, p, n, more ? ZMQ_SNDMORE : 0);
}

static void *zap_main(void *arg)
{
    struct tr_zap *z = arg;
    void *rep = zmq_socket(z->zctx, ZMQ_REP);
    int linger = 0;
    zmq_setsockopt(rep, ZMQ_LINGER, &linger, sizeof(linger));
    z->bind_ok = zmq_bind(rep, "inproc://zeromq.zap.01") == 0;
    if (!z->bind_ok)
        tr_err("cannot start worker authentication: %s", zmq_strerror(errno));
    sem_post(&z->bound);
    if (!z->bind_ok) {
        zmq_close(rep);
        return NULL;
    }
    for (;;) {
        /* version, request id, domain, address, identity, mechanism, credentials... */
        char parts[7][256];
        size_t lens[7] = {0};
        int n = 0;
        int more = 1;
        bool term = false;
        while (more) {
            char buf[256];
            int r = zmq_recv(rep, buf, sizeof(buf), 0);
            if (r < 0) {
                term = errno == ETERM;
                break;
            }
            if (n < 7) {
                lens[n] = TR_MIN((size_t)r, sizeof(buf));
                memcpy(parts[n], buf, lens[n]);
            }
            n++;
            size_t sz = sizeof(more);
            zmq_getsockopt(rep, ZMQ_RCVMORE, &more, &sz);
        }
        if (term)
            break;
        if (n < 6)
            continue;
        bool ok = false;
        char key[TR_CURVE_KEY_LEN + 1] = "";
        if (n >= 7 && lens[5] == 5 && memcmp(parts[5], "CURVE", 5) == 0 && lens[6] == 32) {
            zmq_z85_encode(key, (uint8_t *)parts[6], 32);
            ok = allowed(z, key);
        }
        send_part(rep, "1.0", 3, true);
        send_part(rep, parts[1], lens[1], true);
        send_part(rep, ok ? "200" : "400", 3, true);
        send_part(rep, ok ? "OK" : "worker key not allowed", ok ? 2 : 22, true);
        /* The user id is the key itself: the scheduler reads it from each
         * message's metadata and binds a worker id to the key that said HELLO. */
        send_part(rep, ok ? key : "", ok ? TR_CURVE_KEY_LEN : 0, true);
        send_part(rep, "", 0, false);
        if (!ok) {
            atomic_fetch_add(&z->refused, 1);
            char what[160];
            snprintf(what, sizeof(what), "refused worker key '%.12s...' from %.*s",
                     key[0] ? key : "(none)", (int)TR_MIN(lens[3], (size_t)64), parts[3]);
            tr_log_limited(&z->log_limit, what, "", 0);
        }
    }
    zmq_close(rep);
    return NULL;
}

struct tr_zap *tr_zap_open(void *zctx, const char *allow_path, struct tr_error *err)
{
    struct tr_zap *z = tr_calloc(1, sizeof(*z));
    if (z == NULL) {
        tr_error_set(err, TR_ENOMEM, "out of memory");
        return NULL;
    }
    z->zctx = zctx;
    atomic_init(&z->refused, 0);
    sem_init(&z->bound, 0, 0);
    if (load_list(z, allow_path, err) < 0) {
        tr_zap_close(z);
        return NULL;
    }
    if (z->n_keys == 0) {
        tr_error_set(err, TR_EINVAL, "no worker key in '%s'", allow_path);
        tr_zap_close(z);
        return NULL;
    }
    if (pthread_create(&z->thread, NULL, zap_main, z) != 0) {
        tr_error_set(err, TR_EIO, "cannot start the authentication thread");
        tr_zap_close(z);
        return NULL;
    }
    z->started = true;
    /* The handler must be bound before a CURVE server accepts anyone:
     * without one, ZeroMQ admits every client. */
    while (sem_wait(&z->bound) != 0 && errno == EINTR)
        ;
    if (!z->bind_ok) {
        tr_error_set(err, TR_EIO, "cannot start worker authentication");
        tr_zap_close(z);
        return NULL;
    }
    return z;
}

const struct tr_zap_limits *tr_zap_limits(const struct tr_zap *z, const char *key)
{
    for (size_t i = 0; z != NULL && key != NULL && i < z->n_keys; i++)
        if (memcmp(z->keys[i], key, TR_CURVE_KEY_LEN) == 0)
            return &z->limits[i];
    return NULL;
}

size_t tr_zap_allowed(const struct tr_zap *z)
{
    return z->n_keys;
}

uint64_t tr_zap_refused(const struct tr_zap *z)
{
    return z ? atomic_load(&((struct tr_zap *)z)->refused) : 0;
}

void tr_zap_close(struct tr_zap *z)
{
    if (z == NULL)
        return;
    if (z->started)
        pthread_join(z->thread, NULL);
    sem_destroy(&z->bound);
    tr_free(z->keys);
    tr_free(z->limits);
    tr_free(z);
}
