/*
 * model.c - the functions of the scheduler's data alone (model.h).
 */
#include "scheduler/model.h"

#include <stdlib.h>

#include "lib/base/alloc.h"
#include "lib/base/log.h"

double mono_s(void)
{
    return (double)tr_mono_ns() / 1e9;
}

void oom_fatal(const char *what)
{
    /* Memory for bookkeeping of work already accepted: nothing sane is left
     * to do but stop; the state on disk lets a restart resume the runs. */
    tr_err("out of memory while %s; exiting so that a restart resumes from the state", what);
    exit(70);
}

void inst_logs_add(struct inst *in, const struct tr_str *lines, uint32_t n)
{
    for (uint32_t i = 0; i < n; i++) {
        if (in->logs == NULL) {
            in->logs = tr_malloc(sizeof(*in->logs));
            if (in->logs == NULL) {
                in->logs_dropped++;
                continue;
            }
            tr_buf_init(in->logs, 256 * 1024);
        }
        size_t len = TR_MIN(lines[i].len, (size_t)1024);
        if ((in->logs->len && tr_buf_addch(in->logs, '\n') < 0) ||
            tr_buf_add(in->logs, lines[i].p, len) < 0)
            in->logs_dropped++;
    }
}

struct tr_str task_output(struct run *r, uint32_t t)
{
    struct task_rt *trt = &r->tasks[t];
    if (trt->mapped || r->pipe->def->tasks[t].map >= 0) {
        /* A mapped task that did not succeed as a whole passes nil (trigger rules). */
        if (!trt->finished || trt->outcome != TR_TASK_SUCCEEDED)
            return (struct tr_str){"\xc0", 1};
        return (struct tr_str){trt->agg ? trt->agg : "\x90", trt->agg ? trt->agg_len : 1};
    }
    if (trt->single.output == NULL || trt->single.output_len == 0)
        return (struct tr_str){"\xc0", 1};
    return (struct tr_str){trt->single.output, trt->single.output_len};
}

int inst_build_args(struct inst *in, struct tr_buf *out)
{
    struct run *r = in->run;
    const struct tr_task_def *td = &r->pipe->def->tasks[in->task];
    uint32_t n = td->n_after + (td->map >= 0 ? 1 : 0);
    uint32_t skip_map = UINT32_MAX;
    for (uint32_t i = 0; i < td->n_after; i++) {
        if (td->map >= 0 && td->after[i] == (uint32_t)td->map) {
            skip_map = i; /* its whole output is not passed, only the element */
            n--;
        }
    }
    unsigned char hdr[5];
    size_t hl;
    if (n < 16) {
        hdr[0] = (unsigned char)(0x90 | n);
        hl = 1;
    } else if (n < 65536) {
        hdr[0] = 0xdc;
        hdr[1] = (unsigned char)(n >> 8);
        hdr[2] = (unsigned char)n;
        hl = 3;
    } else {
        hdr[0] = 0xdd;
        for (int i = 0; i < 4; i++)
            hdr[1 + i] = (unsigned char)(n >> (24 - 8 * i));
        hl = 5;
    }
    int rc = tr_buf_add(out, hdr, hl);
    if (rc < 0)
        return rc;
    if (td->map >= 0) {
        struct tr_str src = task_output(r, (uint32_t)td->map);
        rc = tr_buf_add(out, src.p + in->arg_off, in->arg_len);
        if (rc < 0)
            return rc;
    }
    for (uint32_t i = 0; i < td->n_after; i++) {
        if (i == skip_map)
            continue;
        struct tr_str o = task_output(r, td->after[i]);
        rc = tr_buf_add(out, o.p, o.len);
        if (rc < 0)
            return rc;
    }
    return 0;
}
