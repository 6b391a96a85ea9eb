/*
 * test_proto.c - worker protocol frames: every message type round-trips,
 * and hostile bytes are refused by the bounds check before msgpack-c
 * allocates anything.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lib/wire/proto.h"

/* Fixture: an encoder buffer and a decoder, fresh for every test. */
struct fixture
{
    msgpack_sbuffer sb;
    struct tr_proto_decoder dec;
    struct tr_msg out;
    struct tr_error err;
};

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    msgpack_sbuffer_init(&f->sb);
    tr_proto_decoder_init(&f->dec, NULL);
    tr_error_init(&f->err);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    msgpack_sbuffer_destroy(&f->sb);
    tr_proto_decoder_release(&f->dec);
    free(f);
    return 0;
}

static int roundtrip(struct fixture *f, const struct tr_msg *m)
{
    msgpack_sbuffer_clear(&f->sb);
    assert_int_equal(tr_proto_encode(&f->sb, m), 0);
    return tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err);
}

static void assert_str(struct tr_str s, const char *want)
{
    assert_int_equal(s.len, strlen(want));
    assert_memory_equal(s.p, want, s.len);
}

static void test_hello_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct tr_msg m = {.type = TR_MSG_HELLO};
    m.u.hello.worker_id = TR_STR("w-host-1");
    m.u.hello.pool = TR_STR("gpu");
    m.u.hello.slots = 1000;
    m.u.hello.gpus = 2;
    m.u.hello.cpus = 8;
    m.u.hello.mem_mb = 24000;
    m.u.hello.n_labels = 2;
    m.u.hello.labels[0] = (struct tr_kv){TR_STR("zone"), TR_STR("a")};
    m.u.hello.labels[1] = (struct tr_kv){TR_STR("gpu_model"), TR_STR("h100")};
    m.u.hello.version = TR_STR("0.1.0");
    assert_int_equal(roundtrip(f, &m), 0);
    assert_int_equal(f->out.type, TR_MSG_HELLO);
    const struct tr_msg_hello *h = &f->out.u.hello;
    assert_str(h->worker_id, "w-host-1");
    assert_str(h->pool, "gpu");
    assert_int_equal(h->slots, 1000);
    assert_int_equal(h->gpus, 2);
    assert_int_equal(h->cpus, 8);
    assert_int_equal(h->mem_mb, 24000);
    assert_int_equal(h->n_labels, 2);
    assert_str(h->labels[1].key, "gpu_model");
    assert_str(h->labels[1].value, "h100");
    assert_str(h->version, "0.1.0");
    assert_int_equal(h->n_gpu_info, 0); /* absent without GPUs */
}

