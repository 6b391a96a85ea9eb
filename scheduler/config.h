/*
 * config.h - the scheduler's configuration (flags and TRELLIS_* variables,
 * read by main.c). Every part reads the fields it needs from it.
 *
 * Part "config", at the bottom of the scheduler's order (docs/architecture.md).
 */
#ifndef TR_SCHED_CONFIG_H
#define TR_SCHED_CONFIG_H

#include <stdint.h>

#include "lib/base/flags.h"

#include "lib/lua/pipeline.h"

struct sched_config
{
    char *api_host;           /* --api host part */
    int api_port;             /* --api port (0 = pick a free one) */
    char *listen;             /* --listen tcp://HOST:PORT for workers */
    char *state_url;          /* --state */
    char *token_file;         /* --token-file */
    char *curve_key;          /* --curve-key: the scheduler's key pair file */
    char *curve_allow;        /* --curve-allow: allowed worker public keys (file or dir) */
    char *etcd_cacert;        /* --etcd-cacert, folded into an etcd:// state_url */
    char *etcd_cert;          /* --etcd-cert */
    char *etcd_key;           /* --etcd-key */
    uint32_t heartbeat_ms;    /* worker heartbeat interval */
    uint32_t prefetch;        /* cap on tasks sent to a worker beyond its slots (adaptive) */
    uint32_t keep_runs;       /* finished runs kept in memory for the API */
    uint32_t max_slots;       /* --max-slots: slots a worker's HELLO may claim (0: 10,000) */
    uint32_t max_params_bytes; /* --max-params-bytes: a run's params as JSON (0: 1 MiB) */
    uint32_t max_params_keys; /* --max-params-keys: keys and elements in them (0: 10,000) */
    double timeout_grace_s;   /* after a task's timeout, before the scheduler gives up on it */
    struct tr_pipeline_limits limits; /* sandbox for reading pipelines */
    char *id;                 /* --id: this scheduler's name in the election */
    char *advertise_api;      /* --advertise-api: API URL standbys redirect to (NULL: --api) */
    uint32_t leader_ttl_s;    /* --leader-ttl: lease of the leader key, seconds */
    char *otlp_endpoint;      /* --otlp-endpoint: OTLP/HTTP collector, or NULL */
    uint32_t unschedulable_s; /* --unschedulable-timeout: labelled tasks nobody can take fail */
    double retention_days;    /* --retention: finished runs older are purged (0: kept) */
    uint32_t max_sse;         /* --max-sse: open event streams at most */
    uint32_t sse_queue_bytes; /* --sse-queue-bytes: unread bytes per event stream client */
    struct tr_flag_list webhooks; /* --webhook URL, repeatable */
    char *webhook_secret_file; /* --webhook-secret-file */
    uint32_t budget_approval_s; /* --budget-approval-timeout: a held LLM call is rejected */
};

#endif
