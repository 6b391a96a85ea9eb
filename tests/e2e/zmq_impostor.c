/*
 * zmq_impostor.c - speaks to a scheduler's worker port in another worker's
 * name, for tests/e2e/test_impostor.sh.
 *
 *   zmq_impostor ENDPOINT result WORKER_ID EPOCH
 *       DEALER with routing id WORKER_ID; sends RESULTs for dispatch ids
 *       1..1000 of EPOCH (ids were sequential once), then exits.
 *   zmq_impostor ENDPOINT hello WORKER_ID POOL [KEYFILE SERVERPUB]
 *       says HELLO as WORKER_ID (with the CURVE key pair in KEYFILE against
 *       the server key in SERVERPUB when given) and prints "welcome" or
 *       "bye: REASON", or "silence" when nothing came within 5 s.
 *   zmq_impostor ENDPOINT hoard WORKER_ID SECONDS
 *       says HELLO as WORKER_ID claiming 1,000,000 slots, then only
 *       heartbeats for SECONDS, returning no result; prints "tasks N", the
 *       TASKs it was sent.
 */
#include "lib/base/base.h"
#include "lib/wire/curve.h"
#include "lib/wire/proto.h"

#include <zmq.h>

static int send_msg(void *s, const struct tr_msg *m)
{
    msgpack_sbuffer sb;
    msgpack_sbuffer_init(&sb);
    int rc = tr_proto_encode(&sb, m) == 0 && zmq_send(s, sb.data, sb.size, 0) >= 0 ? 0 : -1;
    msgpack_sbuffer_destroy(&sb);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 5) {
        fprintf(stderr, "usage: zmq_impostor ENDPOINT result|hello WORKER_ID EPOCH|POOL "
                        "[KEYFILE SERVERPUB]\n");
        return 2;
    }
    const char *ep = argv[1], *mode = argv[2], *id = argv[3];
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 2000, rcvtimeo = 5000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &rcvtimeo, sizeof(rcvtimeo));
    zmq_setsockopt(s, ZMQ_ROUTING_ID, id, strlen(id));
    if (argc >= 7) {
        struct tr_error err;
        tr_error_init(&err);
        char pub[TR_CURVE_KEY_LEN + 1], sec[TR_CURVE_KEY_LEN + 1], srv[TR_CURVE_KEY_LEN + 1];
        if (tr_curve_load_pair(argv[5], pub, sec, &err) < 0 ||
            tr_curve_load_public(argv[6], srv, &err) < 0) {
            fprintf(stderr, "zmq_impostor: %s\n", err.msg);
            return 1;
        }
        zmq_setsockopt(s, ZMQ_CURVE_SERVERKEY, srv, sizeof(srv));
        zmq_setsockopt(s, ZMQ_CURVE_PUBLICKEY, pub, sizeof(pub));
        zmq_setsockopt(s, ZMQ_CURVE_SECRETKEY, sec, sizeof(sec));
    }
    if (zmq_connect(s, ep) != 0) {
        fprintf(stderr, "zmq_impostor: cannot connect: %s\n", zmq_strerror(errno));
        return 1;
    }
    if (strcmp(mode, "result") == 0) {
        uint64_t epoch = strtoull(argv[4], NULL, 10);
        for (uint64_t d = 1; d <= 1000; d++) {
            struct tr_msg m = {.type = TR_MSG_RESULT};
            m.u.result.id = d;
            m.u.result.epoch = epoch;
            m.u.result.attempt = 1;
            m.u.result.ok = true;
            m.u.result.output = TR_STR("\xa6" "forged");
            if (send_msg(s, &m) < 0) {
                fprintf(stderr, "zmq_impostor: send failed\n");
                return 1;
            }
        }
        printf("sent\n");
    } else if (strcmp(mode, "hoard") == 0) {
        struct tr_msg m = {.type = TR_MSG_HELLO};
        m.u.hello.worker_id = tr_str_c(id);
        m.u.hello.pool = TR_STR("cpu");
        m.u.hello.slots = 1000000;
        m.u.hello.version = TR_STR("hoarder");
        if (send_msg(s, &m) < 0)
            return 1;
        struct tr_proto_decoder dec;
        tr_proto_decoder_init(&dec, NULL);
        uint64_t end = tr_mono_ns() + (uint64_t)(strtod(argv[4], NULL) * 1e9);
        unsigned tasks = 0;
        static char buf[1 << 20];
        while (tr_mono_ns() < end) {
            zmq_pollitem_t it = {.socket = s, .events = ZMQ_POLLIN};
            if (zmq_poll(&it, 1, 100) > 0) {
                int n;
                while ((n = zmq_recv(s, buf, sizeof(buf), ZMQ_DONTWAIT)) >= 0) {
                    struct tr_msg r;
                    struct tr_error err;
                    tr_error_init(&err);
                    if (n <= (int)sizeof(buf) &&
                        tr_proto_decode(&dec, buf, (size_t)n, &r, &err) == 0 &&
                        r.type == TR_MSG_TASK)
                        tasks++;
                }
            }
            struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
            (void)send_msg(s, &hb);
        }
        printf("tasks %u\n", tasks);
        tr_proto_decoder_release(&dec);
        linger = 0;
        zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    } else {
        struct tr_msg m = {.type = TR_MSG_HELLO};
        m.u.hello.worker_id = tr_str_c(id);
        m.u.hello.pool = tr_str_c(argv[4]);
        m.u.hello.slots = 4;
        m.u.hello.version = TR_STR("impostor");
        if (send_msg(s, &m) < 0) {
            fprintf(stderr, "zmq_impostor: send failed\n");
            return 1;
        }
        char buf[4096];
        const char *answer = "silence";
        struct tr_proto_decoder dec;
        tr_proto_decoder_init(&dec, NULL);
        for (;;) {
            int n = zmq_recv(s, buf, sizeof(buf), 0);
            if (n < 0)
                break;
            struct tr_msg r;
            struct tr_error err;
            tr_error_init(&err);
            if (tr_proto_decode(&dec, buf, (size_t)TR_MIN(n, (int)sizeof(buf)), &r, &err) < 0)
                continue;
            if (r.type == TR_MSG_WELCOME) {
                answer = "welcome";
                break;
            }
            if (r.type == TR_MSG_BYE) {
                printf("bye: %.*s\n", (int)r.u.bye.reason.len, r.u.bye.reason.p);
                answer = NULL;
                break;
            }
        }
        if (answer != NULL)
            printf("%s\n", answer);
        tr_proto_decoder_release(&dec);
    }
    zmq_close(s);
    zmq_ctx_term(ctx);
    return 0;
}
