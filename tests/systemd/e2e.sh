#!/bin/bash
# SPDX-License-Identifier: MIT
#
# systemd-e2e: hyperampd under a real systemd, end to end.
#
#   bash e2e.sh BUILD_ROOT SOURCE_ROOT
#
# 1. Takes the Debian packages from $HYPERAMP_DEB_DIR (scripts/deb.sh's
#    output; .ci/run builds them once), or builds them with scripts/deb.sh.
# 2. Boots /lib/systemd/systemd as PID 1 of private PID, mount, UTS and
#    cgroup namespaces (ns-init.sh).  Before that, ns-init.sh installs the
#    packages with dpkg -i, whose maintainer scripts create the user
#    (systemd-sysusers), /run/hyperamp (systemd-tmpfiles), enable the units
#    (deb-systemd-helper) and compile the message catalog (systemd's
#    trigger).  /usr, /etc, /var, /run, /dev, /tmp and the cgroup tree are
#    private (overlays and tmpfs): nothing of the host is written to.
# 3. Through nsenter: with a bad config, a failed start that is not
#    restarted and leaves the socket listening, then a start once the file is
#    fixed (no reset-failed); systemctl start hyperampd.socket hyperampd.service,
#    hyperampctl submit, the Python client, systemctl reload, journalctl -u
#    hyperampd (native structured entries with the caller's CODE_FILE=,
#    journalctl -x with the catalog's text), a SIGKILL under shared-memory load that systemd
#    restarts from and the zone client resumes across, systemctl stop; each
#    step checked.
# 4. Kills that systemd (the namespaces go with it) and checks that nothing
#    is left: no process, mount, cgroup, /dev/shm object or /tmp change.
#
# Exit status: 0 pass, 1 fail, 77 skip (only when namespaces cannot be
# created, i.e. not root or not allowed).  HYPERAMP_E2E_KEEP=1 keeps the
# scratch directory (it is kept anyway, minus the build, on failure).
set -euo pipefail

if [ $# -lt 2 ]; then
        echo "usage: $0 BUILD_ROOT SOURCE_ROOT" >&2
        exit 2
fi
if [ -n "${HYPERAMP_EXE_WRAPPER:-}" ]; then
        # Booting systemd needs the host's own programs; the units would run
        # a foreign hyperampd that systemd cannot exec without binfmt_misc.
        echo "SKIP: systemd-e2e does not run in a cross build (its programs run under $HYPERAMP_EXE_WRAPPER)"
        exit 77
fi
BUILD_ROOT=$(realpath "$1")
SRC=$(realpath "$2")
HERE=$SRC/tests/systemd

# The installed names this test relies on (units/meson.build, configs/).
SOCK=/run/hyperamp/hyperampd.sock
SHM=/dev/shm/hyperampd                  # shm_name of configs/hyperampd.json
MID_READY=9bbb1190bd834ad0b98f5477f619002e
MID_RELOADED=22b631cccf6542739d5447498e3a856c
MID_STOPPED=65e1ff7b5fcb467787bee6c44c354519
MID_DENIED=8cae42a66f8744ba97ecc144a34f2049

T0=$(date +%s)
log() { printf '[%3ds] %s\n' "$(($(date +%s) - T0))" "$*"; }
# poll_until SECONDS CMD...: run CMD until it succeeds (0) or SECONDS pass
# (1).  For conditions with no event to wait on (a process gone, a unit's
# state, a journal entry): the first looks come 10 ms apart, then the step
# doubles up to 250 ms, so a quick condition is seen at once and a slow one
# costs few looks.
poll_until() {
        local limit=$1 step=0.01 end
        shift
        end=$(($(date +%s%N) + limit * 1000000000))
        until "$@"; do
                [ "$(date +%s%N)" -lt "$end" ] || return 1
                sleep "$step"
                case "$step" in
                0.01) step=0.02 ;; 0.02) step=0.04 ;; 0.04) step=0.08 ;;
                0.08) step=0.16 ;; *) step=0.25 ;;
                esac
        done
}

skip() {
        echo "SKIP: $*"
        exit 77
}

# ---- can we make the namespaces at all? (the only reason to skip) ----
if [ "$(id -u)" != 0 ]; then
        skip "systemd-e2e boots systemd in private PID + mount namespaces, which needs root (running as uid $(id -u))"
fi
if ! err=$(unshare --pid --fork --mount --uts --cgroup true 2>&1); then
        skip "cannot create PID + mount + UTS + cgroup namespaces here: ${err:-unshare failed}"
fi

# ---- everything else is a failure from here on ----
for t in /lib/systemd/systemd systemctl journalctl systemd-sysusers systemd-tmpfiles nsenter python3 dpkg dpkg-deb; do
        if ! command -v "$t" >/dev/null; then
                echo "FAIL: '$t' is not installed; the systemd end-to-end test needs it" >&2
                exit 1
        fi
done

