# SPDX-License-Identifier: MIT
# Shell helpers shared by the scripts in this folder (sourced, not run).

# ensure_packages PKG...: install those Debian packages that are missing
# (apt-get through sudo when not root).
ensure_packages() {
        local missing=() p sudo=""
        for p in "$@"; do
                dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
                        missing+=("$p")
        done
        [ ${#missing[@]} -eq 0 ] && return 0
        echo "${0##*/}: installing ${missing[*]}" >&2
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
}

# build_tree BUILD_DIR: ninja, with the errors shown and the full log kept.
build_tree() {
        if ! ninja -C "$1" > "$1/ninja.log" 2>&1; then
                grep -E -B2 -A6 "error|FAILED" "$1/ninja.log" | tail -n 60 >&2
                echo "${0##*/}: the build failed; the full log is $1/ninja.log" >&2
                return 1
        fi
}