/* HELLO and HEARTBEAT describe devices; TASK names the ones it gives. */
static void test_gpus_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct tr_msg m = {.type = TR_MSG_HELLO};
    m.u.hello.worker_id = TR_STR("w-g");
    m.u.hello.pool = TR_STR("gpu");
    m.u.hello.slots = 2;
    m.u.hello.gpus = 2;
    m.u.hello.version = TR_STR("0.1.0");
    m.u.hello.n_gpu_info = 2;
    m.u.hello.gpu_info[0] = (struct tr_gpu_info){0, TR_STR("A100"), 40960, 100, 17};
    m.u.hello.gpu_info[1] = (struct tr_gpu_info){3, TR_STR("A100 \"b\""), 40960, 0, -1};
    assert_int_equal(roundtrip(f, &m), 0);
    const struct tr_msg_hello *h = &f->out.u.hello;
    assert_int_equal(h->n_gpu_info, 2);
    assert_int_equal(h->gpu_info[1].index, 3);
    assert_str(h->gpu_info[1].name, "A100 \"b\"");
    assert_true(h->gpu_info[0].mem_total_mb == 40960 && h->gpu_info[0].mem_used_mb == 100);
    assert_int_equal(h->gpu_info[0].util, 17);
    assert_int_equal(h->gpu_info[1].util, -1); /* unknown stays unknown */

    struct tr_msg hb = {.type = TR_MSG_HEARTBEAT};
    assert_int_equal(roundtrip(f, &hb), 0);
    assert_int_equal(f->out.u.heartbeat.n_gpus, 0);
    hb.u.heartbeat.n_gpus = 1;
    hb.u.heartbeat.gpus[0] = (struct tr_gpu_info){3, TR_STR("x"), 8, 7, 99};
    assert_int_equal(roundtrip(f, &hb), 0);
    assert_int_equal(f->out.u.heartbeat.n_gpus, 1);
    assert_int_equal(f->out.u.heartbeat.gpus[0].mem_used_mb, 7);
    assert_int_equal(f->out.u.heartbeat.gpus[0].util, 99);

    struct tr_msg t = {.type = TR_MSG_TASK};
    t.u.task.id = 5;
    t.u.task.task = TR_STR("train");
    t.u.task.digest = TR_STR("ab");
    assert_int_equal(roundtrip(f, &t), 0);
    assert_int_equal(f->out.u.task.n_gpus, 0); /* absent: none */
    t.u.task.n_gpus = 2;
    t.u.task.gpus[0] = 2;
    t.u.task.gpus[1] = 3;
    assert_int_equal(roundtrip(f, &t), 0);
    assert_int_equal(f->out.u.task.n_gpus, 2);
    assert_int_equal(f->out.u.task.gpus[1], 3);

    /* More device indices than a task may hold, or a wrong type: refused. */
    msgpack_sbuffer_clear(&f->sb);
    msgpack_packer pk;
    msgpack_packer_init(&pk, &f->sb, msgpack_sbuffer_write);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint32(&pk, TR_PROTO_VERSION);
    msgpack_pack_uint32(&pk, TR_MSG_TASK);
    msgpack_pack_map(&pk, 4);
    msgpack_pack_str_with_body(&pk, "id", 2);
    msgpack_pack_uint32(&pk, 1);
    msgpack_pack_str_with_body(&pk, "task", 4);
    msgpack_pack_str_with_body(&pk, "t", 1);
    msgpack_pack_str_with_body(&pk, "digest", 6);
    msgpack_pack_str_with_body(&pk, "ab", 2);
    msgpack_pack_str_with_body(&pk, "gpus", 4);
    size_t at = f->sb.size; /* the gpus value starts here */
    msgpack_pack_array(&pk, 1);
    msgpack_pack_uint32(&pk, 0);
    assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err), 0);
    assert_int_equal(f->out.u.task.n_gpus, 1);
    f->sb.size = at;
    msgpack_pack_array(&pk, 1);
    msgpack_pack_str_with_body(&pk, "0", 1); /* a string, not an index */
    assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err),
                     TR_EPROTO);
    f->sb.size = at;
    msgpack_pack_array(&pk, TR_PROTO_MAX_GPUS + 1); /* more than a task may hold */
    for (int i = 0; i <= TR_PROTO_MAX_GPUS; i++)
        msgpack_pack_uint32(&pk, (uint32_t)i);
    assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err),
                     TR_EPROTO);
}

static void test_task_and_result_roundtrip(void **state)
{
    struct fixture *f = *state;
    static const char args[] = "\x92\x01\xa1x"; /* [1, "x"] */
    struct tr_msg m = {.type = TR_MSG_TASK};
    m.u.task.id = 0x123456789abcull;
    m.u.task.epoch = 7;
    m.u.task.attempt = 3;
    m.u.task.run_id = TR_STR("r-0001");
    m.u.task.task = TR_STR("generate");
    m.u.task.index = 42;
    m.u.task.digest = TR_STR("ab12");
    m.u.task.params = TR_STR("\x80");
    m.u.task.args = (struct tr_str){args, sizeof(args) - 1};
    m.u.task.timeout = 2.5;
    assert_int_equal(roundtrip(f, &m), 0);
    const struct tr_msg_task *t = &f->out.u.task;
    assert_int_equal(f->out.type, TR_MSG_TASK);
    assert_true(t->id == 0x123456789abcull);
    assert_int_equal(t->epoch, 7);
    assert_int_equal(t->attempt, 3);
    assert_int_equal(t->index, 42);
    assert_str(t->task, "generate");
    assert_int_equal(t->args.len, 4);
    assert_memory_equal(t->args.p, args, 4);
    assert_true(t->timeout == 2.5);

    struct tr_msg r = {.type = TR_MSG_RESULT};
    r.u.result.id = 99;
    r.u.result.epoch = 7;
    r.u.result.attempt = 1;
    r.u.result.ok = false;
    r.u.result.error = TR_STR("boom\nstack traceback:");
    r.u.result.timed_out = true;
    r.u.result.started_at = 1.5;
    r.u.result.finished_at = 2.5;
    r.u.result.n_logs = 2;
    r.u.result.logs[0] = TR_STR("first");
    r.u.result.logs[1] = TR_STR("second");
    assert_int_equal(roundtrip(f, &r), 0);
    const struct tr_msg_result *res = &f->out.u.result;
    assert_int_equal(res->id, 99);
    assert_false(res->ok);
    assert_true(res->timed_out);
    assert_false(res->cancelled);
    assert_str(res->error, "boom\nstack traceback:");
    assert_int_equal(res->n_logs, 2);
    assert_str(res->logs[1], "second");
    assert_true(res->finished_at == 2.5);
    assert_int_equal(res->usage.len, 0); /* absent: no model calls */
}