mkdir -p "$BUILD_ROOT/tests/systemd"
# Not under /tmp (the booted systemd's own /tmp handling would hide or wipe
# it) and not under /run (ns-init.sh mounts a tmpfs there before it reads
# the scratch directory).
S=$(mktemp -d "$BUILD_ROOT/tests/systemd/e2e.XXXXXX")
case "$S" in
/run/* | *:* | *,*)
        echo "FAIL: scratch path '$S' is under /run or has ':' or ',' (overlayfs options)" >&2
        exit 1
        ;;
esac

NSPID=                  # host pid of the namespace's systemd
LAUNCHER=               # host pid of unshare
PIDNS=                  # its pid namespace, to look for leftovers
CG_DIRS=()              # the cgroups made for it, one per hierarchy
CANARY=
RESULT=1

snapshot() {            # what the host looks like, for the residue check
        {
                echo "## mounts"
                # Not tracefs or debugfs: the kernel mounts them on first use
                # by a tracing tool (perf, strace -k) anywhere on the host.
                cut -d' ' -f5- /proc/self/mountinfo | grep -Ev ' - (tracefs|debugfs) ' | sort
                echo "## private tmp dirs"
                ls -d /tmp/systemd-private-* /var/tmp/systemd-private-* 2>/dev/null || true
                echo "## /dev"
                ls -A /dev/log "$SHM" 2>/dev/null || true
        } >"$1"
}

ns() {                  # run a command inside the namespaces, with a clean environment
        timeout 60 nsenter --target "$NSPID" --mount --pid --uts -- \
                env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_PAGER=cat \
                SYSTEMD_COLORS=0 TERM=dumb "$@"
}

diagnostics() {
        echo "---------------- diagnostics ----------------"
        if [ -n "$NSPID" ] && [ -d "/proc/$NSPID" ]; then
                echo "## systemctl status hyperampd.service hyperampd.socket"
                ns systemctl status --no-pager --full --lines=0 hyperampd.service hyperampd.socket 2>&1 || true
                echo "## systemctl list-units --failed"
                ns systemctl list-units --failed --no-pager 2>&1 || true
                echo "## journalctl -u hyperampd.service -u hyperampd.socket"
                ns journalctl --no-pager -o short-precise -u hyperampd.service -u hyperampd.socket 2>&1 || true
                echo "## journalctl _PID=1 (the namespace's systemd, last 40 lines)"
                ns journalctl --no-pager -o short-precise -n 40 _PID=1 2>&1 || true
        fi
        for f in "$S/ns-init.log" "$S/console.log"; do
                if [ -s "$f" ]; then
                        echo "## $f (last 40 lines)"
                        tail -n 40 "$f"
                fi
        done
        echo "---------------------------------------------"
}

fail() {
        echo "FAIL: $*" >&2
        diagnostics >&2
        exit 1
}

gone() { ! kill -0 "$1" 2>/dev/null; }
pidns_procs() { find /proc -maxdepth 3 -path '/proc/[0-9]*/ns/pid' -lname "$PIDNS" 2>/dev/null; }
pidns_empty() { [ -z "$(pidns_procs | head -n1)" ]; }
# Its cgroups empty out as their processes are reaped: rmdir them, deepest first.
cgroup_removed() {
        find "$1" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [ ! -d "$1" ]
}

teardown() {
        local rc=$? p=
        trap - EXIT INT TERM HUP
        set +e                  # clean up as much as possible, whatever fails
        [ "$RESULT" = 0 ] || rc=1
        if [ -n "$LAUNCHER" ]; then
                # SIGKILL to a PID namespace's init ends every process in it;
                # the mount and cgroup namespaces go with the last of them.
                # unshare then reaps it and exits; it is only killed if it
                # does not (--kill-child takes the namespace with it).
                [ -n "$NSPID" ] && kill -KILL "$NSPID" 2>/dev/null
                poll_until 5 gone "$LAUNCHER"
                kill -KILL "$LAUNCHER" 2>/dev/null
                wait "$LAUNCHER" 2>/dev/null
        fi
        if [ -n "$PIDNS" ]; then
                poll_until 5 pidns_empty
                p=$(pidns_procs | head -n1)
                if [ -n "$p" ]; then
                        echo "FAIL: processes of the test's PID namespace are still running:" >&2
                        pidns_procs >&2
                        rc=1
                fi
        fi
        for d in "${CG_DIRS[@]}"; do
                poll_until 5 cgroup_removed "$d"
                if [ -d "$d" ]; then
                        echo "FAIL: could not remove the test's cgroup $d" >&2
                        rc=1
                fi
        done
        if [ -n "$CANARY" ]; then
                if [ ! -e "$CANARY" ]; then
                        echo "FAIL: $CANARY is gone: something wiped the host's /tmp" >&2
                        rc=1
                fi
                rm -f "$CANARY"
        fi
        if [ -f "$S/host-before" ]; then
                snapshot "$S/host-after"
                if ! diff -u "$S/host-before" "$S/host-after" >"$S/host-diff"; then
                        echo "FAIL: the host changed during the test (mounts, /tmp, /dev):" >&2
                        cat "$S/host-diff" >&2
                        rc=1
                fi
        fi
        if [ "${HYPERAMP_E2E_KEEP:-0}" != 0 ]; then
                echo "scratch directory kept: $S" >&2
        elif [ "$rc" = 0 ]; then
                rm -rf "$S"
        else
                rm -rf "$S/deb/src" "$S/debs"
                echo "scratch directory kept (logs only): $S" >&2
        fi
        [ "$rc" = 0 ] && log "PASS"
        exit "$rc"
}
trap teardown EXIT
trap 'exit 1' INT TERM HUP

