#!/usr/bin/env bash
# Emulated arm64 proof of the device install (issue 7): an arm64 Debian chroot (debootstrap +
# qemu-user-static) where devices/install-device.sh installs the project's wheel, then the runtime
# inspects and runs the demo bundle on a few synthetic frames, and publishes them to a mosquitto
# on the host's loopback (the chroot shares the host's network).
#
#   devices/arm64/proof.sh [--bundle DIR] [--frames N] [--extras LIST] [--no-mqtt] [--rebuild] [--keep]
#
#   --bundle   bundle to run (default: build/demo_bundle; `make arm64-proof` builds it when missing)
#   --frames   frames to run (default: 3; emulated numerics are ~200x slower than native)
#   --extras   extras for install-device.sh (default: tflite,zstd,signing)
#   --no-mqtt  skip the publish to a host mosquitto
#   --rebuild  rebuild the cached chroot tarball
#   --keep     keep the work directory (the chroot) for a look afterwards
#
# Prints "SKIPPED: <reason>" and exits 0 when the chroot cannot be made here (not root, no
# debootstrap/qemu and no way to install them, binfmt_misc cannot be enabled). Any failure from
# the chroot build on is a real failure (non-zero exit). Traps: docs/ARCHITECTURE.md,
# "Traps measured here" (arm64 without a board).
#
# Nothing is hard-coded about mirrors or indexes: the Debian mirror comes from the host's apt
# sources (or EDGE_ARM64_MIRROR, else debootstrap's own default), and pip inside the chroot gets
# the host's pip configuration, PIP_* variables, the local paths they name and the CA bundle.
# Cache: ${EDGE_ARM64_CACHE:-~/.cache/edge-runtime/arm64} (chroot tarball, pip downloads).
set -euo pipefail

root_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
suite=bookworm
packages=python3,python3-venv,ca-certificates
bundle="$root_dir/build/demo_bundle"
frames=3
extras="${EDGE_ARM64_EXTRAS:-tflite,zstd,signing}"
mqtt=1
rebuild=0
keep=0
cache="${EDGE_ARM64_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edge-runtime/arm64}"
host_python="${PYTHON:-}"

usage() { sed -n '2,17s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) bundle="$2"; shift 2 ;;
        --frames) frames="$2"; shift 2 ;;
        --extras) extras="$2"; shift 2 ;;
        --no-mqtt) mqtt=0; shift ;;
        --rebuild) rebuild=1; shift ;;
        --keep) keep=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "proof.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
done

skip() { echo "SKIPPED: $*"; exit 0; }
fail() { echo "FAILED: $*" >&2; exit 1; }
log() { echo "arm64-proof: $*"; }

# --- phase timing ------------------------------------------------------------------------------
declare -a phase_report=()
phase_name=""
phase_t0=0
now() { date +%s.%N; }
phase() {
    phase_end
    phase_name="$1"
    phase_t0="$(now)"
    log "== $phase_name"
}
phase_end() {
    if [ -n "$phase_name" ]; then
        local secs
        secs="$(awk -v a="$phase_t0" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }')"
        phase_report+=("$(printf '%-36s %7ss' "$phase_name" "$secs")")
        log "   $phase_name: ${secs}s"
        phase_name=""
    fi
}
print_phases() {
    phase_end
    if [ "${#phase_report[@]}" -gt 0 ]; then
        log "phase times:"
        printf '  %s\n' "${phase_report[@]}"
    fi
}

# --- prerequisites (failures here skip) --------------------------------------------------------
phase prerequisites
[ "$(id -u)" = 0 ] || skip "not root (debootstrap, chroot and mounts need root)"
[ "$(uname -s)" = Linux ] || skip "not Linux"
[ -f "$bundle/manifest.json" ] || { echo "proof.sh: no bundle at $bundle (run make demo)" >&2; exit 2; }
bundle="$(cd "$bundle" && pwd)"
if [ -z "$host_python" ]; then
    if [ -x "$root_dir/.venv/bin/python" ]; then host_python="$root_dir/.venv/bin/python"; else host_python=python3; fi