static void test_result_usage_optional(void **state)
{
    struct fixture *f = *state;
    struct tr_msg m = {.type = TR_MSG_RESULT};
    m.u.result.id = 5;
    m.u.result.ok = true;
    m.u.result.output = TR_STR("\xc0");
    /* Without usage the frame has the 11 fields older peers know. */
    msgpack_sbuffer_clear(&f->sb);
    assert_int_equal(tr_proto_encode(&f->sb, &m), 0);
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    assert_int_equal(msgpack_unpack_next(&u, f->sb.data, f->sb.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.via.array.ptr[2].via.map.size, 11);
    /* With it, a 12th field carries the bytes unchanged. */
    const char usage[] = "\x91\x81\xa8provider\xa5local";
    m.u.result.usage = (struct tr_str){usage, sizeof(usage) - 1};
    msgpack_sbuffer_clear(&f->sb);
    assert_int_equal(tr_proto_encode(&f->sb, &m), 0);
    assert_int_equal(msgpack_unpack_next(&u, f->sb.data, f->sb.size, NULL),
                     MSGPACK_UNPACK_SUCCESS);
    assert_int_equal(u.data.via.array.ptr[2].via.map.size, 12);
    msgpack_unpacked_destroy(&u);
    assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err), 0);
    assert_int_equal(f->out.u.result.usage.len, sizeof(usage) - 1);
    assert_memory_equal(f->out.u.result.usage.p, usage, sizeof(usage) - 1);
    assert_int_equal(f->out.u.result.id, 5);
}

static void test_other_types_roundtrip(void **state)
{
    struct fixture *f = *state;
    struct tr_msg m = {.type = TR_MSG_WELCOME};
    m.u.welcome.heartbeat_ms = 250;
    m.u.welcome.epoch = 12;
    assert_int_equal(roundtrip(f, &m), 0);
    assert_int_equal(f->out.u.welcome.heartbeat_ms, 250);
    assert_int_equal(f->out.u.welcome.epoch, 12);

    m = (struct tr_msg){.type = TR_MSG_CANCEL};
    m.u.cancel.id = 5;
    m.u.cancel.reason = TR_STR("timeout");
    assert_int_equal(roundtrip(f, &m), 0);
    assert_int_equal(f->out.u.cancel.id, 5);
    assert_str(f->out.u.cancel.reason, "timeout");

    m = (struct tr_msg){.type = TR_MSG_PIPELINE};
    m.u.pipeline.digest = TR_STR("d1");
    m.u.pipeline.source = TR_STR("return 1\0with nul");
    assert_int_equal(roundtrip(f, &m), 0);
    assert_int_equal(f->out.u.pipeline.source.len, 17);

    m = (struct tr_msg){.type = TR_MSG_HEARTBEAT};
    assert_int_equal(roundtrip(f, &m), 0);
    assert_int_equal(f->out.type, TR_MSG_HEARTBEAT);
    assert_string_equal(tr_msg_type_name(TR_MSG_PIPELINE_GET), "PIPELINE_GET");
    assert_string_equal(tr_msg_type_name(77), "?");
}

static void test_refuses_missing_and_mistyped_fields(void **state)
{
    struct fixture *f = *state;
    /* TASK without id */
    static const unsigned char no_id[] = {0x93, 0x01, 0x04, 0x81, 0xa4, 't', 'a', 's', 'k',
                                          0xa1, 'x'};
    assert_int_equal(tr_proto_decode(&f->dec, no_id, sizeof(no_id), &f->out, &f->err),
                     TR_EPROTO);
    assert_string_equal(f->err.msg, "bad_body");
    /* HELLO whose slots is a string */
    static const unsigned char bad_slots[] = {0x93, 0x01, 0x01, 0x83, 0xa2, 'i', 'd', 0xa1, 'w',
                                              0xa4, 'p',  'o',  'o',  'l',  0xa1, 'c', 0xa5, 's',
                                              'l',  'o',  't',  's',  0xa1, '1'};
    assert_int_equal(tr_proto_decode(&f->dec, bad_slots, sizeof(bad_slots), &f->out, &f->err),
                     TR_EPROTO);
    static const unsigned char bad_version[] = {0x93, 0x02, 0x03, 0x80};
    assert_int_equal(
        tr_proto_decode(&f->dec, bad_version, sizeof(bad_version), &f->out, &f->err), TR_EPROTO);
    assert_string_equal(f->err.msg, "bad_version");
    static const unsigned char bad_type[] = {0x93, 0x01, 0x00, 0x80};
    assert_int_equal(tr_proto_decode(&f->dec, bad_type, sizeof(bad_type), &f->out, &f->err),
                     TR_EPROTO);
    assert_string_equal(f->err.msg, "unknown_type");
    static const unsigned char not_array[] = {0x81, 0xa1, 'a', 0x01};
    assert_int_equal(tr_proto_decode(&f->dec, not_array, sizeof(not_array), &f->out, &f->err),
                     TR_EPROTO);
    /* Trailing bytes after a valid frame are refused too. */
    static const unsigned char trailing[] = {0x93, 0x01, 0x03, 0x80, 0xc0};
    assert_int_equal(tr_proto_decode(&f->dec, trailing, sizeof(trailing), &f->out, &f->err),
                     TR_EPROTO);
}