snapshot "$S/host-before"
CANARY=$(mktemp /tmp/hyperamp-e2e-canary.XXXXXX)

# ---- 1. the Debian packages ----
if [ -n "${HYPERAMP_DEB_DIR:-}" ]; then
        DEBS=$(realpath "$HYPERAMP_DEB_DIR")
        log "packages from HYPERAMP_DEB_DIR=$DEBS"
else
        DEBS=$S/deb
        log "building the packages: scripts/deb.sh $DEBS (set HYPERAMP_DEB_DIR to reuse a build)"
        "$SRC/scripts/deb.sh" "$DEBS" >"$S/deb.log" 2>&1 || { tail -n 30 "$S/deb.log"; fail "scripts/deb.sh failed"; }
fi
mkdir "$S/debs"
for p in hyperamp libhyperamp0 libhyperamp-dev; do
        f=$(ls "$DEBS/${p}_"*.deb 2>/dev/null | head -n1)
        [ -n "$f" ] || fail "no ${p}_*.deb in $DEBS"
        cp "$f" "$S/debs/"
done
HA_DEB=$(ls "$S"/debs/hyperamp_*.deb)
for f in usr/sbin/hyperampd usr/bin/hyperampctl etc/hyperamp/hyperampd.json lib/systemd/system/hyperampd.service \
        lib/systemd/system/hyperampd.socket usr/lib/sysusers.d/hyperamp.conf usr/lib/tmpfiles.d/hyperamp.conf \
        usr/lib/systemd/catalog/hyperamp.catalog usr/share/doc/hyperamp/protocol.md \
        usr/lib/python3/dist-packages/hyperamp.py; do
        dpkg-deb -c "$HA_DEB" | awk '{ print $6 }' | grep -qx "./$f" || fail "$(basename "$HA_DEB") does not ship /$f"
done
log "installing $(cd "$S/debs" && echo *.deb) in the namespace"

# ---- 2. the unit folder: journald, empty stub targets, the installed units ----
mkdir "$S/units"
for u in systemd-journald.service systemd-journald.socket systemd-journald-dev-log.socket; do
        cp "/lib/systemd/system/$u" "$S/units/"
done
for t in sysinit basic sockets paths timers slices shutdown multi-user local-fs \
        network network-online remote-fs nss-user-lookup; do
        printf '[Unit]\nDescription=Stub %s.target of the hyperamp end-to-end test\n' "$t" \
                >"$S/units/$t.target"
done
cat >"$S/units/ci.target" <<'EOF'
[Unit]
Description=hyperamp end-to-end test
Wants=systemd-journald.socket systemd-journald-dev-log.socket systemd-journald.service
After=systemd-journald.service
EOF
# hyperampd.service and .socket: ns-init.sh copies them in from the
# installed package.

