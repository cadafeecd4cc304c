#!/usr/bin/env bash
# ci/stack.sh — install and run the local Docker stack that mzbuild's tests use.
#
# On a Debian 12 (bookworm) machine, as root, without systemd and without any
# network except the Debian package mirrors, this script idempotently:
#   * installs docker.io, docker-registry, apache2-utils (htpasswd),
#     binutils (strip), busybox-static (RUN steps in test images) and openssl
#     (token signing keys in tests) from bookworm, then docker-buildx (0.13) together with
#     docker-cli and docker.io (engine 26.1) from a *pinned* trixie apt source
#     (only packages asked for with `-t trixie` come from trixie; libc6 etc.
#     stay at bookworm's versions), and cosign (2.5, the interoperability
#     tests of image signatures) from the same pinned trixie source;
#   * starts dockerd in the background (log: /var/log/mzbuild-dockerd.log);
#   * starts two Distribution registries bound to 127.0.0.1 only:
#       - plain: http://127.0.0.1:${MZ_REGISTRY_PORT:-5000}       (no auth)
#       - auth:  http://127.0.0.1:${MZ_AUTH_REGISTRY_PORT:-5001}  (htpasswd,
#         realm "mzbuild", user ${MZ_AUTH_REGISTRY_USER:-mzbuild},
#         password ${MZ_AUTH_REGISTRY_PASSWORD:-mzbuild-test-password})
#     with their configs, storage, logs and pidfiles under
#     ${MZ_STACK_DIR:-/var/lib/mzbuild-stack}.
#
# Usage:
#   ci/stack.sh [up]              install what is missing, start what is not running
#   ci/stack.sh down [--all]      stop the registries (and dockerd with --all)
#   ci/stack.sh reset-registries  stop the registries, wipe their storage, start them
#   ci/stack.sh status            print what is running
#
# A second `up` on a machine where everything runs takes about a second.
# Registry deletes are enabled (storage.delete.enabled) so tests can clean up.

set -euo pipefail

STATE_DIR="${MZ_STACK_DIR:-/var/lib/mzbuild-stack}"
REGISTRY_PORT="${MZ_REGISTRY_PORT:-5000}"
AUTH_REGISTRY_PORT="${MZ_AUTH_REGISTRY_PORT:-5001}"
AUTH_USER="${MZ_AUTH_REGISTRY_USER:-mzbuild}"
AUTH_PASSWORD="${MZ_AUTH_REGISTRY_PASSWORD:-mzbuild-test-password}"
DOCKERD_LOG="/var/log/mzbuild-dockerd.log"
DOCKERD_PIDFILE="/var/run/docker.pid"
TRIXIE_SOURCE="/etc/apt/sources.list.d/trixie.sources"
TRIXIE_PIN="/etc/apt/preferences.d/trixie"

export DEBIAN_FRONTEND=noninteractive

log() { echo "stack: $*" >&2; }
die() { echo "stack: error: $*" >&2; exit 1; }

usage() {
    sed -n '2,/^$/s/^# \{0,1\}//p' "$0" >&2
}

# ---------------------------------------------------------------------------
# Locking: two concurrent `up`s must not race. Every background child we start
# closes fd 9 so that it does not hold the lock after this script exits.

lock() {
    mkdir -p "$STATE_DIR"
    exec 9>"$STATE_DIR/.lock"
    if ! flock -w 300 9; then
        die "could not lock $STATE_DIR/.lock within 300 s"
    fi
}

# ---------------------------------------------------------------------------
# Packages

apt_install() {
    # Never let a package's maintainer scripts start services (docker,
    # docker-registry) behind our back: without an existing policy-rc.d, add a
    # temporary one that denies every start.
    local added_policy=0
    if [[ ! -e /usr/sbin/policy-rc.d ]]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        added_policy=1
    fi
    local rc=0
    apt-get install -y --no-install-recommends \
        -o Dpkg::Options::=--force-confold -o Dpkg::Options::=--force-confdef \
        "$@" || rc=$?
    if [[ $added_policy == 1 ]]; then
        rm -f /usr/sbin/policy-rc.d
    fi
    return "$rc"
}

ensure_trixie_source() {
    # The pin comes first: an unpinned trixie source would make every later
    # `apt-get install` upgrade libc6, dpkg, gcc runtime etc. to trixie.
    local pin='Package: *
Pin: release n=trixie
Pin-Priority: 100'
    if [[ ! -f $TRIXIE_PIN ]] || [[ "$(cat "$TRIXIE_PIN")" != "$pin" ]]; then
        printf '%s\n' "$pin" >"$TRIXIE_PIN"
    fi
    if [[ ! -f $TRIXIE_SOURCE ]]; then
        cat >"$TRIXIE_SOURCE" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    fi
}