static void test_bounds_check(void **state)
{
    (void)state;
    const struct tr_mp_limits *lim = &tr_mp_default_limits;
    /* A map declaring 4 billion pairs in 5 bytes: a lie, refused without allocating. */
    static const unsigned char bomb[] = {0xdf, 0xff, 0xff, 0xff, 0xff};
    assert_int_equal(tr_mp_check(bomb, sizeof(bomb), lim), TR_ELIMIT);
    static const unsigned char arr_lie[] = {0xdd, 0x00, 0x00, 0x10, 0x00, 0x01};
    assert_int_equal(tr_mp_check(arr_lie, sizeof(arr_lie), lim), TR_EPROTO);
    static const unsigned char str_lie[] = {0xdb, 0x00, 0x00, 0x01, 0x00, 'a'};
    assert_int_equal(tr_mp_check(str_lie, sizeof(str_lie), lim), TR_EPROTO);
    static const unsigned char never_used[] = {0xc1};
    assert_int_equal(tr_mp_check(never_used, 1, lim), TR_EPROTO);
    assert_int_equal(tr_mp_check(NULL, 0, lim), TR_EPROTO);
    /* Depth: 33 nested arrays exceed the default depth of 32. */
    unsigned char deep[80];
    memset(deep, 0x91, 33);
    deep[33] = 0xc0;
    assert_int_equal(tr_mp_check(deep, 34, lim), TR_ELIMIT);
    assert_int_equal(tr_mp_check(deep + 1, 33, lim), 33);
    /* Sizes of valid values. */
    static const unsigned char values[] = {0x93, 0x01, 0xcb, 0, 0, 0, 0, 0, 0, 0, 0, 0xa2, 'h', 'i'};
    assert_int_equal(tr_mp_check(values, sizeof(values), lim), (long)sizeof(values));
    static const unsigned char fixext[] = {0xd5, 0x01, 0xaa, 0xbb};
    assert_int_equal(tr_mp_check(fixext, sizeof(fixext), lim), 4);
    /* A string longer than the cap. */
    struct tr_mp_limits small = *lim;
    small.max_str = 2;
    static const unsigned char s3[] = {0xa3, 'a', 'b', 'c'};
    assert_int_equal(tr_mp_check(s3, sizeof(s3), &small), TR_ELIMIT);
    small.max_elements = 2;
    static const unsigned char a3[] = {0x93, 1, 2, 3};
    assert_int_equal(tr_mp_check(a3, sizeof(a3), &small), TR_ELIMIT);
}

static void test_random_bytes_never_crash(void **state)
{
    struct fixture *f = *state;
    unsigned int seed = 1;
    unsigned char buf[256];
    int decoded = 0;
    for (int round = 0; round < 20000; round++) {
        size_t n = (size_t)(rand_r(&seed) % sizeof(buf));
        for (size_t i = 0; i < n; i++)
            buf[i] = (unsigned char)rand_r(&seed);
        if (round % 3 == 0 && n > 3) {
            buf[0] = 0x93; /* make the frame shape likelier */
            buf[1] = 0x01;
        }
        int rc = tr_proto_decode(&f->dec, buf, n, &f->out, &f->err);
        assert_true(rc == 0 || rc == TR_EPROTO || rc == TR_ELIMIT);
        decoded += rc == 0;
    }
    /* Truncations of a valid frame are all refused. */
    struct tr_msg m = {.type = TR_MSG_RESULT};
    m.u.result.id = 1;
    m.u.result.ok = true;
    m.u.result.output = TR_STR("\x92\x01\x02");
    msgpack_sbuffer_clear(&f->sb);
    assert_int_equal(tr_proto_encode(&f->sb, &m), 0);
    for (size_t cut = 0; cut < f->sb.size; cut++)
        assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, cut, &f->out, &f->err), TR_EPROTO);
    assert_int_equal(tr_proto_decode(&f->dec, f->sb.data, f->sb.size, &f->out, &f->err), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_hello_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_task_and_result_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_gpus_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_result_usage_optional, setup, teardown),
        cmocka_unit_test_setup_teardown(test_other_types_roundtrip, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuses_missing_and_mistyped_fields, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bounds_check, setup, teardown),
        cmocka_unit_test_setup_teardown(test_random_bytes_never_crash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