# ---- 3. a fresh cgroup in each hierarchy, below our own ----
# The namespace's systemd takes it as its root cgroup (via a cgroup
# namespace) and builds init.scope and system.slice under it; the whole
# tree is removed after the test.
CGID=hyperamp-$(basename "$S")
: >"$S/cgroup-mounts"
while IFS=: read -r _ ctrls path; do
        # fields of mountinfo: ... 4=root 5=mountpoint ... - fstype source superopts
        line=$(awk -v want="$ctrls" '
                {
                        for (i = 7; $i != "-"; i++) ;
                        fstype = $(i + 1); opts = $(i + 3)
                        if (want == "" && fstype == "cgroup2") { print $4, $5, fstype, opts; exit }
                        if (want != "" && fstype == "cgroup") {
                                n = split(want, w, ","); ok = 1
                                for (j = 1; j <= n; j++)
                                        if (("," opts ",") !~ ("," w[j] ",")) ok = 0
                                if (ok) { print $4, $5, fstype, opts; exit }
                        }
                }' /proc/self/mountinfo)
        [ -n "$line" ] || continue              # hierarchy not mounted
        read -r mroot mp fstype opts <<<"$line"
        case "$mp" in /sys/fs/cgroup | /sys/fs/cgroup/*) ;; *) continue ;; esac
        [ "$mroot" = / ] || case "$path" in "$mroot" | "$mroot"/*) path=${path#"$mroot"} ;; *)
                fail "cannot place the test in cgroup $path of $mp (mounted from $mroot)" ;; esac
        # Leftovers of a run that was SIGKILLed (no trap ran): a tree of
        # ours older than the test's timeout with no process in it.
        find "$mp${path%/}" -mindepth 1 -maxdepth 1 -type d -name 'hyperamp-e2e.??????' -mmin +10 |
                while read -r old; do
                        if ! find "$old" -name cgroup.procs -exec cat {} + | grep -q .; then
                                find "$old" -depth -type d -exec rmdir {} + 2>/dev/null || true
                        fi
                done
        d=$mp${path%/}/$CGID
        mkdir "$d" || fail "cannot create cgroup $d"
        CG_DIRS+=("$d")
        # cgroup v1 cpuset: a new cgroup starts with no CPUs and no memory
        # nodes, and takes no process until it is given some.
        for f in cpuset.cpus cpuset.mems; do
                if [ -f "$d/$f" ] && [ -z "$(cat "$d/$f")" ]; then
                        cat "$(dirname "$d")/$f" >"$d/$f"
                fi
        done
        # Mount options for the copy in the namespace: the hierarchy's
        # identity (controllers, name=, xattr), nothing that needs the
        # initial cgroup namespace (release_agent).
        opts=$(tr ',' '\n' <<<"$opts" | { grep -Ev '^(rw|ro|release_agent=.*)$' || true; } | paste -sd, -)
        [ "$mp" = /sys/fs/cgroup ] || echo "$fstype $mp ${opts:-none}" >>"$S/cgroup-mounts"
done </proc/self/cgroup
[ ${#CG_DIRS[@]} -gt 0 ] || fail "found no cgroup hierarchy mounted under /sys/fs/cgroup"

# ---- 4. boot systemd as PID 1 of the namespaces ----
log "booting systemd in private PID/mount/UTS/cgroup namespaces"
(
        for d in "${CG_DIRS[@]}"; do echo "$BASHPID" >"$d/cgroup.procs"; done
        exec unshare --pid --fork --kill-child --mount --mount-proc --uts --cgroup \
                bash "$HERE/ns-init.sh" "$S" "$S/cgroup-mounts"
) </dev/null >"$S/ns-init.log" 2>&1 &
LAUNCHER=$!

# The namespace's init: found, or the launcher gone.
init_started() {
        NSPID=$(awk '{ print $1 }' "/proc/$LAUNCHER/task/$LAUNCHER/children" 2>/dev/null) || true
        [ -n "$NSPID" ] || gone "$LAUNCHER"
}
# ns-init.sh exec'ed systemd, or exited.
systemd_execed() {
        [ "$(cat "/proc/$NSPID/comm" 2>/dev/null)" = systemd ] || gone "$NSPID"
}
NSPID=
poll_until 10 init_started || true
[ -n "$NSPID" ] || fail "unshare did not start the namespace's init"
PIDNS=$(readlink "/proc/$NSPID/ns/pid")
poll_until 30 systemd_execed || true
gone "$NSPID" && fail "ns-init.sh exited before it started systemd"
[ "$(cat "/proc/$NSPID/comm" 2>/dev/null)" = systemd ] || fail "ns-init.sh did not exec systemd within 30 s"
# --wait blocks until start-up is over (the event itself); it returns at
# once only while systemd's private socket is not there yet.  120 s bounds a
# boot on a loaded CI machine, where 30 s proved too short.
state=
booted() {
        state=$(ns systemctl is-system-running --wait 2>/dev/null) || true
        case "$state" in running | degraded | maintenance | stopping | offline) return 0 ;; esac
        return 1
}
poll_until 120 booted || true
[ "$state" = running ] || fail "the namespace's systemd did not reach 'running' within 120 s (state: '${state:-no answer}')"
log "systemd is running as host pid $NSPID ($PIDNS)"

# The units systemd runs must be the package's, unmodified.
for u in hyperampd.service hyperampd.socket; do
        p=$(ns systemctl show -p FragmentPath --value "$u")
        [ "$p" = "/run/ci-units/$u" ] || fail "$u was loaded from '$p', not the test's unit folder"
        ns cat "$p" | cmp -s - <(dpkg-deb --fsys-tarfile "$HA_DEB" | tar -xO "./lib/systemd/system/$u") ||
                fail "$u in the namespace differs from the one in $(basename "$HA_DEB")"
done

# ---- 4b. what dpkg -i and the maintainer scripts did ----
for p in hyperamp libhyperamp0 libhyperamp-dev; do
        st=$(ns dpkg-query -W -f='${Status} ${Version}' "$p" 2>&1) || true
        [[ "$st" == "install ok installed "* ]] || fail "package $p in the namespace: '$st'"
done
ns id hyperamp >/dev/null 2>&1 || fail "the postinst's systemd-sysusers did not create the hyperamp user"
d=$(ns stat -c '%a %U %G' /run/hyperamp) || fail "the postinst's systemd-tmpfiles did not create /run/hyperamp"
[ "$d" = "750 hyperamp hyperamp" ] || fail "/run/hyperamp is '$d', expected 750 hyperamp hyperamp"
for l in sockets.target.wants/hyperampd.socket multi-user.target.wants/hyperampd.service; do
        t=$(ns readlink "/etc/systemd/system/$l") || fail "deb-systemd-helper did not enable /etc/systemd/system/$l"
        [ "$t" = "/lib/systemd/system/${l#*/}" ] || fail "/etc/systemd/system/$l points to '$t'"
done
n=$(ns journalctl --list-catalog | grep -c ' hyperamp: ') || true
[ "$n" = 8 ] || fail "the catalog database lists $n hyperamp entries after dpkg -i, expected 8 (systemd's trigger runs journalctl --update-catalog)"
for f in protocol zones hyperamp-v1; do
        ns test -f "/usr/share/doc/hyperamp/$f.md" || fail "/usr/share/doc/hyperamp/$f.md, which a man page cites, is not installed"
