#!/bin/bash
# SPDX-License-Identifier: MIT
#
# PID 1 of the systemd end-to-end test's namespaces, until it execs systemd.
# Started by e2e.sh as:
#   unshare --pid --fork --mount --mount-proc --uts --cgroup bash ns-init.sh SCRATCH CGROUP_MOUNTS
#
# It makes every path systemd or the units under test could write to private
# to this mount namespace (/run, /tmp, /var, /etc, /usr, /dev and the cgroup
# tree: tmpfs, or overlays whose writes go to a tmpfs), installs the Debian
# packages with dpkg -i, and execs
#   /lib/systemd/systemd --system --unit=ci.target
# with SYSTEMD_UNIT_PATH=/run/ci-units only, so that none of the host's units
# (sysinit.target's tmpfiles wiping /tmp, sysctl, modules...) can start.
#
# SCRATCH holds: debs/ (the packages), units/ (the unit folder), console.log.
# CGROUP_MOUNTS is a file of "fstype mountpoint superoptions" lines, the
# host's cgroup mounts, remounted here so that their root is our cgroup
# namespace (e2e.sh created and entered a fresh cgroup in each hierarchy).
set -euo pipefail

S=$1
CGROUP_MOUNTS=$2

say() { echo "ns-init: $*" >&2; }

# Nothing below may propagate back to the host's mount table.
mount --make-rprivate /

# /run: systemd's runtime state, the unit folder, overlay upper layers.
# SCRATCH is read before /tmp and /var are covered (it may live there).
mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run
mkdir -p /run/ci-units /run/ci-generators /run/ci-rw /run/ci-debs
cp "$S"/units/* /run/ci-units/
cp "$S"/debs/*.deb /run/ci-debs/

# cgroups: the hierarchies again, rooted at our cgroup namespace's root.
if [ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ]; then
        mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
else
        links=()
        for l in /sys/fs/cgroup/*; do
                [ -L "$l" ] && links+=("$(basename "$l")=$(readlink "$l")")
        done
        mount -t tmpfs -o mode=0755,nosuid,nodev,noexec tmpfs /sys/fs/cgroup
        while read -r fstype mp opts; do
                mkdir -p "$mp"
                if [ "$fstype" = cgroup2 ]; then
                        mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 "$mp"
                else
                        mount -t cgroup -o "nosuid,nodev,noexec,$opts" cgroup "$mp"
                fi
        done <"$CGROUP_MOUNTS"
        for l in "${links[@]}"; do
                ln -s "${l#*=}" "/sys/fs/cgroup/${l%%=*}"
        done
        mount -o remount,ro /sys/fs/cgroup
fi

# /dev: a small private one, as a container gets, so that systemd's
# console reset and the journal's /dev/log symlink stay in here.  The
# console is a file in SCRATCH: whatever PID 1 writes there is kept.
mkdir /run/ci-dev
mount -t tmpfs -o mode=0755,nosuid tmpfs /run/ci-dev
for n in null zero full random urandom tty; do
        touch "/run/ci-dev/$n"
        mount --bind "/dev/$n" "/run/ci-dev/$n"
done
touch /run/ci-dev/console "$S/console.log"
mount --bind "$S/console.log" /run/ci-dev/console
mkdir /run/ci-dev/pts /run/ci-dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=0620,nosuid,noexec devpts /run/ci-dev/pts
ln -s pts/ptmx /run/ci-dev/ptmx
# The daemon's queue (shm_name) lives here, apart from the host's /dev/shm.
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /run/ci-dev/shm
ln -s /proc/self/fd /run/ci-dev/fd
ln -s /proc/self/fd/0 /run/ci-dev/stdin
ln -s /proc/self/fd/1 /run/ci-dev/stdout
ln -s /proc/self/fd/2 /run/ci-dev/stderr
mount --move /run/ci-dev /dev
rmdir /run/ci-dev

# /usr, /etc and /var: the host's, with writes (dpkg's files and database,
# systemd-sysusers' /etc/passwd, the journal, PrivateTmp= directories) going
# to a tmpfs.  /lib is /usr/lib on Debian 12.
for d in usr etc var; do
        mkdir -p "/run/ci-rw/$d/upper" "/run/ci-rw/$d/work"
        mount -t overlay -o "lowerdir=/$d,upperdir=/run/ci-rw/$d/upper,workdir=/run/ci-rw/$d/work" overlay "/$d"
done
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp

# The packages, installed as on a machine that is not booted yet (no
# /run/systemd/system): the maintainer scripts run systemd-sysusers,
# systemd-tmpfiles and deb-systemd-helper enable, and systemd's trigger
# compiles the message catalog; nothing is started.
say "dpkg -i $(cd /run/ci-debs && echo *.deb)"
env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
        DEBIAN_FRONTEND=noninteractive dpkg -i /run/ci-debs/*.deb
# The packaged units, in the only folder this systemd reads.
cp /lib/systemd/system/hyperampd.service /lib/systemd/system/hyperampd.socket \
        /lib/systemd/system/hyperampd-metrics.socket /run/ci-units/

mkdir -p /run/systemd/journald.conf.d
printf '[Journal]\nStorage=volatile\nRateLimitBurst=0\n' >/run/systemd/journald.conf.d/ci.conf

say "starting systemd"
exec env -i container=hyperamp-ci \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        SYSTEMD_UNIT_PATH=/run/ci-units \
        SYSTEMD_GENERATOR_PATH=/run/ci-generators \
        SYSTEMD_ENVIRONMENT_GENERATOR_PATH=/run/ci-generators \
        /lib/systemd/systemd --system --unit=ci.target --show-status=no
