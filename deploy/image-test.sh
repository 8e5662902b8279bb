#!/usr/bin/env bash
# `make image-test`: build the image and run the stack of compose.yaml for real (README,
# "Run with Docker"). On a machine without Docker or a reachable registry:
#   1. apt-get install docker.io debootstrap (when missing);
#   2. dockerd --storage-driver=vfs --iptables=false --bridge=none, in the background, on a
#      socket and data root of its own (when no daemon answers);
#   3. a Debian bookworm minbase with python3, python3-venv and pip, `docker import`ed: the BASE;
#   4. deploy/image_test.py: build (host network), start the stack, /healthz of each process,
#      a purchase on the fake Stripe (signed webhooks), the message on the stream;
#   5. remove what it made: containers, volumes, images, the daemon and its data.
# KEEP_BASE=1 keeps the base image and the daemon for the next run.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
work="${IMAGE_TEST_DIR:-/var/tmp/entitled-image-test}"
base_image="entitled-test-base:bookworm"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
say() { echo "[image-test $(date +%H:%M:%S)] $*"; }
sudo_() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
mkdir -p "$work"

if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
    say "installing docker.io and debootstrap"
    sudo_ apt-get -o DPkg::Lock::Timeout=600 update -qq
    sudo_ env DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
        --no-install-recommends docker.io debootstrap >/dev/null
fi

our_daemon=""
if [ -z "${DOCKER_HOST:-}" ] && ! docker info >/dev/null 2>&1; then
    export DOCKER_HOST="unix://$work/docker.sock"
    if ! docker info >/dev/null 2>&1; then
        say "starting dockerd (vfs, no iptables, no bridge)"
        sudo_ dockerd --storage-driver=vfs --iptables=false --bridge=none \
            --data-root "$work/docker-data" --exec-root "$work/docker-exec" \
            --pidfile "$work/dockerd.pid" -H "$DOCKER_HOST" >"$work/dockerd.log" 2>&1 &
        our_daemon=$!
        for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        docker info >/dev/null 2>&1 || { tail -20 "$work/dockerd.log"; exit 1; }
    fi
fi

cleanup() {
    local rc=$?
    if [ "${KEEP_BASE:-}" != 1 ]; then
        docker rmi -f "$base_image" >/dev/null 2>&1 || true
        if [ -n "$our_daemon" ]; then
            say "stopping dockerd"
            sudo_ kill "$(cat "$work/dockerd.pid")" 2>/dev/null || true
            for _ in $(seq 1 30); do [ -e "$work/dockerd.pid" ] || break; sleep 1; done
            # dockerd leaves its default network namespace mounted under the exec root.
            while grep -q " $work/" /proc/mounts; do
                sudo_ umount "$(grep " $work/" /proc/mounts | tail -n1 | cut -d' ' -f2)" || break
            done
            sudo_ rm -rf "$work" || say "could not remove all of $work"
        fi
    fi
    say "done in $(( $(date +%s) - started ))s (exit $rc)"
}
trap cleanup EXIT

if ! docker image inspect "$base_image" >/dev/null 2>&1; then
    say "debootstrap bookworm (minbase + python3, python3-venv, pip)"
    sudo_ rm -rf "$work/rootfs"
    sudo_ debootstrap --variant=minbase --include=python3,python3-venv,python3-pip,passwd,ca-certificates \
        bookworm "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 \
        || { tail -20 "$work/debootstrap.log"; exit 1; }
    # The host's own extra CAs (a TLS-intercepting egress proxy): pip in the build trusts them too.
    if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
        sudo_ cp /usr/local/share/ca-certificates/*.crt "$work/rootfs/usr/local/share/ca-certificates/"
        sudo_ chroot "$work/rootfs" update-ca-certificates >/dev/null
    fi
    ca=/etc/ssl/certs/ca-certificates.crt
    sudo_ tar -C "$work/rootfs" -c . | docker import --change "ENV PIP_CERT=$ca" \
        --change "ENV SSL_CERT_FILE=$ca" --change "ENV REQUESTS_CA_BUNDLE=$ca" - "$base_image" >/dev/null
    sudo_ rm -rf "$work/rootfs"
    say "imported $base_image ($(( $(date +%s) - started ))s so far)"
fi

make install >/dev/null
.venv/bin/python deploy/image_test.py --base "$base_image" "$@"
