/*
 * pg_pool.c - the worker's pool of PostgreSQL connections (see
 * pg_index.h), and the libpq helpers of the index.
 *
 * Jobs run on libuv's pool threads, so the pool has a mutex; a connection
 * is used by one job at a time and goes back idle (no open transaction).
 * A connection that failed is closed rather than kept, and one the server
 * closed while it was idle is noticed before it is handed out.
 */
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "lib/base/alloc.h"
#include "worker/pg_int.h"

struct idle
{
    char *url;
    PGconn *c;
    struct idle *next;
};

static pthread_mutex_t pool_mu = PTHREAD_MUTEX_INITIALIZER;
static struct idle *pool_head;

bool tr_pg_is_url(const char *s)
{
    return strncmp(s, "postgres://", 11) == 0 || strncmp(s, "postgresql://", 13) == 0;
}

static int connect_new(const char *url, PGconn **out, struct tr_error *err)
{
    /* The URL comes last so that its own settings win over these defaults. */
    const char *const keys[] = {"connect_timeout", "application_name", "dbname", NULL};
    const char *const vals[] = {"10", "trellis-worker", url, NULL};
    PGconn *c = PQconnectdbParams(keys, vals, 1);
    if (c == NULL)
        return tr_error_set(err, TR_ENOMEM, "out of memory");
    if (PQstatus(c) != CONNECTION_OK) {
        int rc = tr_pg_fail(c, NULL, err, TR_EUNAVAIL, "connect to PostgreSQL");
        PQfinish(c);
        return rc;
    }
    /* Quiet the NOTICEs of IF NOT EXISTS, and the empty tsquery's. */
    PGresult *r = PQexec(c, "SET client_min_messages = warning");
    PQclear(r);
    *out = c;
    return 0;
}

/*
 * False when an idle connection is known dead or suspect: nothing arrives
 * on an idle connection of ours (no LISTEN, no SET after connecting) but
 * the server's goodbye (an administrator's shutdown, idle_session_timeout)
 * and the end of the stream, so any byte to read means "connect again".
 */
static bool alive(PGconn *c)
{
    struct pollfd p = {.fd = PQsocket(c), .events = POLLIN};
    return p.fd >= 0 && PQstatus(c) == CONNECTION_OK && poll(&p, 1, 0) == 0;
}

/* Takes an idle connection of url from the pool, or NULL. */
static PGconn *take_idle(const char *url)
{
    pthread_mutex_lock(&pool_mu);
    for (struct idle **pp = &pool_head; *pp != NULL; pp = &(*pp)->next) {
        if (strcmp((*pp)->url, url) != 0)
            continue;
        struct idle *e = *pp;
        *pp = e->next;
        pthread_mutex_unlock(&pool_mu);
        PGconn *c = e->c;
        tr_free(e->url);
        tr_free(e);
        return c;
    }
    pthread_mutex_unlock(&pool_mu);
    return NULL;
}

PGconn *tr_pg_pool_get(const char *url, struct tr_error *err)
{
    PGconn *c;
    while ((c = take_idle(url)) != NULL) {
        if (alive(c))
            return c;
        PQfinish(c);
    }
    if (connect_new(url, &c, err) < 0)
        return NULL;
    return c;
}

void tr_pg_pool_put(const char *url, PGconn *c)
{
    if (c == NULL)
        return;
    if (PQstatus(c) != CONNECTION_OK || PQtransactionStatus(c) != PQTRANS_IDLE) {
        PQfinish(c);
        return;
    }
    struct idle *e = tr_calloc(1, sizeof(*e));
    char *u = tr_strdup(url);
    if (e == NULL || u == NULL) {
        tr_free(e);
        tr_free(u);
        PQfinish(c);
        return;
    }
    e->url = u;
    e->c = c;
    pthread_mutex_lock(&pool_mu);
    size_t same = 0;
    for (struct idle *i = pool_head; i != NULL; i = i->next)
        same += strcmp(i->url, url) == 0;
    if (same < TR_PG_POOL_IDLE) {
        e->next = pool_head;
        pool_head = e;
        e = NULL;
    }
    pthread_mutex_unlock(&pool_mu);
    if (e != NULL) {
        PQfinish(c);
        tr_free(e->url);
        tr_free(e);
    }
}

void tr_pg_pool_drain(void)
{
    pthread_mutex_lock(&pool_mu);
    struct idle *e = pool_head;
    pool_head = NULL;
    pthread_mutex_unlock(&pool_mu);
    while (e != NULL) {
        struct idle *next = e->next;
        PQfinish(e->c);
        tr_free(e->url);
        tr_free(e);
        e = next;
    }
}

int tr_pg_fail(PGconn *c, PGresult *r, struct tr_error *err, int code, const char *what)
{
    const char *msg = r != NULL ? PQresultErrorMessage(r) : "";
    if (msg[0] == '\0' && c != NULL)
        msg = PQerrorMessage(c);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == ' '))
        n--;
    tr_error_set(err, code, "cannot %s: %.*s", what, (int)n, n ? msg : "no answer");
    PQclear(r);
    return code;
}

int tr_pg_exec(PGconn *c, const char *sql, struct tr_error *err, const char *what)
{
    PGresult *r = PQexec(c, sql);
    ExecStatusType st = PQresultStatus(r);
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        return tr_pg_fail(c, r, err, TR_EIO, what);
    PQclear(r);
    return 0;
}

void tr_pg_rollback(PGconn *c)
{
    if (PQtransactionStatus(c) != PQTRANS_IDLE)
        PQclear(PQexec(c, "ROLLBACK"));
}

int64_t tr_pg_int8(const char *p)
{
    const unsigned char *b = (const unsigned char *)p;
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | b[i];
    return (int64_t)v;
}

void tr_pg_vec_invalidate(struct tr_pg_index *ix)
{
    ix->vec_valid = false;
    tr_free_null(&ix->vec_rows);
    tr_free_null(&ix->vec_ids);
    ix->vec_n = 0;
}
