/*
 * audit.h - the audit log: every change made through the API, who made it
 * (the token's name, role and tenant), what and when (audit.c;
 * docs/api.md "Audit").
 *
 * An entry is recorded by the handler that makes the change and written in
 * the same group commit as the change (through the batch's extra hooks in
 * sched.c), so the log holds an entry exactly for each change made durable.
 * Part "api" of the scheduler's order. Loop thread only.
 */
#ifndef TR_SCHED_AUDIT_H
#define TR_SCHED_AUDIT_H

#include "lib/base/error.h"
#include "lib/http/http_server.h"
#include "lib/state/state.h"

struct api;

/*
 * Records that the caller of req did action ("run.start", "run.cancel",
 * "pipeline.register", "feedback.create", "label.create", "label.set",
 * "model.register", "alias.move", "alias.delete", "budget.set",
 * "approval.decide", ...) to object (a run id, a pipeline or model name;
 * may be NULL). Out of memory only loses the entry (logged).
 */
void tr_audit_record(struct api *a, struct tr_http_req *req, const char *action,
                     const char *object);
/* The same with a JSON object of details (text, may be NULL). */
void tr_audit_record_detail(struct api *a, struct tr_http_req *req, const char *action,
                            const char *object, const char *detail_json);
/* For changes no request makes (a trigger starting a run): who is a name. */
void tr_audit_record_as(struct api *a, const char *tenant, const char *who, const char *role,
                        const char *action, const char *object, const char *detail_json);

/* The batch's hooks (sched.c): entries waiting, put them, they committed. */
bool audit_have_dirty(const struct api *a);
int audit_put_dirty(struct api *a) TR_MUST_CHECK;
void audit_committed(struct api *a);
/* Frees what is waiting (at close). */
void audit_close(struct api *a);

/* GET /v1/audit?since=&limit=&tenant= */
void h_audit_list(struct tr_http_req *req, void *arg);

#endif