done
log "dpkg -i: packages installed; user, /run/hyperamp, enabled units, $n catalog entries, docs"

# ---- 4c. a bad config: one failed start, no restart loop, the socket stays ----
CONF=/etc/hyperamp/hyperampd.json
ns cp "$CONF" "$CONF.good"
ns sh -c "printf '{ \"no_such_key\": 1 }\n' >$CONF"
out=$(ns systemctl start hyperampd.socket 2>&1) || fail "systemctl start hyperampd.socket failed: $out"
if out=$(ns systemctl start hyperampd.service 2>&1); then
        fail "systemctl start hyperampd.service succeeded with a bad config"
fi
# Wait for the unit to settle: 'failed' at once when the failure is not
# restarted; a restart loop shows activating/auto-restart, then
# start-limit-hit (RestartSec=2s x StartLimitBurst=5).
show=
settled() {
        show=$(ns systemctl show -p ActiveState -p SubState -p Result -p NRestarts \
                -p ExecMainStatus hyperampd.service | sort | xargs)
        case "$show" in *ActiveState=failed* | *ActiveState=inactive*) return 0 ;; esac
        return 1
}
poll_until 40 settled || true
sock_state=$(ns systemctl is-active hyperampd.socket) || true
log "bad config: $show; hyperampd.socket $sock_state"
[ "$show" = "ActiveState=failed ExecMainStatus=78 NRestarts=0 Result=exit-code SubState=failed" ] ||
        fail "with a bad config: '$show', expected one failed start (exit 78, NRestarts=0, Result=exit-code)"
[ "$sock_state" = active ] || fail "hyperampd.socket is '$sock_state' after the failed start, expected active"
ns journalctl --sync 2>/dev/null || true
# By our own SYSLOG_IDENTIFIER, not -u: journald tells a native entry's unit
# from the sender's cgroup in /proc, and a process that exits right after
# logging may be gone by then (seen once in CI under load).
ns journalctl --no-pager -o cat -t hyperampd | grep -q "Invalid configuration: .*no_such_key" ||
        fail "the journal does not say why the start failed (Invalid configuration ... no_such_key)"
ns mv "$CONF.good" "$CONF"
# It stays up for the checks below (each start counts toward StartLimitBurst).
out=$(ns systemctl start hyperampd.service 2>&1) || fail "after fixing the config, systemctl start failed (without reset-failed): $out"
log "config fixed: hyperampd.service started without reset-failed"

# ---- 5. start ----
log "systemctl start hyperampd.socket hyperampd.service"
out=$(ns systemctl start hyperampd.socket hyperampd.service 2>&1) || fail "systemctl start failed: $out"
for u in hyperampd.socket hyperampd.service; do
        s=$(ns systemctl is-active "$u") || true
        [ "$s" = active ] || fail "$u is '$s' after systemctl start, not active"
done
status=$(ns systemctl show -p StatusText --value hyperampd.service)
[[ "$status" == *serving* ]] || fail "StatusText is '$status', expected it to contain 'serving'"
log "StatusText: $status"

sock=$(ns stat -c '%A %G' "$SOCK") || fail "$SOCK does not exist"
[ "$sock" = "srw-rw---- hyperamp" ] || fail "$SOCK is '$sock', expected mode srw-rw---- and group hyperamp"

ha_uid=$(ns id -u hyperamp) || fail "systemd-sysusers did not create the hyperamp user"
ha_gid=$(ns id -g hyperamp)
mainpid=$(ns systemctl show -p MainPID --value hyperampd.service)
[ -n "$mainpid" ] && [ "$mainpid" != 0 ] || fail "hyperampd.service has no MainPID"
comm=$(ns cat "/proc/$mainpid/comm")
[ "$comm" = hyperampd ] || fail "MainPID $mainpid is '$comm', not hyperampd"
uids=$(ns awk '/^Uid:/ { print $2, $3, $4, $5 }' "/proc/$mainpid/status")
gids=$(ns awk '/^Gid:/ { print $2, $3, $4, $5 }' "/proc/$mainpid/status")
[ "$uids" = "$ha_uid $ha_uid $ha_uid $ha_uid" ] ||
        fail "hyperampd (pid $mainpid) runs with uids '$uids', expected hyperamp ($ha_uid) for all"
[ "$gids" = "$ha_gid $ha_gid $ha_gid $ha_gid" ] ||
        fail "hyperampd (pid $mainpid) runs with gids '$gids', expected hyperamp ($ha_gid) for all"
shm=$(ns stat -c '%a %U' "$SHM") || fail "the queue $SHM does not exist while hyperampd runs"
[ "$shm" = "600 hyperamp" ] || fail "$SHM is '$shm', expected mode 600 and owner hyperamp"
log "hyperampd runs as hyperamp ($ha_uid:$ha_gid), pid $mainpid in the namespace"

