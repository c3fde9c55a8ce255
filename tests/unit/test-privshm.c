/* SPDX-License-Identifier: MIT */
/* privshm.c: an object refused at open leaves no fd behind (a remote zone
 * retries the open per request), and one we created is not left either. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "privshm.h"

static int open_fds(void)
{
        DIR *d = opendir("/proc/self/fd");
        int n = 0;

        if (!d)
                return -1;
        while (readdir(d))
                n++;
        closedir(d);
        return n;
}

static bool exists(const char *name)
{
        int fd = shm_open(name, O_RDONLY, 0);

        if (fd < 0)
                return false;
        close(fd);
        return true;
}

/* Mode 0644: not ours alone, refused every time, no fd kept. */
static void test_refused_leaves_no_fd(const char *name)
{
        HaPrivShm s = HA_PRIVSHM_INIT;
        char err[256];
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0644), before;

        CHECK(fd >= 0);
        if (fd >= 0)
                CHECK_EQ(fchmod(fd, 0644), 0);
        before = open_fds();
        for (int i = 0; i < 50; i++)
                CHECK_EQ(ha_privshm_open(&s, name, "record", err, sizeof(err)), -EPERM);
        CHECK_EQ(open_fds(), before);
        CHECK_EQ(s.fd, -1);
        CHECK(strstr(err, "mode 0644") != NULL);
        CHECK(exists(name));            /* not ours to remove */
        if (fd >= 0)
                close(fd);
        shm_unlink(name);
}

/* Locked by another holder: -EBUSY, no fd kept, the object stays. */
static void test_busy_leaves_no_fd(const char *name)
{
        HaPrivShm a = HA_PRIVSHM_INIT, b = HA_PRIVSHM_INIT;
        char err[256];
        int before;

        CHECK_EQ(ha_privshm_open(&a, name, "record", err, sizeof(err)), 0);
        CHECK(a.created);
        before = open_fds();
        for (int i = 0; i < 50; i++)
                CHECK_EQ(ha_privshm_open(&b, name, "record", err, sizeof(err)), -EBUSY);
        CHECK_EQ(open_fds(), before);
        CHECK_EQ(b.fd, -1);
        CHECK(exists(name));
        ha_privshm_close(&a, name, true);
        CHECK(!exists(name));
}

int main(void)
{
        char name[64];

        snprintf(name, sizeof(name), "/hyperamp-test-privshm-%d", (int)getpid());
        shm_unlink(name);
        test_refused_leaves_no_fd(name);
        test_busy_leaves_no_fd(name);
        shm_unlink(name);
        return check_done("privshm");
}
