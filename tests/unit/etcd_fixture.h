/*
 * etcd_fixture.h - the fixture shared by the etcd client's tests
 * (test_etcd.c, test_etcd_stream.c; code in etcd_fixture.c).
 *
 * The member comes from the CTest fixture etcd.start
 * (tests/etcd/start-etcd.sh), found through $TR_ETCD_DIR/endpoint. Tests
 * that restart a member or need TLS start members of their own with the same
 * scripts, run with uv_spawn so the loop keeps turning. Each test gets a
 * fresh loop, a client, a watchdog that fails the test instead of hanging,
 * and a key prefix made of the PID and a clock reading, so that reruns
 * against one member never collide. Callbacks only record (deep copies of
 * the borrowed results); the test bodies assert. Teardown frees the client,
 * runs the loop dry and asserts uv_loop_close() == 0.
 */
#ifndef TR_TEST_ETCD_FIXTURE_H
#define TR_TEST_ETCD_FIXTURE_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "lib/etcd/etcd.h"

#define WATCHDOG_MS 60000

struct fx
{
    uv_loop_t loop;
    uv_timer_t watchdog; /* sets timed_out after WATCHDOG_MS */
    bool timed_out;
    struct tr_etcd *e;   /* a client of the fixture's member */
    char prefix[160];    /* "/tr-test/<pid>-<ns>/": this test's keys */
    char own[600];       /* data folder of a member the test started, which
                            teardown stops if the test did not */
};

/* "127.0.0.1:PORT" of the fixture's member (group_setup reads it). */
extern char g_endpoint[128];

#define RUN_UNTIL(f, cond)                                \
    do {                                                  \
        while (!(cond) && !(f)->timed_out)                \
            uv_run(&(f)->loop, UV_RUN_ONCE);              \
        if ((f)->timed_out)                               \
            fail_msg("timed out waiting for: %s", #cond); \
    } while (0)

/* cmocka group setup (reads the endpoint), per-test setup and teardown. */
int group_setup(void **state);
int setup(void **state);
int teardown(void **state);

/* A client on f's loop with short backoffs; fails the test on error. */
struct tr_etcd *client(struct fx *f, const char *endpoints, uint32_t deadline_ms);

/* "<prefix><name>" into out. */
const char *key(struct fx *f, char *out, size_t size, const char *name);
#define K(f, buf, name) key((f), (buf), sizeof(buf), (name))

/* Runs the loop for ms. */
void nap(struct fx *f, uint64_t ms);

/* Runs `bash tests/etcd/<name> a1 a2` (NULLs end the list) with uv_spawn,
 * TR_ETCD_TLS=tls_dir when given; returns the exit status. */
int script(struct fx *f, const char *name, const char *a1, const char *a2, const char *tls_dir);

/* A path for a scratch folder of this process, not yet created: under
 * $TR_BUILD_DIR (else /tmp), unique per PID, clock reading and name. */
void scratch_dir(char *out, size_t size, const char *name);

/*
 * Starts a member of the test's own in dir (tests/etcd/start-etcd.sh
 * --fresh; TLS with the certificates in tls_dir when not NULL), remembers it
 * for teardown, and writes its endpoint into ep.
 */
void start_own_member(struct fx *f, const char *dir, const char *tls_dir, char *ep,
                      size_t ep_size);

/* Stops (and removes) the member start_own_member started. */
void stop_own_member(struct fx *f);

/* The first line of a file, without its newline. */
void read_line(const char *path, char *out, size_t size);

/* A loopback port with nothing listening (bound, then closed). */
int dead_port(void);

/* ---- deep copies of results --------------------------------------------- */

struct kvc
{
    char *key;             /* NUL-terminated copies (binary-safe with lengths) */
    size_t key_len;
    unsigned char *value;
    size_t value_len;
    int64_t create, mod, version, lease;
};

struct res
{
    int calls;             /* times the callback ran */
    int status;
    enum tr_etcd_op_type type;
    int64_t revision;
    struct kvc *kvs;
    size_t n_kvs;
    bool more;
    int64_t count, deleted;
    struct kvc *prev;
    size_t n_prev;
    bool succeeded;
    struct res *subs;      /* txn responses */
    size_t n_subs;
    int64_t lease_id, ttl, granted_ttl;
    int grpc_status;
    char message[600];
};

void kv_copy(struct kvc *d, const struct tr_etcd_kv *s);
void res_copy(struct res *d, int status, const struct tr_etcd_result *r);
void res_release(struct res *r);
void res_free(struct res *r);

/* tr_etcd_fn recording into the struct res at arg. */
void on_res(void *arg, int status, const struct tr_etcd_result *r);

/* Synchronous wrappers: the loop turns while they wait. Results are heap
 * copies (res_free). */
struct res *wait_res(struct fx *f, int rc, struct res *r);
struct res *do_put(struct fx *f, const char *k, const void *v, size_t vl, int64_t lease,
                   unsigned flags);
int64_t put_ok(struct fx *f, const char *k, const char *v); /* the put's revision */
struct res *do_range(struct fx *f, const struct tr_etcd_op *op);
struct res *get(struct fx *f, const char *k);
struct res *do_txn(struct fx *f, const struct tr_etcd_txn *t);
int64_t grant(struct fx *f, int64_t ttl);
struct res *lease_ttl(struct fx *f, int64_t id);

/* ---- watch and keep-alive recording ------------------------------------- */

#define MAX_EV 64

struct wrec
{
    int calls;
    int finals;            /* calls with a non-zero status */
    int final_status;
    int64_t compact;
    bool created;
    int progress;          /* progress answers */
    int64_t progress_rev;
    int n;                 /* events recorded */
    struct
    {
        enum tr_etcd_event_type type;
        struct kvc kv;
        bool has_prev;
        struct kvc prev;
    } ev[MAX_EV];
    struct tr_etcd_watch *w;
};

void on_watch(void *arg, int status, const struct tr_etcd_watch_result *r);
void wrec_release(struct wrec *rec);
void watch_prefix(struct fx *f, struct wrec *rec, const char *prefix, int64_t from,
                  unsigned flags);
/* Cancels and checks the single final TR_ECANCELED. */
void cancel_watch(struct fx *f, struct wrec *rec);

struct karec
{
    int calls, ok, failures, finals;
    int final_status;
    int64_t last_ttl;
    struct tr_etcd_keepalive *k;
};

void on_keepalive(void *arg, int status, int64_t ttl, bool final);

#endif
