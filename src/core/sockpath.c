/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "sockpath.h"

#define SOCK_NAME "hyperampd.sock"

static const char *nonempty_env(const char *name)
{
        const char *v = getenv(name);
        return v && *v ? v : NULL;
}

static int private_dir(char *buf, size_t size)
{
        int n = snprintf(buf, size, "/tmp/hyperamp-%u", (unsigned)geteuid());
        return n < 0 || (size_t)n >= size ? -ENAMETOOLONG : 0;
}

int ha_socket_path(const char *override, char *buf, size_t size)
{
        const char *v;
        char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        int n;

        if (override && *override)
                n = snprintf(buf, size, "%s", override);
        else if ((v = nonempty_env("HYPERAMP_SOCKET")))
                n = snprintf(buf, size, "%s", v);
        else if ((v = nonempty_env("RUNTIME_DIRECTORY"))) {
                /* systemd passes a colon-separated list; ours is the first */
                size_t len = strcspn(v, ":");
                n = snprintf(buf, size, "%.*s/" SOCK_NAME, (int)len, v);
        } else if (geteuid() == 0)
                n = snprintf(buf, size, "%s", HA_SYSTEM_SOCKET);
        else if ((v = nonempty_env("XDG_RUNTIME_DIR")))
                n = snprintf(buf, size, "%s/hyperamp/" SOCK_NAME, v);
        else {
                if (private_dir(dir, sizeof(dir)) < 0)
                        return -ENAMETOOLONG;
                n = snprintf(buf, size, "%s/" SOCK_NAME, dir);
        }
        if (n < 0 || (size_t)n >= size || (size_t)n >= sizeof(((struct sockaddr_un *)0)->sun_path))
                return -ENAMETOOLONG;
        return 0;
}

int ha_socket_dir_prepare(const char *path)
{
        char dir[sizeof(((struct sockaddr_un *)0)->sun_path)];
        char priv[sizeof(dir)];
        const char *slash = strrchr(path, '/');
        struct stat st;
        bool is_private;

        if (!slash || slash == path)
                return 0;       /* relative name or directly under / */
        if ((size_t)(slash - path) >= sizeof(dir))
                return -ENAMETOOLONG;
        memcpy(dir, path, (size_t)(slash - path));
        dir[slash - path] = '\0';

        is_private = private_dir(priv, sizeof(priv)) == 0 && strcmp(dir, priv) == 0;
        if (mkdir(dir, is_private ? 0700 : 0750) < 0 && errno != EEXIST)
                return -errno;
        if (lstat(dir, &st) < 0)
                return -errno;
        if (!S_ISDIR(st.st_mode))
                return -ENOTDIR;
        if (is_private && (st.st_uid != geteuid() || (st.st_mode & 0077)))
                return -EPERM;
        return 0;
}
