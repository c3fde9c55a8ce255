/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "listenfds.h"
#include "log.h"

#define MAX_FDS 16

static bool loaded;
static int nfds;
static int fds[MAX_FDS];
static char *names[MAX_FDS];

static void load(void)
{
        char **n = NULL;
        int k;

        if (loaded)
                return;
        loaded = true;
        k = sd_listen_fds_with_names(1, &n);
        for (int i = 0; i < k; i++) {
                if (nfds < MAX_FDS) {
                        fds[nfds] = SD_LISTEN_FDS_START + i;
                        names[nfds++] = n && n[i] ? n[i] : NULL;
                } else {
                        close(SD_LISTEN_FDS_START + i);
                        free(n ? n[i] : NULL);
                }
        }
        free(n);
}

int ha_listen_fd_take(const char *name, bool sole)
{
        load();
        for (int i = 0; i < nfds; i++) {
                bool named = names[i] && strcmp(names[i], name) == 0;
                bool unnamed = nfds == 1 && (!names[i] || (strcmp(names[i], "control") != 0 &&
                                                           strcmp(names[i], "metrics") != 0));

                if (fds[i] >= 0 && (named || (sole && unnamed))) {
                        int fd = fds[i];

                        fds[i] = -1;
                        return fd;
                }
        }
        return -ENOENT;
}

void ha_listen_fds_close_rest(void)
{
        load();
        for (int i = 0; i < nfds; i++) {
                if (fds[i] >= 0) {
                        log_warning("systemd passed a socket named '%s' (fd %d) that nothing "
                                    "here uses, closing it", names[i] ? names[i] : "", fds[i]);
                        close(fds[i]);
                        fds[i] = -1;
                }
                free(names[i]);
                names[i] = NULL;
        }
        nfds = 0;
}