# ---- 6. submit, as root and as a member of the hyperamp group ----
want="16 4e 2c 2f 12"
got=$(ns sh -c 'hyperampctl submit -s encrypt hello | od -An -tx1' | xargs) ||
        fail "hyperampctl submit -s encrypt hello failed"
[ "$got" = "$want" ] || fail "hyperampctl submit -s encrypt hello gave '$got', expected '$want'"
log "submit -s encrypt hello -> $got"

out=$(ns systemd-sysusers --inline 'u ha-e2e-peer - "hyperamp e2e test peer" - -' 'm ha-e2e-peer hyperamp' 2>&1) ||
        fail "could not create the test peer user: $out"
peer() {
        ns setpriv --reuid=ha-e2e-peer --regid=ha-e2e-peer --init-groups \
                hyperampctl --socket "$SOCK" "$@"
}
got=$(peer submit -s encrypt hello | od -An -tx1 | xargs) || true
[ "$got" = "$want" ] || fail "a member of the hyperamp group got '$got' from submit, expected '$want'"
if out=$(peer reload 2>&1); then
        fail "a mere member of the hyperamp group was allowed to reload: $out"
fi
[[ "$out" == *E_DENIED* ]] || fail "reload by a hyperamp group member failed, but not with E_DENIED: $out"
log "hyperamp group member: submit allowed, reload denied ($out)"

# The packaged Python client (/usr/lib/python3/dist-packages/hyperamp.py):
# as root, and as a group member, who has no daemon at the per-user path and
# so reaches the system socket.
PY_SUBMIT='import hyperamp; c = hyperamp.Client(); print(c.path, c.submit("encrypt", b"hello").data.hex(" "))'
got=$(ns python3 -c "$PY_SUBMIT" 2>&1) || true
[ "$got" = "$SOCK $want" ] || fail "python3 -c 'import hyperamp ...' as root gave '$got', expected '$SOCK $want'"
got=$(ns setpriv --reuid=ha-e2e-peer --regid=ha-e2e-peer --init-groups python3 -c "$PY_SUBMIT" 2>&1) || true
[ "$got" = "$SOCK $want" ] || fail "the Python client as a hyperamp group member gave '$got', expected '$SOCK $want'"
log "Python client (installed module), root and group member: $got"

# ---- 7. reload (ExecReload= runs hyperampctl reload as user hyperamp) ----
log "systemctl reload hyperampd"
out=$(ns systemctl reload hyperampd.service 2>&1) || fail "systemctl reload hyperampd failed: $out"
s=$(ns systemctl is-active hyperampd.service) || true
[ "$s" = active ] || fail "hyperampd.service is '$s' after reload"

# ---- 8. the journal: native entries with their structured fields ----
# PY_CHECK FIELD=VALUE|FIELD=PREFIX*|FIELD ... < journalctl -o json lines:
# checks the last entry's fields, prints its MESSAGE.
PY_CHECK='
import json, sys
e = json.loads(sys.stdin.read().splitlines()[-1])
bad = []
for want in sys.argv[1:]:
    k, eq, v = want.partition("=")
    got = e.get(k)
    if got is None:
        bad.append(f"no {k} field")
    elif eq and not (got == v or (v.endswith("*") and str(got).startswith(v[:-1]))):
        bad.append(f"{k}={got!r}, expected {v!r}")
if bad:
    sys.exit("; ".join(bad))
print(e["MESSAGE"])
'
# The entries of hyperampd.service with MESSAGE_ID $1, into json.
journal_has() {
        ns journalctl --sync 2>/dev/null || true
        json=$(ns journalctl --no-pager -o json -u hyperampd.service "MESSAGE_ID=$1") || true
        [ -n "$json" ]
}
# check_entry MESSAGE_ID WHAT [FIELD=VALUE|FIELD ...]: wait (bounded) for an
# entry of hyperampd.service with that MESSAGE_ID, then check its fields.
check_entry() {
        local mid=$1 what=$2
        json=
        shift 2
        poll_until 10 journal_has "$mid" || true
        [ -n "$json" ] || fail "no $what entry (MESSAGE_ID=$mid) from hyperampd.service in the journal"
        out=$(python3 -c "$PY_CHECK" "$@" <<<"$json" 2>&1) || fail "the $what entry: $out"$'\n'"$json"
        log "journal $what: $out"
}
# _TRANSPORT=journal: logged natively with sd_journal_send (JOURNAL_STREAM
# matched), not as text on stdout/stderr.
common=(_TRANSPORT=journal SYSLOG_IDENTIFIER=hyperampd _SYSTEMD_UNIT=hyperampd.service "_UID=$ha_uid")
check_entry "$MID_READY" READY "${common[@]}" PRIORITY=6 "MESSAGE=Ready: serving on $SOCK"
check_entry "$MID_RELOADED" RELOADED "${common[@]}" PRIORITY=6 "MESSAGE=Configuration reloaded from /etc/hyperamp/hyperampd.json*"
check_entry "$MID_DENIED" DENIED "${common[@]}" PRIORITY=4 HYPERAMP_CLIENT_PID HYPERAMP_CLIENT_UID