fi
command -v "$host_python" >/dev/null 2>&1 || skip "no host Python ($host_python) to build the wheel"

host_arch="$(uname -m)"
native=0
[ "$host_arch" = aarch64 ] && native=1

need=()
command -v debootstrap >/dev/null 2>&1 || need+=(debootstrap)
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] || need+=(debian-archive-keyring)
if [ "$native" = 0 ]; then
    command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null 2>&1 || need+=(binfmt-support)
fi
if [ "${#need[@]}" -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || skip "missing ${need[*]} and no apt-get to install them"
    log "installing ${need[*]}"
    if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null; }; then
        skip "missing ${need[*]} and apt-get could not install them"
    fi
fi

if [ "$native" = 0 ]; then
    binfmt=/proc/sys/fs/binfmt_misc
    if [ ! -e "$binfmt/register" ]; then
        mount -t binfmt_misc binfmt_misc "$binfmt" 2>/dev/null \
            || skip "binfmt_misc is not mounted and cannot be mounted here (needs a privileged container)"
    fi
    update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    grep -q '^enabled' "$binfmt/qemu-aarch64" 2>/dev/null \
        || skip "cannot enable the qemu-aarch64 binfmt handler (update-binfmts --enable qemu-aarch64 failed)"
    # With the F flag the kernel opens qemu at registration; without it the chroot needs it inside.
    grep -q '^flags:.*F' "$binfmt/qemu-aarch64" || log "binfmt qemu-aarch64 has no F flag: copying qemu into the chroot"
fi

# The Debian mirror: EDGE_ARM64_MIRROR, else the host's apt sources, else debootstrap's default.
mirror="${EDGE_ARM64_MIRROR:-}"
if [ -z "$mirror" ]; then
    mirror="$(python3 - "$suite" <<'EOF' 2>/dev/null || true
import glob, re, sys
suite = sys.argv[1]
found = []
for path in ["/etc/apt/sources.list"] + sorted(glob.glob("/etc/apt/sources.list.d/*.list")):
    try:
        lines = open(path).read().splitlines()
    except OSError:
        continue
    for line in lines:
        line = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
        if len(line) >= 3 and line[0] == "deb":
            found.append((line[1], [line[2]]))
for path in sorted(glob.glob("/etc/apt/sources.list.d/*.sources")):
    try:
        text = open(path).read()
    except OSError:
        continue
    for para in re.split(r"\n\s*\n", text):
        fields = {}
        for line in para.splitlines():
            if line.startswith("#") or ":" not in line or line[0].isspace():
                continue
            key, value = line.split(":", 1)
            fields[key.strip().lower()] = value.split()
        if "deb" in fields.get("types", []) and fields.get("enabled", ["yes"])[0] != "no":
            for uri in fields.get("uris", []):
                found.append((uri, fields.get("suites", [])))
for uri, suites in found:
    if suite in suites and "security" not in uri:
        print(uri.rstrip("/"))
        break
EOF
)"
fi
if [ -n "$mirror" ]; then log "Debian mirror (from ${EDGE_ARM64_MIRROR:+EDGE_ARM64_MIRROR}${EDGE_ARM64_MIRROR:-host apt sources}): $mirror"
else log "no $suite mirror in the host's apt sources: debootstrap's default mirror"; fi

# --- work directory, mounts and their cleanup --------------------------------------------------
mkdir -p "$cache/pip"
work="$(mktemp -d "${TMPDIR:-/var/tmp}/edge-arm64.XXXXXX")"
chroot_dir="$work/root"
mkdir -p "$chroot_dir"
declare -a mounts=()
broker_pid=""
sub_pid=""

