/*
 * error.c - error codes to text.
 */
#include "lib/base/error.h"

static const struct
{
    int code;
    const char *name;
    const char *text;
} error_table[] = {
    {TR_OK, "ok", "success"},
    {TR_ENOMEM, "out_of_memory", "out of memory"},
    {TR_EINVAL, "invalid_argument", "invalid argument"},
    {TR_ENOENT, "not_found", "not found"},
    {TR_EEXIST, "already_exists", "already exists"},
    {TR_EIO, "io_error", "input/output error"},
    {TR_EAGAIN, "try_again", "resource temporarily unavailable"},
    {TR_E2BIG, "too_large", "too large"},
    {TR_ECANCELED, "cancelled", "operation cancelled"},
    {TR_ETIMEDOUT, "timeout", "timed out"},
    {TR_EPROTO, "protocol_error", "protocol error"},
    {TR_EACCES, "unauthorized", "permission denied"},
    {TR_EADDR, "address_refused", "address not allowed"},
    {TR_ELUA, "lua_error", "lua error"},
    {TR_ECYCLE, "cycle", "the pipeline graph has a cycle"},
    {TR_EDEP, "unknown_dependency", "unknown dependency"},
    {TR_EDUP, "duplicate_task", "duplicate task name"},
    {TR_ELIMIT, "limit_exceeded", "limit exceeded"},
    {TR_EJSON, "malformed_json", "malformed JSON"},
    {TR_ESTALE, "stale_attempt", "result from an attempt that is no longer current"},
    {TR_ESTATE, "state_error", "state backend error"},
    {TR_EUNAVAIL, "unavailable", "service unavailable"},
    {TR_ECONFLICT, "conflict", "not allowed in the current state"},
    {TR_ETRIGGER, "invalid_trigger", "invalid trigger"},
    {TR_ECRON, "invalid_cron", "cron expression does not parse"},
};

void tr_error_init(struct tr_error *err)
{
    if (err == NULL)
        return;
    err->code = 0;
    err->msg[0] = '\0';
}

int tr_error_set(struct tr_error *err, int code, const char *fmt, ...)
{
    if (err == NULL)
        return code;
    err->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

const char *tr_strerror(int code)
{
    for (size_t i = 0; i < TR_ARRAY_LEN(error_table); i++) {
        if (error_table[i].code == code)
            return error_table[i].text;
    }
    if (code < 0 && code > -1000)
        return strerror(-code);
    return "unknown error";
}

const char *tr_err_name(int code)
{
    for (size_t i = 0; i < TR_ARRAY_LEN(error_table); i++) {
        if (error_table[i].code == code)
            return error_table[i].name;
    }
    return "internal_error";
}