# Each entry names the code that logged it, not the logging wrapper:
# check_code FILE WORD MATCH...: the last entry of hyperampd matching has
# CODE_FILE=FILE, and line CODE_LINE of FILE in the source tree (the
# packages were built from it) has WORD on it.
PY_CODE='
import json, os, sys
src, want_file, word = sys.argv[1:]
e = json.loads(sys.stdin.read())
f, line, func = e.get("CODE_FILE"), e.get("CODE_LINE"), e.get("CODE_FUNC")
if f != want_file:
    sys.exit(f"CODE_FILE={f!r} CODE_LINE={line!r} CODE_FUNC={func!r}, expected CODE_FILE={want_file!r}")
text = open(os.path.join(src, f)).read().splitlines()[int(line) - 1]
if word not in text or func in (None, "log_journal", "log_va"):
    sys.exit(f"{f}:{line} ({func}) is {text.strip()!r}, not the call with {word}")
print(f"CODE_FILE={f} CODE_LINE={line} CODE_FUNC={func}")
'
check_code() {
        local json file=$1 word=$2
        shift 2
        json=$(ns journalctl --no-pager -o json SYSLOG_IDENTIFIER=hyperampd "$@" | tail -n1)
        [ -n "$json" ] || fail "no entry of hyperampd.service matching $*"
        out=$(python3 -c "$PY_CODE" "$SRC" "$file" "$word" <<<"$json" 2>&1) || fail "the entry $*: $out"
        log "journal $*: $out"
}
check_code src/daemon/daemon.c HA_MID_READY "MESSAGE_ID=$MID_READY"
check_code src/daemon/control.c HA_MID_DENIED "MESSAGE_ID=$MID_DENIED"
check_code src/daemon/main.c 'Invalid configuration' PRIORITY=3

# journalctl -x adds the catalog's explanation (installed by the package).
out=$(ns journalctl --no-pager -x -u hyperampd.service "MESSAGE_ID=$MID_READY" 2>&1) || true
[[ "$out" == *"Subject: hyperampd is ready"* && "$out" == *"Documentation: man:hyperampd(8)"* ]] ||
        fail "journalctl -x shows no catalog text for the READY entry:"$'\n'"$out"
log "journalctl -x: $(grep -m1 'Subject:' <<<"$out")"

# ---- 8b. SIGKILL under shared-memory load: systemd restarts hyperampd
# (Restart=on-failure) and the zone client hands its lease to the new one;
# bench verifies every answer ----
# A run bounded by time, not by count: with -n a fast machine finished the
# whole bench before the kill landed, and nothing crossed the restart.
D=12
log "SIGKILL of hyperampd during hyperampctl bench --transport shm --duration $D"
ns sh -c "hyperampctl --json --timeout 60 bench --transport shm --threads 2 -c 32 --mix \
        --size 4096 --duration $D >/tmp/bench.json 2>/tmp/bench.err" &