cleanup() {
    local rc=$?
    if [ -n "$sub_pid" ]; then kill "$sub_pid" 2>/dev/null || true; fi
    if [ -n "$broker_pid" ]; then kill "$broker_pid" 2>/dev/null || true; fi
    local i busy=0
    for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do
        umount "${mounts[i]}" 2>/dev/null || umount -l "${mounts[i]}" 2>/dev/null || true
    done
    # Never delete through a mount that is still there (a bind of a host directory).
    for i in "${mounts[@]}"; do
        if mountpoint -q "$i" 2>/dev/null; then busy=1; echo "proof.sh: still mounted: $i" >&2; fi
    done
    if [ "$keep" = 1 ]; then
        log "kept the work directory: $work"
    elif [ "$busy" = 0 ]; then
        rm -rf --one-file-system "$work"
    else
        echo "proof.sh: left $work in place (mounts still busy)" >&2
    fi
    print_phases
    if [ "$rc" = 0 ]; then log "PASSED"; else echo "arm64-proof: FAILED (exit $rc)" >&2; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

bind() { # bind SRC DST [ro]
    mkdir -p "$2"
    mount --bind "$1" "$2"
    mounts+=("$2")
    if [ "${3:-}" = ro ]; then mount -o remount,bind,ro "$2"; fi
}

# --- the chroot: restore the cached tarball or build it (failures from here on are real) --------
key="debian-$suite-arm64-$(echo "$packages" | cksum | cut -d' ' -f1)"
if command -v zstd >/dev/null 2>&1; then tar_z=(--zstd); tarball="$cache/$key.tar.zst"
else tar_z=(--gzip); tarball="$cache/$key.tar.gz"; fi
if [ "$rebuild" = 0 ] && [ -f "$tarball" ]; then
    phase "restore chroot (cache)"
    tar -C "$chroot_dir" "${tar_z[@]}" --numeric-owner -xpf "$tarball"
else
    phase "build chroot (debootstrap)"
    log "debootstrap $suite arm64 with $packages (minutes; cached afterwards in $tarball)"
    mirror_arg=()
    [ -n "$mirror" ] && mirror_arg=("$mirror")
    if ! debootstrap --arch=arm64 --variant=minbase --include="$packages" \
        "$suite" "$chroot_dir" "${mirror_arg[@]}" >"$work/debootstrap.log" 2>&1; then
        tail -n 30 "$work/debootstrap.log" >&2
        [ -f "$chroot_dir/debootstrap/debootstrap.log" ] && tail -n 30 "$chroot_dir/debootstrap/debootstrap.log" >&2
        fail "debootstrap failed"
    fi
    rm -rf "$chroot_dir"/var/cache/apt/archives/*.deb "$chroot_dir"/var/lib/apt/lists/*
    phase "cache chroot tarball"
    tar -C "$chroot_dir" "${tar_z[@]}" --numeric-owner -cpf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    log "cached: $tarball ($(du -h "$tarball" | cut -f1))"
fi

phase "prepare chroot"
if [ "$native" = 0 ] && ! grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    cp "$(command -v qemu-aarch64-static)" "$chroot_dir/usr/bin/"
fi
bind /proc "$chroot_dir/proc"
bind /dev "$chroot_dir/dev"
bind /sys "$chroot_dir/sys" ro
if [ "$native" = 0 ]; then
    # qemu-user shows the host's x86 /proc/cpuinfo, on which onnxruntime's cpuinfo segfaults.
    ncpu="$(nproc)"; [ "$ncpu" -gt 4 ] && ncpu=4
    for ((i = 0; i < ncpu; i++)); do
        printf 'processor\t: %d\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\n' "$i"
        printf 'CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\n'
    done >"$work/cpuinfo"
    mount --bind "$work/cpuinfo" "$chroot_dir/proc/cpuinfo"
    mounts+=("$chroot_dir/proc/cpuinfo")
fi
cp /etc/resolv.conf "$chroot_dir/etc/resolv.conf" 2>/dev/null || true
cp /etc/hosts "$chroot_dir/etc/hosts" 2>/dev/null || true
mkdir -p "$chroot_dir/tmp" && chmod 1777 "$chroot_dir/tmp"

# pip: the host's configuration files, PIP_* variables, the local paths they name, the CA bundle.
for conf in /etc/pip.conf /etc/xdg/pip/pip.conf "$HOME/.config/pip/pip.conf" "$HOME/.pip/pip.conf" "${PIP_CONFIG_FILE:-}"; do
    if [ -z "$conf" ] || [ ! -f "$conf" ]; then continue; fi
    case "$conf" in "$HOME"/*) dst="/root${conf#"$HOME"}" ;; *) dst="$conf" ;; esac
    mkdir -p "$chroot_dir$(dirname "$dst")"
    cp "$conf" "$chroot_dir$dst"
done
pip_env=()
while IFS='=' read -r name value; do
    case "$name" in PIP_*) pip_env+=("$name=$value") ;; esac
done < <(env)
for name in http_proxy https_proxy no_proxy HTTP_PROXY HTTPS_PROXY NO_PROXY; do
    [ -n "${!name:-}" ] && pip_env+=("$name=${!name}")
done
{ python3 -m pip config list 2>/dev/null | sed "s/^[^=]*=//; s/^'//; s/'\$//"; env | sed -n 's/^PIP_[^=]*=//p'; } \
    | tr ' ' '\n' | sed 's#^file://##' | sort -u | while read -r path; do
        case "$path" in /*) ;; *) continue ;; esac
        # A file index (.../simple) links to files beside it (../files): bind its parent.
        case "$path" in */simple|*/simple/) path="$(dirname "${path%/}")" ;; esac
        if [ -d "$path" ]; then echo "d $path"; elif [ -f "$path" ]; then echo "f $path"; fi
    done | sort -u >"$work/pip-paths"