# Prints the command line of process PID (empty if it does not exist).
proc_cmdline() { tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline" || true; }

have_buildx() { docker buildx version >/dev/null 2>&1; }

dockerd_pid() {
    # Prints the pid of the running dockerd (from its pidfile), if any.
    local pid
    [[ -f $DOCKERD_PIDFILE ]] || return 1
    pid="$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(proc_cmdline "$pid")" == *dockerd* ]] || return 1
    echo "$pid"
}

install_packages() {
    local -a need=()
    command -v dockerd >/dev/null 2>&1 || need+=(docker.io)
    command -v docker-registry >/dev/null 2>&1 || need+=(docker-registry)
    command -v htpasswd >/dev/null 2>&1 || need+=(apache2-utils)
    command -v strip >/dev/null 2>&1 || need+=(binutils)
    # A static busybox: lets tests give `FROM scratch` images RUN steps.
    [ -x /bin/busybox ] || need+=(busybox-static)
    command -v curl >/dev/null 2>&1 || need+=(curl)
    # The token-auth registry of the tests makes its signing key and
    # certificate with the openssl CLI.
    command -v openssl >/dev/null 2>&1 || need+=(openssl)
    command -v flock >/dev/null 2>&1 || need+=(util-linux)
    # The completion scripts are tested in real shells, the man pages with groff.
    command -v fish >/dev/null 2>&1 || need+=(fish)
    command -v zsh >/dev/null 2>&1 || need+=(zsh)
    command -v groff >/dev/null 2>&1 || need+=(groff-base)
    # The terminal test runs a build in a tmux pane and reads its screen.
    command -v tmux >/dev/null 2>&1 || need+=(tmux)
    # buildx comes from trixie together with trixie's engine and CLI (26.1.x):
    # bookworm's docker.io 20.10 has a far older built-in BuildKit.
    local need_buildx=0
    if ! command -v docker >/dev/null 2>&1 || ! have_buildx ||
        [[ "$(dpkg-query -W -f='${Status}' docker-cli 2>/dev/null || true)" != "install ok installed" ]]; then
        need_buildx=1
    fi
    # cosign (Sigstore's CLI): the tests check that it accepts the
    # signatures and attestations mzbuild writes, and that mzbuild accepts
    # its signatures. Bookworm has none; trixie's 2.5, pinned like buildx.
    local need_cosign=0
    command -v cosign >/dev/null 2>&1 || need_cosign=1
    if [[ ${#need[@]} == 0 && $need_buildx == 0 && $need_cosign == 0 ]]; then
        return 0
    fi

    local t0=$SECONDS
    log "installing: ${need[*]:-} $([[ $need_buildx == 1 ]] && echo 'docker-buildx docker-cli docker.io (trixie)') $([[ $need_cosign == 1 ]] && echo 'cosign (trixie)')"
    if [[ $need_buildx == 1 || $need_cosign == 1 ]]; then
        ensure_trixie_source
    fi
    apt-get update -qq
    if [[ ${#need[@]} -gt 0 ]]; then
        apt_install "${need[@]}"
    fi
    if [[ $need_buildx == 1 ]]; then
        local was_running=0
        dockerd_pid >/dev/null && was_running=1
        apt_install -t trixie docker-buildx docker-cli docker.io
        have_buildx || die "docker-buildx was installed but \`docker buildx version\` fails"
        if [[ $was_running == 1 ]]; then
            log "restarting dockerd (docker-buildx upgraded the engine)"
            stop_dockerd
        fi
    fi
    if [[ $need_cosign == 1 ]]; then
        apt_install -t trixie cosign
        cosign version >/dev/null 2>&1 || die "cosign was installed but \`cosign version\` fails"
    fi
    log "installed packages in $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# dockerd

start_dockerd() {
    if docker info >/dev/null 2>&1; then
        return 0
    fi
    if ! dockerd_pid >/dev/null; then
        log "starting dockerd (log: $DOCKERD_LOG)"
        # setsid + nohup: the daemon survives this script and its session.
        setsid nohup dockerd >>"$DOCKERD_LOG" 2>&1 </dev/null 9>&- &
    fi
    local i
    for ((i = 0; i < 60; i++)); do
        if docker info >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    tail -n 30 "$DOCKERD_LOG" >&2 || true
    die "dockerd did not answer \`docker info\` within 60 s (see $DOCKERD_LOG)"
}

stop_dockerd() {
    local pid i
    pid="$(dockerd_pid)" || { log "dockerd: not running"; return 0; }
    log "stopping dockerd (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
        [[ -d /proc/$pid ]] || break
        sleep 0.5
    done
    if [[ -d /proc/$pid ]]; then
        log "dockerd did not stop within 30 s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$DOCKERD_PIDFILE"
}

# ---------------------------------------------------------------------------
# Registries. Each registry NAME lives in $STATE_DIR/registry-NAME/:
#   config.yml, data/ (storage), registry.log, and $STATE_DIR/registry-NAME.pid

reg_dir() { echo "$STATE_DIR/registry-$1"; }
reg_pidfile() { echo "$STATE_DIR/registry-$1.pid"; }
reg_port() { if [[ $1 == auth ]]; then echo "$AUTH_REGISTRY_PORT"; else echo "$REGISTRY_PORT"; fi; }
reg_expect() { if [[ $1 == auth ]]; then echo 401; else echo 200; fi; }

reg_pid() {
    # Prints the pid of registry NAME if its pidfile names a live
    # docker-registry process serving our config.
    local name=$1 pidfile pid
    pidfile="$(reg_pidfile "$name")"
    [[ -f $pidfile ]] || return 1
    pid="$(cat "$pidfile" 2>/dev/null || true)"
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ "$(proc_cmdline "$pid")" == *"docker-registry serve $(reg_dir "$name")/config.yml"* ]] || return 1
    echo "$pid"
}

reg_http_code() {
    curl -sS -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$(reg_port "$1")/v2/" 2>/dev/null || true
}

reg_healthy() {
    reg_pid "$1" >/dev/null && [[ "$(reg_http_code "$1")" == "$(reg_expect "$1")" ]]
}

# Writes FILE from stdin only when its content changes; returns 0 if changed.
write_if_changed() {
    local file=$1 tmp
    tmp="$(mktemp "$file.XXXXXX")"
    cat >"$tmp"
    if [[ -f $file ]] && cmp -s "$tmp" "$file"; then
        rm -f "$tmp"
        return 1
    fi
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
    return 0
}

# Prepares config (and htpasswd) for registry NAME; returns 0 if anything
# changed (so that a running instance must be restarted).
reg_configure() {
    local name=$1 dir port changed=1
    dir="$(reg_dir "$name")"
    port="$(reg_port "$name")"
    mkdir -p "$dir/data"
    if [[ $name == auth ]]; then
        local htpasswd="$dir/htpasswd"
        if [[ ! -s $htpasswd ]] ||
            ! printf '%s' "$AUTH_PASSWORD" | htpasswd -v -i "$htpasswd" "$AUTH_USER" >/dev/null 2>&1; then
            (umask 077 && printf '%s\n' "$AUTH_PASSWORD" | htpasswd -B -i -n "$AUTH_USER" >"$htpasswd.tmp")
            mv -f "$htpasswd.tmp" "$htpasswd"
            changed=0
        fi
    fi
    {
        cat <<EOF
# Generated by ci/stack.sh — do not edit (rewritten on every \`up\`).
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$port
  secret: mzbuild-stack-$name-local-only
  headers:
    X-Content-Type-Options: [nosniff]
EOF
        if [[ $name == auth ]]; then
            cat <<EOF
auth:
  htpasswd:
    realm: mzbuild
    path: $dir/htpasswd
EOF
        fi
    } | write_if_changed "$dir/config.yml" && changed=0
    return "$changed"
}

# Stops the named registries (all at once: each takes ~2 s to drain on TERM).
stop_registries() {
    local name pid i
    local -a pids=() names=()
    for name in "$@"; do
        if pid="$(reg_pid "$name")"; then
            kill -TERM "$pid" 2>/dev/null || true
            pids+=("$pid")
            names+=("$name")
        fi
    done
    for ((i = 0; i < 40; i++)); do
        local alive=0
        for pid in "${pids[@]}"; do
            [[ -d /proc/$pid ]] && alive=1
        done
        [[ $alive == 0 ]] && break
        sleep 0.25
    done
    for ((i = 0; i < ${#pids[@]}; i++)); do
        if [[ -d /proc/${pids[i]} ]]; then
            log "${names[i]} registry did not stop within 10 s; killing it"
            kill -KILL "${pids[i]}" 2>/dev/null || true
        fi
        log "stopped ${names[i]} registry (pid ${pids[i]})"
    done
    for name in "$@"; do
        rm -f "$(reg_pidfile "$name")"
    done
}

start_registry() {
    local name=$1 dir port pidfile pid code i restart=0
    dir="$(reg_dir "$name")"
    port="$(reg_port "$name")"
    pidfile="$(reg_pidfile "$name")"
    reg_configure "$name" && restart=1
    if reg_pid "$name" >/dev/null; then
        if [[ $restart == 1 ]]; then
            log "$name registry configuration changed; restarting it"
            stop_registries "$name"
        elif reg_healthy "$name"; then
            return 0
        else
            # Alive but not answering: give a just-started instance a chance
            # below instead of starting a second one.
            :
        fi
    fi
    if ! reg_pid "$name" >/dev/null; then
        rm -f "$pidfile"
        code="$(reg_http_code "$name")"
        if [[ $code != 000 && -n $code ]]; then
            die "127.0.0.1:$port already answers HTTP $code, but not from our $name registry (pidfile $pidfile); stop it or set $( [[ $name == auth ]] && echo MZ_AUTH_REGISTRY_PORT || echo MZ_REGISTRY_PORT)"
        fi
        # Not a process-group leader here, so setsid execs in place and $! is
        # the registry's own pid.
        setsid nohup docker-registry serve "$dir/config.yml" \
            >>"$dir/registry.log" 2>&1 </dev/null 9>&- &
        pid=$!
        echo "$pid" >"$pidfile"
    fi
    for ((i = 0; i < 120; i++)); do
        if reg_healthy "$name"; then
            return 0
        fi
        if ! reg_pid "$name" >/dev/null; then
            tail -n 20 "$dir/registry.log" >&2 || true
            rm -f "$pidfile"
            die "$name registry exited (see $dir/registry.log)"
        fi
        sleep 0.25
    done
    tail -n 20 "$dir/registry.log" >&2 || true
    die "$name registry at 127.0.0.1:$port did not answer /v2/ with HTTP $(reg_expect "$name") within 30 s (got $(reg_http_code "$name"))"
}

reset_registry_storage() {
    local name=$1 dir
    dir="$(reg_dir "$name")"
    [[ -n $STATE_DIR && $dir == "$STATE_DIR"/registry-* ]] || die "refusing to wipe $dir"
    rm -rf "$dir/data"
    mkdir -p "$dir/data"
    log "wiped $name registry storage ($dir/data)"
}

# ---------------------------------------------------------------------------
# Reporting

summary() {
    local client server buildx regv
    client="$(docker version --format '{{.Client.Version}}' 2>/dev/null || echo '?')"
    server="$(docker version --format '{{.Server.Version}}' 2>/dev/null || echo 'not running')"
    buildx="$(docker buildx version 2>/dev/null || echo 'missing')"
    regv="$(docker-registry --version 2>/dev/null || echo 'missing')"
    log "docker: client $client ($(command -v docker)), engine $server (pid $(dockerd_pid || echo -), log $DOCKERD_LOG)"
    log "buildx: $buildx"
    log "cosign: $(dpkg-query -W -f='${Version}' cosign 2>/dev/null || echo missing)"
    log "registry: http://127.0.0.1:$REGISTRY_PORT (no auth, pid $(reg_pid plain || echo -), $regv)"
    log "auth registry: http://127.0.0.1:$AUTH_REGISTRY_PORT (htpasswd realm mzbuild, user $AUTH_USER, pid $(reg_pid auth || echo -))"
}

status() {
    local rc=0 name
    if docker info >/dev/null 2>&1; then
        log "dockerd: running (pid $(dockerd_pid || echo '?'), engine $(docker version --format '{{.Server.Version}}' 2>/dev/null))"
    else
        log "dockerd: not answering"
        rc=1
    fi
    if command -v docker >/dev/null 2>&1 && have_buildx; then
        log "buildx: $(docker buildx version)"
    else
        log "buildx: missing"
        rc=1
    fi
    for name in plain auth; do
        if reg_healthy "$name"; then
            log "$name registry: running at http://127.0.0.1:$(reg_port "$name") (pid $(reg_pid "$name"), storage $(reg_dir "$name")/data)"
        else
            log "$name registry: not running (port $(reg_port "$name"), /v2/ answers $(reg_http_code "$name"))"
            rc=1
        fi
    done
    return "$rc"
}

# ---------------------------------------------------------------------------

cmd_up() {
    [[ $(id -u) == 0 ]] || die "must run as root"
    lock
    install_packages
    start_dockerd
    start_registry plain
    start_registry auth
    summary
}

cmd_down() {
    local all=0
    for arg in "$@"; do
        case $arg in
            --all) all=1 ;;
            *) die "unknown argument to down: $arg" ;;
        esac
    done
    lock
    stop_registries plain auth
    if [[ $all == 1 ]]; then
        stop_dockerd
    fi
}

cmd_reset_registries() {
    lock
    stop_registries plain auth
    reset_registry_storage plain
    reset_registry_storage auth
    start_registry plain
    start_registry auth
    summary
}

main() {
    local cmd=${1:-up}
    [[ $# -gt 0 ]] && shift
    case $cmd in
        up) [[ $# == 0 ]] || die "up takes no arguments"; cmd_up ;;
        down) cmd_down "$@" ;;
        reset-registries) cmd_reset_registries ;;
        status) status ;;
        -h | --help | help) usage ;;
        *) usage; die "unknown subcommand: $cmd" ;;
    esac
}

main "$@"
