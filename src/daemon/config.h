/* SPDX-License-Identifier: MIT */
#ifndef HA_CONFIG_H
#define HA_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HA_SHM_NAME_MAX 128

/* One HyperAMP v1 compatibility channel (v1chan.h): hyperampd as the
 * service zone of an unmodified original client. */
#define HA_V1_MAX_CHANNELS 8
#define HA_V1_PATH_MAX 256
typedef struct HaV1ChannelConfig {
        char name[64];
        char shm_config[HA_V1_PATH_MAX];        /* original shm_config.json */
        char mem[HA_V1_PATH_MAX];               /* /dev/mem, or a file in tests */
        char doorbell[HA_V1_PATH_MAX];          /* /dev/hshm0, or a FIFO in tests */
        uint64_t base;                          /* subtracted from addresses */
} HaV1ChannelConfig;

/* One remote service zone: hyperampd as the root-zone owner of its v1
 * queue (remote_v1.h), or as the frontend of its v2 rings (remote_v2.h),
 * forwarding the listed service ids there. */
#define HA_REMOTE_MAX_ZONES 8
#define HA_REMOTE_MAX_SERVICES 256
enum ha_peer { HA_PEER_LINUX, HA_PEER_FREERTOS, HA_PEER_SEL4 };
enum ha_bell { HA_BELL_NONE, HA_BELL_IOCTL, HA_BELL_MMIO, HA_BELL_FIFO };
enum ha_protocol { HA_PROTOCOL_V1, HA_PROTOCOL_V2 };
typedef struct HaRemoteZoneConfig {
        char name[64];
        enum ha_protocol protocol;
        uint64_t address;                       /* v2: the window (page A) */
        bool creator;                           /* v2: role creator, else connector */
        enum ha_peer peer;                      /* v1: the payload convention */
        char shm_config[HA_V1_PATH_MAX];
        char mem[HA_V1_PATH_MAX];
        uint64_t base;
        enum ha_bell bell;
        char bell_path[HA_V1_PATH_MAX];         /* ioctl: device; fifo: path */
        unsigned bell_zone;                     /* ioctl, mmio: target zone */
        uint64_t bell_address;                  /* mmio: physical address */
        unsigned timeout_ms;                    /* per request */
        unsigned max_pending;                   /* requests queued for the zone */
        unsigned n_services;
        uint16_t services[HA_REMOTE_MAX_SERVICES];
} HaRemoteZoneConfig;

/* One HyperAMP v2 backend channel (v2chan.h): a seL4 frontend's requests
 * on the v2 rings, served here. */
#define HA_V2_MAX_CHANNELS 8
typedef struct HaV2ChannelConfig {
        char name[64];
        char mem[HA_V1_PATH_MAX];
        uint64_t address;                       /* the window (page A) */
        uint64_t base;                          /* subtracted from address */
        bool creator;                           /* role creator, else connector */
} HaV2ChannelConfig;

typedef struct HaConfig {
        unsigned workers;               /* 0: one per online CPU */
        char shm_name[HA_SHM_NAME_MAX]; /* POSIX shm object, "/name" */
        unsigned shm_mode;              /* 0600 or 0660 */
        bool shm_persist;               /* keep the object after exit */
        unsigned queue_entries;         /* 1..65535 */
        uint64_t pool_size;             /* data buffer pool bytes */
        uint64_t max_payload;           /* largest request payload */
        unsigned max_connections;
        unsigned max_connections_per_uid; /* for one non-admin uid; 0: a quarter of the above */
        uint64_t output_budget;         /* replies buffered for all clients together */
        unsigned max_inflight_per_conn;
        unsigned client_timeout_ms;     /* idle or stalled mid-frame */
        unsigned status_interval_ms;    /* STATUS= refresh */
        unsigned worker_stall_ms;       /* one job longer than this: wedged */
        unsigned zone_clients;          /* zone channel leases at once; 0: none */
        unsigned poll_us;               /* idle workers poll zone rings this long; 0: never */
        unsigned socket_poll_us;        /* the loop polls after a socket read this long; 0: never */
        uint64_t zone_pool_size;        /* data pool bytes per lease */
        char admin_group[64];           /* may reload/shutdown; "" = none */
        gid_t admin_gid;                /* resolved; (gid_t)-1 when none */
        int log_level;
        char metrics_listen[128];       /* "" off; ADDR:PORT, [V6]:PORT, unix:/PATH */
        unsigned metrics_max_connections;
        unsigned n_v1_channels;         /* restart to change */
        HaV1ChannelConfig v1_channels[HA_V1_MAX_CHANNELS];
        unsigned n_remote_zones;        /* a reload adds, changes, removes */
        HaRemoteZoneConfig remote_zones[HA_REMOTE_MAX_ZONES];
        unsigned n_v2_channels;         /* restart to change */
        HaV2ChannelConfig v2_channels[HA_V2_MAX_CHANNELS];
} HaConfig;

