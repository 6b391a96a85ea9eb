/*
 * zmq_garbage.c - sends hostile frames to a scheduler's worker port, for the
 * bad-input end-to-end test: random bytes, a truncated frame, a msgpack
 * container that declares four billion elements, a wrong protocol version, a
 * frame with too many parts, and raw bytes on a plain TCP connection (which
 * libzmq's handshake refuses). Exits 0 once everything is sent.
 *
 * usage: zmq_garbage tcp://127.0.0.1:PORT
 *
 * With --call it plays a worker instead: HELLO, then a CALL (docs/protocol.md)
 * for a dispatch it does not hold, and prints "reply STATUS" from the
 * CALL_REPLY that comes back (409 expected), or "no reply".
 *
 * usage: zmq_garbage --call tcp://127.0.0.1:PORT
 */
#include "lib/base/base.h"

#include <arpa/inet.h>
#include <sys/socket.h>
#include <unistd.h>
#include <zmq.h>

static void send_frame(void *s, const void *p, size_t n)
{
    if (zmq_send(s, p, n, 0) < 0)
        fprintf(stderr, "zmq_garbage: send failed: %s\n", zmq_strerror(errno));
}

/* HELLO, CALL for dispatch 424242, and the status of the CALL_REPLY. */
static int call_mode(const char *endpoint)
{
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 0, timeout = 500;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_RCVTIMEO, &timeout, sizeof(timeout));
    zmq_setsockopt(s, ZMQ_ROUTING_ID, "caller", 6);
    if (zmq_connect(s, endpoint) != 0)
        return 1;
    /* [1, 1, {"id": "caller", "pool": "cpu", "slots": 1}] */
    static const unsigned char hello[] = {0x93, 0x01, 0x01, 0x83, 0xa2, 'i', 'd', 0xa6, 'c',
                                          'a',  'l',  'l',  'e',  'r',  0xa4, 'p', 'o', 'o',
                                          'l',  0xa3, 'c',  'p',  'u',  0xa5, 's', 'l', 'o',
                                          't',  's',  0x01};
    /* [1, 11, {"id": 1, "dispatch": 424242, "op": "label", "body": bin {}}] */
    static const unsigned char call[] = {0x93, 0x01, 0x0b, 0x84, 0xa2, 'i', 'd', 0x01, 0xa8,
                                         'd',  'i',  's',  'p',  'a',  't', 'c', 'h', 0xce,
                                         0x00, 0x06, 0x79, 0x32, 0xa2, 'o', 'p', 0xa5, 'l',
                                         'a',  'b',  'e',  'l',  0xa4, 'b', 'o', 'd', 'y',
                                         0xc4, 0x01, 0x80};
    static const unsigned char status_key[] = {0xa6, 's', 't', 'a', 't', 'u', 's'};
    send_frame(s, hello, sizeof(hello));
    bool called = false;
    int status = -1;
    for (int i = 0; i < 60 && status < 0; i++) {
        unsigned char buf[4096];
        int n = zmq_recv(s, buf, sizeof(buf), 0);
        if (n < 3)
            continue;
        if (buf[2] == 0x02 && !called) { /* WELCOME */
            send_frame(s, call, sizeof(call));
            called = true;
        } else if (buf[2] == 0x0c) { /* CALL_REPLY */
            for (int j = 0; j + (int)sizeof(status_key) + 3 <= n; j++) {
                if (memcmp(buf + j, status_key, sizeof(status_key)) != 0)
                    continue;
                const unsigned char *v = buf + j + sizeof(status_key);
                status = v[0] == 0xcd ? (v[1] << 8 | v[2]) : v[0] < 0x80 ? v[0] : 0;
                break;
            }
        }
    }
    static const unsigned char bye[] = {0x93, 0x01, 0x09, 0x80};
    send_frame(s, bye, sizeof(bye));
    zmq_close(s);
    zmq_ctx_term(ctx);
    if (status < 0)
        printf("no reply\n");
    else
        printf("reply %d\n", status);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc == 3 && strcmp(argv[1], "--call") == 0)
        return call_mode(argv[2]);
    if (argc != 2) {
        fprintf(stderr, "usage: zmq_garbage tcp://127.0.0.1:PORT\n");
        return 2;
    }
    void *ctx = zmq_ctx_new();
    void *s = zmq_socket(ctx, ZMQ_DEALER);
    int linger = 2000;
    zmq_setsockopt(s, ZMQ_LINGER, &linger, sizeof(linger));
    zmq_setsockopt(s, ZMQ_ROUTING_ID, "garbage", 7);
    if (zmq_connect(s, argv[1]) != 0) {
        fprintf(stderr, "zmq_garbage: cannot connect: %s\n", zmq_strerror(errno));
        return 1;
    }
    unsigned char rnd[512];
    unsigned int seed = 42;
    for (int round = 0; round < 20; round++) {
        for (size_t i = 0; i < sizeof(rnd); i++)
            rnd[i] = (unsigned char)rand_r(&seed);
        send_frame(s, rnd, 1 + (size_t)(rand_r(&seed) % sizeof(rnd)));
    }
    /* [1, 5, {"id": 7, "ok": true, "output": <bin 100 bytes, cut>}] */
    static const unsigned char truncated[] = {0x93, 0x01, 0x05, 0x83, 0xa2, 'i', 'd', 0x07,
                                              0xa2, 'o',  'k',  0xc3, 0xa6, 'o', 'u', 't',
                                              'p',  'u',  't',  0xc4, 100,  1,   2,   3};
    send_frame(s, truncated, sizeof(truncated));
    static const unsigned char bomb[] = {0x93, 0x01, 0x05, 0xdf, 0xff, 0xff, 0xff, 0xff};
    send_frame(s, bomb, sizeof(bomb));
    static const unsigned char bad_version[] = {0x93, 0x63, 0x03, 0x80};
    send_frame(s, bad_version, sizeof(bad_version));
    static const unsigned char bad_type[] = {0x93, 0x01, 0x63, 0x80};
    send_frame(s, bad_type, sizeof(bad_type));
    zmq_send(s, "a", 1, ZMQ_SNDMORE);
    zmq_send(s, "b", 1, ZMQ_SNDMORE);
    zmq_send(s, "c", 1, 0);
    zmq_close(s);
    zmq_ctx_term(ctx);

    /* Raw TCP: not even a ZMTP greeting. */
    const char *hp = strstr(argv[1], "://");
    const char *colon = strrchr(argv[1], ':');
    if (hp && colon) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a = {.sin_family = AF_INET,
                                .sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10))};
        inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
        if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0) {
            if (write(fd, rnd, sizeof(rnd)) < 0)
                perror("zmq_garbage: write");
        }
        if (fd >= 0)
            close(fd);
    }
    printf("sent\n");
    return 0;
}