BENCH=$!
done_shm=0
shm_going() {
        done_shm=$(ns hyperampctl --json stats | python3 -c '
import json, sys
print(sum(s["completed"] for s in json.load(sys.stdin)["sources"] if s["kind"] == "shm"))') || true
        [ "${done_shm:-0}" -ge 1000 ]
}
poll_until 10 shm_going || true
[ "${done_shm:-0}" -ge 1000 ] || fail "bench --transport shm did not get going (${done_shm:-0} answered)"
killed=$(ns systemctl show -p MainPID --value hyperampd.service)
kill -0 "$BENCH" 2>/dev/null || fail "bench --duration $D ended before the SIGKILL; nothing would cross the restart"
ns systemctl kill --signal=SIGKILL hyperampd.service || fail "systemctl kill --signal=SIGKILL failed"
wait "$BENCH" || fail "bench across the SIGKILL failed: $(ns cat /tmp/bench.json /tmp/bench.err)"
res=$(ns cat /tmp/bench.json | python3 -c '
import json, sys
r = json.load(sys.stdin)
print(r["requests"], r["failures"])')
read -r answered failures <<<"$res"
[ "$failures" = 0 ] && [ "$answered" -gt "$done_shm" ] ||
        fail "bench across the SIGKILL: requests and failures '$res', expected more than $done_shm and 0"
restarts=$(ns systemctl show -p NRestarts --value hyperampd.service)
[ "$restarts" = 1 ] || fail "NRestarts is '$restarts' after the SIGKILL, expected 1"
mainpid=$(ns systemctl show -p MainPID --value hyperampd.service)
[ "$mainpid" != "$killed" ] && [ "$mainpid" != 0 ] || fail "no new hyperampd after the SIGKILL"
ns journalctl --sync 2>/dev/null || true
resumed=$(ns journalctl --no-pager -o cat -u hyperampd.service "_PID=$mainpid" | grep -c 'resumed its lease') || true
[ "$resumed" = 1 ] || fail "the new hyperampd logged $resumed lease resumptions, expected 1"
log "killed pid $killed after $done_shm answers; systemd restarted it as $mainpid; $answered requests verified, 0 failures; $(ns journalctl --no-pager -o cat -u hyperampd.service "_PID=$mainpid" | grep 'resumed its lease')"

# ---- 9. stop ----
log "systemctl stop hyperampd"
out=$(ns systemctl stop hyperampd.service 2>&1) || fail "systemctl stop hyperampd failed: $out"
s=$(ns systemctl is-active hyperampd.service) || true
[ "$s" = inactive ] || fail "hyperampd.service is '$s' after systemctl stop, expected inactive"
show=$(ns systemctl show -p Result -p ExecMainCode -p ExecMainStatus hyperampd.service | sort | xargs)
[ "$show" = "ExecMainCode=1 ExecMainStatus=0 Result=success" ] ||
        fail "after stop: '$show', expected a clean exit (ExecMainCode=1 ExecMainStatus=0 Result=success)"
check_entry "$MID_STOPPED" STOPPED "${common[@]}" PRIORITY=6
if ns test -e "$SHM"; then
        fail "the queue $SHM is still there after hyperampd stopped (shm_persist is false)"
fi
log "stopped cleanly: $show; $SHM removed"

# ---- 10. socket activation: the socket unit still listens; a client starts
# the service again, and its request is served ----
log "hyperampctl submit with only hyperampd.socket active (socket activation)"
got=$(ns sh -c 'hyperampctl submit -s encrypt hello | od -An -tx1' | xargs) || true
[ "$got" = "$want" ] || fail "submit to the idle socket (activation) gave '$got', expected '$want'"
s=$(ns systemctl is-active hyperampd.service) || true
[ "$s" = active ] || fail "hyperampd.service is '$s' after a client connected to its socket, expected active"
newpid=$(ns systemctl show -p MainPID --value hyperampd.service)
[ "$newpid" != "$mainpid" ] && [ "$newpid" != 0 ] || fail "no new hyperampd after activation (MainPID $newpid)"
out=$(ns systemctl stop hyperampd.service 2>&1) || fail "the second systemctl stop hyperampd failed: $out"
show=$(ns systemctl show -p Result -p ExecMainCode -p ExecMainStatus hyperampd.service | sort | xargs)
[ "$show" = "ExecMainCode=1 ExecMainStatus=0 Result=success" ] ||
        fail "after the second stop: '$show', expected a clean exit"
check_entry "$MID_STOPPED" STOPPED "${common[@]}" "_PID=$newpid"

# ---- 11. the optional metrics socket: installed, not enabled; moved to a
# Unix path by a drop-in (the namespaces share the host's network), it
# starts the service on a scrape, which the daemon answers on it ----
log "hyperampd-metrics.socket: a scrape starts the service and is answered"
ns test -e /lib/systemd/system/hyperampd-metrics.socket || fail "the package did not install hyperampd-metrics.socket"
! ns test -e /etc/systemd/system/sockets.target.wants/hyperampd-metrics.socket ||
        fail "the package enabled hyperampd-metrics.socket (it must be opt-in)"
# (this systemd reads units from /run/ci-units only, drop-ins too)
ns mkdir -p /run/ci-units/hyperampd-metrics.socket.d
ns sh -c 'printf "[Socket]\nListenStream=\nListenStream=/run/hyperamp/metrics.sock\nSocketMode=0600\n" \
        >/run/ci-units/hyperampd-metrics.socket.d/unix.conf'
ns systemctl daemon-reload
out=$(ns systemctl start hyperampd-metrics.socket 2>&1) || fail "systemctl start hyperampd-metrics.socket failed: $out"
scrape=$(ns python3 -c '
import socket
s = socket.socket(socket.AF_UNIX)
s.settimeout(30)
s.connect("/run/hyperamp/metrics.sock")
s.sendall(b"GET /metrics HTTP/1.0\r\n\r\n")
b = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    b += c
print(b.decode())') || fail "scraping /run/hyperamp/metrics.sock failed"
# grep -q stops at the first match: from a here-string, since under
# pipefail an echo cut off by it (the page is larger than a pipe) fails.
grep -q "^HTTP/1.[01] 200" <<<"$scrape" || fail "the scrape was not answered 200: $(echo "$scrape" | head -3)"
grep -q "^hyperamp_metrics_requests_total 1" <<<"$scrape" ||
        fail "the scrape lacks hyperamp_metrics_requests_total 1: $(echo "$scrape" | grep metrics_requests)"
s=$(ns systemctl is-active hyperampd.service) || true
[ "$s" = active ] || fail "hyperampd.service is '$s' after a scrape of its metrics socket, expected active"
out=$(ns systemctl stop hyperampd.service hyperampd-metrics.socket 2>&1) || fail "systemctl stop (metrics) failed: $out"
log "the metrics socket started hyperampd, which answered the scrape on it"

out=$(ns systemctl stop hyperampd.socket 2>&1) || fail "systemctl stop hyperampd.socket failed: $out"
for u in hyperampd.socket hyperampd.service; do
        s=$(ns systemctl is-active "$u") || true
        [ "$s" = inactive ] || fail "$u is '$s' after systemctl stop, expected inactive"
done
log "activated by a connection as pid $newpid, served, stopped cleanly again"

ns journalctl --no-pager -o short-precise >"$S/journal.txt" 2>&1 || true
RESULT=0
log "all checks passed; tearing down"