while read -r kind path; do
    case "$path" in /proc*|/dev*|/sys*|/) continue ;; esac
    if [ "$kind" = d ]; then bind "$path" "$chroot_dir$path" ro
    else mkdir -p "$chroot_dir$(dirname "$path")"; cp "$path" "$chroot_dir$path"; fi
    log "pip path from the host: $path"
done <"$work/pip-paths"
bind "$cache/pip" "$chroot_dir/root/.cache/pip"

in_chroot() { # [SECONDS] CMD...: run in the chroot, killed after SECONDS (default 900)
    local limit=900
    case "$1" in [0-9]*) limit="$1"; shift ;; esac
    timeout "$limit" env -i HOME=/root PATH=/opt/edge-runtime/bin:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin \
        LANG=C.UTF-8 PYTHONUNBUFFERED=1 QEMU_CPU=cortex-a72 ${pip_env[@]+"${pip_env[@]}"} \
        chroot "$chroot_dir" "$@"
}
log "chroot: $(in_chroot uname -m), $(in_chroot python3 --version 2>&1)"
[ "$(in_chroot uname -m)" = aarch64 ] || fail "the chroot does not run aarch64 binaries"

# --- the project's wheel, built on the host from a clean copy of the working tree --------------
phase "build wheel (host)"
src="$work/src"
mkdir -p "$src" "$root_dir/dist"
if git -C "$root_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files that exist (the working tree, not build outputs).
    (cd "$root_dir" && while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        < <(git ls-files -z --cached --others --exclude-standard) | tar --null -T - -cf -) | tar -C "$src" -xf -
else
    tar -C "$root_dir" --exclude=./build --exclude=./dist --exclude='./.venv*' -cf - . | tar -C "$src" -xf -
fi
rm -f "$root_dir"/dist/edge_runtime-*.whl
"$host_python" -m pip wheel --quiet --no-deps "$src" -w "$root_dir/dist" >"$work/wheel.log" 2>&1 \
    || { cat "$work/wheel.log" >&2; fail "building the wheel failed"; }
wheel="$(ls "$root_dir"/dist/edge_runtime-*.whl)"
log "wheel: $wheel"
mkdir -p "$chroot_dir/opt/proof"
cp "$wheel" "$root_dir/devices/install-device.sh" "$chroot_dir/opt/proof/"
cp -r "$bundle" "$chroot_dir/opt/proof/bundle"

