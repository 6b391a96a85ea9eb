/*
 * feedback_int.h - what feedback.c, api_feedback.c and api_models.c share.
 *
 * A write of the turn is a typed record whose strings live in `hold`, a JSON
 * object owned by the write, until the commit that makes it durable.
 */
#ifndef TR_SCHED_FEEDBACK_INT_H
#define TR_SCHED_FEEDBACK_INT_H

#include "scheduler/feedback.h"
#include "scheduler/api_int.h"

#define FB_BUCKET_SECONDS 60u
#define FB_BUCKETS 60u              /* the window: the last hour, minute by minute */
#define FB_TEXT_MAX (64u * 1024)    /* comment, correction, a label item or a label */
#define FB_ARTIFACT_MAX (256u * 1024)
#define FB_NAME_MAX 128u
#define FB_LIST_DEFAULT 100
#define FB_LIST_MAX 10000
#define FB_RUN_CACHE 4096           /* runs whose pipeline is remembered (then forgotten at once) */

/* A pipeline's statistics, as the state keeps them plus what the turn changed. */
struct fb_stats
{
    char *pipeline;           /* owned; the hmap's key */
    struct tr_feedback_bucket buckets[FB_BUCKETS];
    uint64_t count, negative, queued, labelled;
    double sum;
    bool dirty;               /* changed since the last commit */
};

/* A model's head: what versions and alias moves must follow. */
struct fb_alias
{
    char name[FB_NAME_MAX];
    uint32_t version;         /* 0: removed */
};

struct fb_model
{
    char *name;               /* owned; the hmap's key */
    bool exists;              /* durable, or put in this turn */
    uint32_t latest;
    uint64_t moves;
    double created_at;
    struct fb_alias *aliases;
    size_t n_aliases;
};

enum fb_write_kind
{
    FB_W_FEEDBACK,
    FB_W_LABEL,
    FB_W_MODEL,
    FB_W_VERSION,
    FB_W_ALIAS,
    FB_W_MOVE
};

struct fb_write
{
    int kind;                 /* enum fb_write_kind */
    json_t *hold;             /* owns the strings of rec */
    union
    {
        struct tr_feedback_rec fb;
        struct tr_label_rec label;
        struct tr_model_rec model;
        struct tr_model_version_rec version;
        struct tr_model_alias_rec alias;
        struct tr_alias_move_rec move;
    } rec;
};

struct fb_loop
{
    struct tr_hmap stats;     /* pipeline -> struct fb_stats */
    struct tr_hmap models;    /* name -> struct fb_model */
    struct tr_hmap labels;    /* item id -> index + 1 in writes: label items of the turn */
    struct tr_hmap run_pipes; /* run id -> its pipeline, for runs read from the state */
    struct fb_write *writes;  /* the turn's writes, in order */
    size_t n_writes, cap_writes;
    uint64_t next_id;
};

/* The statistics of pipeline, loaded from the state on first use; NULL on error (*rc). */
struct fb_stats *fb_stats_get(struct api *s, const char *pipeline, int *rc);
/* A copy of pipeline's statistics, from memory or the state, without keeping
 * them in memory (a read must not grow it); out->pipeline is borrowed. */
int fb_stats_read(struct api *s, const char *pipeline, struct fb_stats *out) TR_MUST_CHECK;
void fb_stats_add(struct fb_stats *st, int score, bool negative, double now);
json_t *fb_stats_json(const struct fb_stats *st, double now);
/* A model's head, loaded on first use; NULL on error (*rc), or unknown when !exists. */
struct fb_model *fb_model_get(struct api *s, const char *name, int *rc);
/* Drops m from memory when no version of it exists (a call about an unknown
 * model must not grow memory). */
void fb_model_forget_unknown(struct api *s, struct fb_model *m);
struct fb_alias *fb_model_alias(struct fb_model *m, const char *alias);
int fb_model_set_alias(struct fb_model *m, const char *alias, uint32_t version) TR_MUST_CHECK;

/* The pipeline of a run read from the state before, or NULL. */
const char *fb_run_pipeline_cached(struct api *s, const char *run_id);
/* Remembers it (best effort: out of memory only forgets). */
void fb_run_pipeline_remember(struct api *s, const char *run_id, const char *pipeline);

/* A new write of kind, its hold empty; NULL when out of memory. */
struct fb_write *fb_write_new(struct api *s, int kind);
/* Drops the last write (its request failed half way). */
void fb_write_drop_last(struct api *s);
/* Copies v into w's hold under k and returns the copy (NULL for NULL v). */
const char *fb_hold(struct fb_write *w, const char *k, const char *v);
/* The JSON value j as text held by w (NULL for NULL j). */
const char *fb_hold_json(struct fb_write *w, const char *k, const json_t *j);
/* A new id "PREFIX-<time>-<epoch>-<n>": unique, and in creation order per scheduler. */
void fb_new_id(struct api *s, const char *prefix, char *out, size_t size);

/* Answers: JSON with numbers as people wrote them (15 digits). */
void fb_respond(struct tr_http_req *req, int status, json_t *body);
void fb_queue_reply(struct api *s, struct tr_http_req *req, int status, json_t *body);
/* The body as a JSON object, or NULL after answering 400. */
json_t *fb_body(struct tr_http_req *req);
/* A route parameter into out; false (answered 404 with what) when absent or too long. */
bool fb_param(struct tr_http_req *req, const char *name, char *out, size_t size,
              const char *what);
/* ?limit= (default FB_LIST_DEFAULT); false after answering 400. */
bool fb_limit(struct tr_http_req *req, uint32_t *limit);
/* The scheduler may take writes now; false after answering 503. */
bool fb_writable(struct api *s, struct tr_http_req *req);
void fb_state_error(struct tr_http_req *req, int rc);
json_t *fb_json_or_null(const char *text);
/* A name for a model or alias: 1..127 of [A-Za-z0-9._-], not all digits. */
bool fb_name_ok(const char *s);

#endif
