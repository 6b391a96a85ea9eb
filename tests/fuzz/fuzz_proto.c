/*
 * fuzz_proto.c - the worker-protocol frame decoder (lib/wire/proto.c).
 *
 * Every input is one frame, as a ZeroMQ message from a peer would be. A frame
 * that decodes is encoded again, and that canonical frame must decode and
 * re-encode to the same bytes: the decoder accepts what the encoder writes
 * and loses nothing of it. Default limits, as the daemons use.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "lib/wire/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void encode_or_die(msgpack_sbuffer *sb, const struct tr_msg *m)
{
    if (tr_proto_encode(sb, m) != 0)
        abort(); /* only TR_ENOMEM, which a frame this small cannot cause */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct tr_proto_decoder d1, d2;
    tr_proto_decoder_init(&d1, NULL);
    tr_proto_decoder_init(&d2, NULL);
    struct tr_msg m1, m2;
    struct tr_error err;
    tr_error_init(&err);
    if (tr_proto_decode(&d1, data, size, &m1, &err) == 0) {
        (void)tr_msg_type_name(m1.type);
        msgpack_sbuffer b1, b2;
        msgpack_sbuffer_init(&b1);
        msgpack_sbuffer_init(&b2);
        encode_or_die(&b1, &m1);
        tr_error_init(&err);
        if (tr_proto_decode(&d2, b1.data, b1.size, &m2, &err) != 0)
            abort(); /* the decoder refuses what the encoder wrote */
        if (m2.type != m1.type)
            abort();
        encode_or_die(&b2, &m2);
        if (b1.size != b2.size || memcmp(b1.data, b2.data, b1.size) != 0)
            abort(); /* a field changed on the way */
        msgpack_sbuffer_destroy(&b1);
        msgpack_sbuffer_destroy(&b2);
    } else if (err.msg[0] == '\0') {
        abort(); /* every refusal names its reason (the drop counter's label) */
    }
    tr_proto_decoder_release(&d1);
    tr_proto_decoder_release(&d2);
    return 0;
}