# --- the device install, the same script the Dockerfile runs -----------------------------------
phase "install-device.sh (chroot)"
in_chroot 1800 bash /opt/proof/install-device.sh --venv /opt/edge-runtime --extras "$extras" \
    "/opt/proof/$(basename "$wheel")" || fail "install-device.sh failed in the chroot"

phase "edge-runtime device+inspect"
in_chroot 600 edge-runtime device || fail "edge-runtime device failed in the chroot"
in_chroot 600 edge-runtime inspect /opt/proof/bundle || fail "edge-runtime inspect failed in the chroot"

# --- run the bundle: JSON lines out, and to a host mosquitto when there is one -----------------
check_results() { # FILE: exactly $frames result lines with the keys of docs/protocol.md
    python3 - "$1" "$frames" <<'EOF'
import json, sys
path, want = sys.argv[1], int(sys.argv[2])
lines = [line for line in open(path) if line.strip()]
rows = [json.loads(line) for line in lines]
missing = [sorted({"device", "seq", "frame_id", "ts", "results", "latency_ms"} - set(r)) for r in rows]
bad = [m for m in missing if m]
print(f"{path}: {len(rows)} result lines, heads {sorted(rows[0]['results']) if rows else []}")
sys.exit(0 if len(rows) == want and not bad else f"want {want} complete results, got {len(rows)} (missing keys: {bad})")
EOF
}

phase "run $frames frames (chroot)"
in_chroot 900 edge-runtime run --bundle /opt/proof/bundle --source synthetic --max-frames "$frames" \
    --device-id arm64-proof --state-dir /tmp/state --output - >"$work/results.jsonl" \
    || fail "edge-runtime run failed in the chroot"
head -c 600 "$work/results.jsonl"; echo
check_results "$work/results.jsonl" || fail "wrong results from the chroot run"

host_runtime="$(dirname "$host_python")/edge-runtime"
mosquitto_bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
if [ "$mqtt" = 0 ]; then
    log "mqtt: skipped (--no-mqtt)"
elif [ ! -x "$mosquitto_bin" ]; then
    log "mqtt: skipped (no mosquitto on the host)"
elif [ ! -x "$host_runtime" ]; then
    log "mqtt: skipped (no host edge-runtime next to $host_python for the subscriber)"
else
    phase "publish $frames frames to host mosquitto"
    port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    printf 'listener %s 127.0.0.1\nallow_anonymous true\npersistence false\nuser root\nmax_queued_messages 0\n' \
        "$port" >"$work/mosquitto.conf"
    "$mosquitto_bin" -c "$work/mosquitto.conf" >"$work/mosquitto.log" 2>&1 &
    broker_pid=$!
    for _ in $(seq 50); do
        python3 -c "import socket; socket.create_connection(('127.0.0.1', $port), 0.2)" 2>/dev/null && break
        sleep 0.1
    done
    "$host_runtime" subscribe --broker "mqtt://127.0.0.1:$port" --topic 'edge/+/results' \
        --output "$work/received.jsonl" 2>"$work/subscribe.log" &
    sub_pid=$!
    sleep 2
    in_chroot 900 edge-runtime run --bundle /opt/proof/bundle --source synthetic --max-frames "$frames" \
        --device-id arm64-proof --state-dir /tmp/state-mqtt --broker "mqtt://127.0.0.1:$port" \
        >"$work/published.log" 2>&1 || { cat "$work/published.log" >&2; fail "edge-runtime run --broker failed in the chroot"; }
    for _ in $(seq 100); do
        [ "$(grep -c . "$work/received.jsonl" 2>/dev/null || true)" -ge "$frames" ] && break
        sleep 0.2
    done
    kill -TERM "$sub_pid" 2>/dev/null || true
    wait "$sub_pid" 2>/dev/null || true
    sub_pid=""
    cat "$work/subscribe.log" >&2 || true
    check_results "$work/received.jsonl" || fail "the host subscriber did not get the $frames results"
fi
phase_end
