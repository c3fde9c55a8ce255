/* SPDX-License-Identifier: MIT */
/*
 * hyperampd control protocol: the contract between hyperampd and its clients.
 * docs/protocol.md is the prose version of this file; change both together.
 *
 * A frame is an 8-byte header, a JSON object and an optional raw payload:
 *
 *   u32 json_len (big-endian, 2..HA_PROTO_MAX_JSON)
 *   u32 data_len (big-endian, 0..the daemon's max_payload)
 *   json_len bytes of JSON, then data_len bytes of payload
 */
#ifndef HYPERAMP_PROTOCOL_H
#define HYPERAMP_PROTOCOL_H

#include <stdint.h>

#define HA_PROTO_VERSION        1
#define HA_PROTO_HDR_SIZE       8
#define HA_PROTO_MAX_JSON       (64u * 1024u)
#define HA_PROTO_MAX_ID         9007199254740991.0   /* 2^53 - 1: exact in a double */

/* Method names */
#define HA_METHOD_SUBMIT   "submit"
#define HA_METHOD_STATS    "stats"
#define HA_METHOD_SERVICES "services"
#define HA_METHOD_PING     "ping"
#define HA_METHOD_ATTACH   "attach"     /* zone lease: see zone.h */
#define HA_METHOD_RELOAD   "reload"     /* admin */
#define HA_METHOD_SHUTDOWN "shutdown"   /* admin */

/*
 * Error codes, sent as their string name.  Append only: clients match on
 * them, so a code is never renumbered, renamed or reused.
 */
#define HA_ERRORS(X)                                                            \
        X(E_PROTO,    "malformed frame or JSON")                                \
        X(E_VERSION,  "unsupported protocol version")                           \
        X(E_METHOD,   "unknown method")                                         \
        X(E_INVALID,  "invalid parameters")                                     \
        X(E_TOO_BIG,  "frame or payload too large")                             \
        X(E_BUSY,     "queue or buffer pool full, try again")                   \
        X(E_SHUTDOWN, "daemon is shutting down")                                \
        X(E_INTERNAL, "internal error")                                         \
        X(E_LIMIT,    "connection limit reached")                              \
        X(E_DENIED,   "not allowed for this client")                           \
        X(E_CONFIG,   "configuration refused")                                \
        X(E_DISABLED, "turned off in the daemon's configuration")

enum ha_error {
#define HA_ERR_ENUM(name, text) HA_##name,
        HA_ERRORS(HA_ERR_ENUM)
#undef HA_ERR_ENUM
        _HA_ERROR_MAX
};

const char *ha_error_name(enum ha_error e);
const char *ha_error_text(enum ha_error e);

#endif
