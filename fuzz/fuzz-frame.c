/* SPDX-License-Identifier: MIT */
/* libFuzzer: the control-protocol frame header, request and reply decoders. */
#include <stdint.h>
#include <string.h>

#include "proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
        uint32_t jlen, dlen;
        enum ha_error err;
        const char *msg;
        HaRequest req;
        HaReply rep;

        if (size < HA_PROTO_HDR_SIZE)
                return 0;
        if (ha_frame_hdr_parse(data, 1u << 20, &jlen, &dlen, &err) < 0)
                return 0;
        data += HA_PROTO_HDR_SIZE;
        size -= HA_PROTO_HDR_SIZE;
        if (jlen > size)
                jlen = (uint32_t)size;  /* as much as arrived */
        if (ha_request_parse((const char *)data, jlen, &req, &err, &msg) == 0)
                (void)strlen(req.method);
        ha_request_done(&req);
        if (ha_reply_parse((const char *)data, jlen, &rep) == 0)
                ha_reply_done(&rep);
        return 0;
}
