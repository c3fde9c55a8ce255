/* SPDX-License-Identifier: MIT */
#ifndef HA_SOCKPATH_H
#define HA_SOCKPATH_H

#include <stddef.h>

/* Where the system daemon (hyperampd.socket) listens. */
#define HA_SYSTEM_SOCKET "/run/hyperamp/hyperampd.sock"

/*
 * Resolve the control socket path, the same way in daemon and client:
 * override (--socket), $HYPERAMP_SOCKET, $RUNTIME_DIRECTORY/hyperampd.sock,
 * /run/hyperamp/hyperampd.sock as root, $XDG_RUNTIME_DIR/hyperamp/hyperampd.sock,
 * else /tmp/hyperamp-UID/hyperampd.sock (a private 0700 directory).
 * -ENAMETOOLONG when the result does not fit in sockaddr_un.
 */
int ha_socket_path(const char *override, char *buf, size_t size);

/*
 * Make sure the socket's directory exists.  The private /tmp fallback is
 * created 0700 and must be ours and closed to others, or -EPERM: anyone
 * can create names in /tmp.  Other directories are created 0750.
 */
int ha_socket_dir_prepare(const char *path);

#endif
