/* SPDX-License-Identifier: MIT */
#ifndef HA_LISTENFDS_H
#define HA_LISTENFDS_H

#include <stdbool.h>

/*
 * The sockets systemd passed (sd_listen_fds(3)), read once for the whole
 * process, each taken by its FileDescriptorName: "control" (hyperampd.socket)
 * and "metrics" (hyperampd-metrics.socket).  sole: also accept one unnamed
 * socket when it is the only one passed.  Returns the fd, or -ENOENT.
 */
int ha_listen_fd_take(const char *name, bool sole);
/* Close what nobody took (logged): an fd left open would leak into
 * nothing and keep a port bound. */
void ha_listen_fds_close_rest(void);

#endif
