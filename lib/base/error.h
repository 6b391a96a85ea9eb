/*
 * error.h - the one error convention.
 *
 * A function that can fail returns 0 or a negative TR_E* code. Codes equal
 * -errno where one exists; project codes start at -1000. When a user needs
 * detail (a Lua error and its line, a JSON parse position), an out-parameter
 * struct tr_error carries the code and a bounded message; it maps one to one
 * onto the API's {"error": {"code", "message"}}, whose code is tr_err_name().
 */
#ifndef TR_ERROR_H
#define TR_ERROR_H

#include "lib/base/base.h"

enum tr_errcode
{
    TR_OK = 0,
    TR_ENOMEM = -ENOMEM,
    TR_EINVAL = -EINVAL,
    TR_ENOENT = -ENOENT,
    TR_EEXIST = -EEXIST,
    TR_EIO = -EIO,
    TR_EAGAIN = -EAGAIN,
    TR_E2BIG = -E2BIG,
    TR_ECANCELED = -ECANCELED,
    TR_ETIMEDOUT = -ETIMEDOUT,
    TR_EPROTO = -EPROTO,
    TR_EACCES = -EACCES,
    TR_EADDR = -EADDRNOTAVAIL,
    /* Project codes. */
    TR_ELUA = -1000,     /* a Lua error (syntax or runtime) */
    TR_ECYCLE = -1001,   /* the pipeline graph has a cycle */
    TR_EDEP = -1002,     /* a dependency names no task */
    TR_EDUP = -1003,     /* two tasks share a name */
    TR_ELIMIT = -1004,   /* an instruction, memory, time or size limit was hit */
    TR_EJSON = -1005,    /* malformed JSON */
    TR_ESTALE = -1006,   /* a result from an attempt that is no longer current */
    TR_ESTATE = -1007,   /* the state backend failed */
    TR_EUNAVAIL = -1008, /* a service is unreachable */
    TR_ECONFLICT = -1009, /* the object is not in a state that allows this */
    TR_ETRIGGER = -1010, /* a trigger declaration is invalid */
    TR_ECRON = -1011     /* a cron expression does not parse */
};

#define TR_ERROR_MSG_MAX 1024

/* Carries a code and a message for the user. Embedded, so defined here. */
struct tr_error
{
    int code;                    /* 0 or a TR_E* code */
    char msg[TR_ERROR_MSG_MAX];  /* NUL-terminated, truncated to fit */
};

/* Clears err (code 0, empty message). err may be NULL. */
void tr_error_init(struct tr_error *err);

/*
 * Sets err's code and formats its message (truncated to fit); returns code so
 * that callers can write `return tr_error_set(err, TR_EINVAL, "...")`.
 * err may be NULL, in which case only code is returned.
 */
int tr_error_set(struct tr_error *err, int code, const char *fmt, ...) TR_PRINTF(3, 4);

/* A short description of code ("out of memory"); never NULL, static. */
const char *tr_strerror(int code);

/* The stable snake_case name of code used by the API ("not_found"); static. */
const char *tr_err_name(int code);

#endif
