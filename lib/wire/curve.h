/*
 * curve.h - ZeroMQ CURVE keys for workers, and the ZAP handler that admits
 * only listed worker keys.
 *
 * Key files are text. A key pair file (NAME.key, mode 0600) holds two lines,
 * "public <z85>" and "secret <z85>"; a public key file (NAME.pub) holds the
 * 40-character Z85 public key on one line. An allow list is a file of public
 * keys, one per line ('#' comments and blank lines skipped), or a directory
 * whose *.pub files are read. A key's line may restrict it:
 * "KEY pool=gpu tenant=research" admits the key only for workers of pool gpu
 * (the scheduler refuses its HELLO for another pool) that run only tenant
 * research's tasks (tr_zap_limits).
 *
 * The ZAP handler runs on its own thread (ZeroMQ asks for authentication on
 * an inproc REP socket of the same context and waits for the answer). It only
 * reads its allow list, which never changes after start, and counts refusals
 * in an atomic counter that the loop thread reads.
 */
#ifndef TR_CURVE_H
#define TR_CURVE_H

#include "lib/base/error.h"

#define TR_CURVE_KEY_LEN 40 /* Z85 characters of a 32-byte key */

struct tr_zap;

/*
 * Writes dir/name.key (the pair, mode 0600) and dir/name.pub. Refuses to
 * overwrite an existing file (TR_EEXIST). 0 or a negative code with err set.
 */
int tr_curve_keygen(const char *dir, const char *name, struct tr_error *err) TR_MUST_CHECK;

/* Reads a key pair file into pub and sec (each TR_CURVE_KEY_LEN + 1 bytes). */
int tr_curve_load_pair(const char *path, char *pub, char *sec, struct tr_error *err) TR_MUST_CHECK;

/* Reads a public key file (or the public line of a pair file) into pub. */
int tr_curve_load_public(const char *path, char *pub, struct tr_error *err) TR_MUST_CHECK;

/*
 * Starts the ZAP handler on the ZeroMQ context zctx with the keys of
 * allow_path. Call before binding any CURVE server socket of that context.
 * NULL with err set when the list cannot be read, holds no key, or the
 * thread cannot start.
 */
struct tr_zap *tr_zap_open(void *zctx, const char *allow_path, struct tr_error *err) TR_MUST_CHECK;

#define TR_ZAP_NAME_MAX 64

/* What a key's line restricts it to; "" when it does not. */
struct tr_zap_limits
{
    char pool[TR_ZAP_NAME_MAX];
    char tenant[TR_ZAP_NAME_MAX];
};

/* The restrictions of an allowed key (Z85), NULL for a key not in the list.
 * The list never changes after open: any thread. */
const struct tr_zap_limits *tr_zap_limits(const struct tr_zap *z, const char *key);

/* Number of keys admitted by the list. */
size_t tr_zap_allowed(const struct tr_zap *z);

/* Connections refused so far (any thread). */
uint64_t tr_zap_refused(const struct tr_zap *z);

/*
 * Stops the handler: call zmq_ctx_shutdown(zctx) first (it unblocks the
 * thread), then this, then zmq_ctx_term. Joins the thread and frees z.
 * NULL-safe.
 */
void tr_zap_close(struct tr_zap *z);

#endif