/*
 * The running config is one immutable snapshot, refcounted, in one slot
 * that the daemon owns and a reload swaps (on the loop thread).  Readers
 * keep a pointer to the slot, never a copy: on the loop, ha_config_get()
 * lends the current snapshot for the callback at hand; whoever keeps one
 * longer, or hands it to another thread, takes a reference.
 */
typedef struct HaConfigSlot {
        const HaConfig *cur;
} HaConfigSlot;

/* A new snapshot, a copy of src, with one reference; NULL when out of memory. */
HaConfig *ha_config_new(const HaConfig *src);
const HaConfig *ha_config_ref(const HaConfig *c);
void ha_config_unref(const HaConfig *c);

static inline const HaConfig *ha_config_get(const HaConfigSlot *s)
{
        return __atomic_load_n(&s->cur, __ATOMIC_ACQUIRE);
}

/* Put snap in the slot, which takes over the caller's reference; the
 * snapshot it held loses the slot's (NULL: empty the slot).  Loop thread. */
void ha_config_swap(HaConfigSlot *s, const HaConfig *snap);

/* The embedded default: what hyperampd runs with and no config file. */
void ha_config_defaults(HaConfig *c);

/*
 * Read a JSON config file over the defaults already in *c.  On error returns
 * a negative errno and writes a one-line reason, naming the key, into err.
 */
int ha_config_load(HaConfig *c, const char *path, char *err, size_t errlen);

/* Keys that differ between two configs: the names of those applied live
 * and of those that need a restart, comma-separated into the buffers. */
void ha_config_diff(const HaConfig *old, const HaConfig *new, char *live, size_t live_len,
                    char *restart, size_t restart_len);

/* The same, from text already in memory; path only names it in errors. */
int ha_config_parse(HaConfig *c, const char *path, const char *text, size_t len, char *err,
                    size_t errlen);

/* Copy the keys a reload applies live (the key table says which) from
 * src into dst; everything else in dst stays. */
void ha_config_apply_live(HaConfig *dst, const HaConfig *src);

/* Cross-key checks; also run by ha_config_load. */
int ha_config_validate(const HaConfig *c, char *err, size_t errlen);

/* The effective config as JSON (malloc'd), workers resolved; socket_path
 * (resolved elsewhere) is included when not NULL. */
char *ha_config_to_json(const HaConfig *c, const char *socket_path);

unsigned ha_config_workers(const HaConfig *c);

/* remote_zones (config_remote.c): parse the array over c (err names the
 * key), and the names ha_config_to_json prints. */
struct cJSON;
int ha_config_set_remote_zones(HaConfig *c, const struct cJSON *v, char *err, size_t errlen);
void ha_config_remote_zones_json(const HaConfig *c, struct cJSON *o);
/* v2_channels, the same way. */
int ha_config_set_v2_channels(HaConfig *c, const struct cJSON *v, char *err, size_t errlen);
void ha_config_v2_channels_json(const HaConfig *c, struct cJSON *o);
/* The key two zones must not share that they do ("name", "address": the
 * same rings, "shm_config": the same queue), or NULL. */
const char *ha_remote_zones_shared(const HaRemoteZoneConfig *a, const HaRemoteZoneConfig *b);
const char *ha_peer_name(enum ha_peer p);
const char *ha_bell_name(enum ha_bell b);

#endif
