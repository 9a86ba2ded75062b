#!/usr/bin/env bash
# Deploy edge-runtime to a board over ssh: bundle + config + systemd unit, then (re)start it.
#
#   devices/deploy.sh HOST BUNDLE_DIR CONFIG [options]
#
#   devices/deploy.sh pi@cam-entrance.local build/demo_int8 devices/config.example.toml
#   devices/deploy.sh pi@cam-entrance.local build/demo_int8 my.toml --wheel dist/edge_runtime-0.1.0-py3-none-any.whl
#   devices/deploy.sh jetson@orin build/demo_fp16 my.toml --python python3.10 --dry-run
#
# Options:
#   --dry-run            print every command it would run (local and remote) and run none
#   --python PY          Python on the host that creates the venv (default: python3)
#   --ssh-opts "OPTS"    extra options for ssh/scp/rsync's ssh, e.g. "-i ~/.ssh/pi -o Port=2222"
#                        (use -o Port=N, not -p: scp spells the port -P)
#   --wheel FILE         install this wheel instead of edge-runtime from the host's package index
#   --extras LIST        extras to install (default: tflite,zstd,signing,camera)
#   --copy auto|rsync|scp  how to copy (default auto: rsync when installed here, else scp)
#   --no-sudo            run the remote commands without sudo (ssh as root)
#
# What happens on HOST (user with sudo):
#   1. checks: ssh works (BatchMode, 5 s timeout), PY and systemctl exist; nothing is copied
#      or changed before these pass
#   2. copies bundle, config, unit (and wheel) to a staging dir /tmp/edge-runtime-deploy-<sha>
#   3. creates /opt/edge-runtime/venv if missing and pip-installs edge-runtime into it
#   4. copies the bundle to the slot /var/lib/edge-runtime/bundles/<name>-<sha> (kept if it is
#      already there) and checks config + bundle with `edge-runtime run --validate`
#   5. swaps the symlink bundles/current to the new slot (mv -T: atomic), installs the config
#      and the unit, daemon-reload, enable, restart
#   6. prints `systemctl status` and `edge-runtime health`; exit status is health's
# A failure in 1-4 leaves the running service, its bundle and config as they were. Older slots
# stay in bundles/ for a rollback: `ln -sfn OLD-SLOT current.new && mv -T current.new current`.
set -euo pipefail

VENV=/opt/edge-runtime/venv
STATE_DIR=/var/lib/edge-runtime
BUNDLES=$STATE_DIR/bundles
CONFIG_DIR=/etc/edge-runtime
UNIT=edge-runtime.service
SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
UNIT_FILE=$SCRIPT_DIR/systemd/$UNIT

DRY_RUN=0
PYTHON=python3
SSH_OPTS=""
WHEEL=""
EXTRAS="tflite,zstd,signing,camera"
COPY=auto
SUDO=sudo

die() {
    echo "deploy.sh: error: $*" >&2
    exit 2
}

usage() {
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed -e '$d' -e 's/^# \{0,1\}//'
}

POSITIONAL=()
while [[ $# -gt 0 ]]; do
    case $1 in
        --dry-run) DRY_RUN=1 ;;
        --python) PYTHON=${2:?--python needs a value}; shift ;;
        --ssh-opts) SSH_OPTS=${2?--ssh-opts needs a value}; shift ;;
        --wheel) WHEEL=${2:?--wheel needs a file}; shift ;;
        --extras) EXTRAS=${2?--extras needs a value}; shift ;;
        --copy) COPY=${2:?--copy needs auto, rsync or scp}; shift ;;
        --no-sudo) SUDO="" ;;
        -h | --help) usage; exit 0 ;;
        --) shift; POSITIONAL+=("$@"); break ;;
        -*) die "unknown option $1 (see --help)" ;;
        *) POSITIONAL+=("$1") ;;
    esac
    shift
done
[[ ${#POSITIONAL[@]} -eq 3 ]] || { usage >&2; die "expected HOST BUNDLE_DIR CONFIG, got ${#POSITIONAL[@]} arguments"; }
HOST=${POSITIONAL[0]}
BUNDLE=${POSITIONAL[1]%/}
CONFIG=${POSITIONAL[2]}

# --- 1. local checks: nothing leaves this machine unless they pass -------------------------
[[ -d $BUNDLE ]] || die "bundle directory $BUNDLE does not exist"
[[ -f $BUNDLE/manifest.json ]] || die "$BUNDLE is not a bundle: no manifest.json in it (make one with edge-export split)"
[[ -f $CONFIG ]] || die "config file $CONFIG does not exist (start from devices/config.example.toml)"
[[ -f $UNIT_FILE ]] || die "systemd unit $UNIT_FILE is missing"
if [[ -n $WHEEL ]]; then
    [[ -f $WHEEL && $WHEEL == *.whl ]] || die "wheel $WHEEL does not exist or is not a .whl file"
fi
[[ $EXTRAS =~ ^[A-Za-z0-9_,-]*$ ]] || die "--extras $EXTRAS: expected a comma-separated list such as tflite,zstd"
[[ $PYTHON =~ ^[A-Za-z0-9_./-]+$ ]] || die "--python $PYTHON: expected a command name or path"
case $COPY in
    auto) if command -v rsync >/dev/null 2>&1; then COPY=rsync; else COPY=scp; fi ;;
    rsync | scp) ;;
    *) die "--copy $COPY: expected auto, rsync or scp" ;;
esac
command -v ssh >/dev/null 2>&1 || die "ssh is not installed here"
command -v "$COPY" >/dev/null 2>&1 || die "$COPY is not installed here"

# The slot name: the bundle's name and a hash of its content (same bundle -> same slot).
NAME=$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1])).get("name", ""))' "$BUNDLE/manifest.json" 2>/dev/null) \
    || die "$BUNDLE/manifest.json is not valid JSON (or python3 is missing here)"
NAME=$(printf '%s' "${NAME:-bundle}" | tr -c 'A-Za-z0-9._-' '_')
SHA=$(cd "$BUNDLE" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -c1-12)
SLOT=$NAME-$SHA
STAGE=/tmp/edge-runtime-deploy-$SHA

read -r -a EXTRA_SSH <<<"$SSH_OPTS"
SSH=(ssh "${EXTRA_SSH[@]}" -o BatchMode=yes -o ConnectTimeout=5)

# One argument as a shell word: as is when plain, else in single quotes.
quote() {
    if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./-]+$ ]]; then
        printf '%s' "$1"
    else
        printf "'%s'" "${1//\'/\'\\\'\'}"
    fi
}

# Print a command (after "+ ", each argument quoted for the shell), then run it unless --dry-run.
run() {
    printf '+'
    local arg
    for arg in "$@"; do
        printf ' '
        quote "$arg"
    done
    printf '\n'
    if [[ $DRY_RUN -eq 0 ]]; then
        "$@"
    fi
}

# Run one shell command line on HOST (as root through sudo unless --no-sudo).
remote() {
    run "${SSH[@]}" "$HOST" "${SUDO:+$SUDO }sh -c '$*'"
}

echo "deploy.sh: $BUNDLE -> $HOST:$BUNDLES/$SLOT (config $CONFIG, copy with $COPY)"
[[ $DRY_RUN -eq 1 ]] && echo "deploy.sh: dry run: printing the commands, running none"

if ! run "${SSH[@]}" "$HOST" true; then
    die "cannot reach $HOST over ssh (ssh -o BatchMode=yes -o ConnectTimeout=5 $HOST true failed): check the name, the network and that key login works; nothing was copied or changed"
fi
if ! run "${SSH[@]}" "$HOST" "command -v $PYTHON >/dev/null && command -v systemctl >/dev/null${SUDO:+ && command -v $SUDO >/dev/null}"; then
    die "$HOST lacks $PYTHON, systemctl${SUDO:+ or $SUDO} (see --python, --no-sudo); nothing was copied or changed"
fi

# --- 2. staging ----------------------------------------------------------------------------
run "${SSH[@]}" "$HOST" "rm -rf $STAGE && mkdir -m 700 $STAGE"
if [[ $COPY == rsync ]]; then
    run rsync -a --delete -e "${SSH[*]}" "$BUNDLE/" "$HOST:$STAGE/bundle/"
    run rsync -a -e "${SSH[*]}" "$CONFIG" "$HOST:$STAGE/config.toml"
    run rsync -a -e "${SSH[*]}" "$UNIT_FILE" "$HOST:$STAGE/$UNIT"
    [[ -z $WHEEL ]] || run rsync -a -e "${SSH[*]}" "$WHEEL" "$HOST:$STAGE/"
else
    run scp -q -r "${EXTRA_SSH[@]}" -o BatchMode=yes -o ConnectTimeout=5 "$BUNDLE" "$HOST:$STAGE/bundle"
    run scp -q "${EXTRA_SSH[@]}" -o BatchMode=yes -o ConnectTimeout=5 "$CONFIG" "$HOST:$STAGE/config.toml"
    run scp -q "${EXTRA_SSH[@]}" -o BatchMode=yes -o ConnectTimeout=5 "$UNIT_FILE" "$HOST:$STAGE/$UNIT"
    [[ -z $WHEEL ]] || run scp -q "${EXTRA_SSH[@]}" -o BatchMode=yes -o ConnectTimeout=5 "$WHEEL" "$HOST:$STAGE/"
fi

# --- 3. the package --------------------------------------------------------------------------
SPEC="edge-runtime"
[[ -z $WHEEL ]] || SPEC="$STAGE/$(basename "$WHEEL")"
[[ -z $EXTRAS ]] || SPEC="${SPEC}[${EXTRAS}]"
remote "test -x $VENV/bin/python || { mkdir -p $(dirname "$VENV") && $PYTHON -m venv $VENV; } || { echo \"cannot create $VENV: on Debian/Ubuntu install python3-venv\" >&2; exit 1; }"
remote "$VENV/bin/python -m pip install --disable-pip-version-check --upgrade \"$SPEC\""

# --- 4. the bundle slot, checked before anything running is touched -------------------------
remote "mkdir -p $BUNDLES && if [ ! -d $BUNDLES/$SLOT ]; then rm -rf $BUNDLES/$SLOT.tmp && cp -R $STAGE/bundle $BUNDLES/$SLOT.tmp && chmod -R a+rX $BUNDLES/$SLOT.tmp && mv -T $BUNDLES/$SLOT.tmp $BUNDLES/$SLOT; fi"
remote "$VENV/bin/edge-runtime run --config $STAGE/config.toml --bundle $BUNDLES/$SLOT --source synthetic --state-dir $STAGE/state --validate"

# --- 5. switch over --------------------------------------------------------------------------
remote "ln -sfn $SLOT $BUNDLES/current.new && mv -T $BUNDLES/current.new $BUNDLES/current"
remote "mkdir -p $CONFIG_DIR && install -m 0644 $STAGE/config.toml $CONFIG_DIR/config.toml.new && mv -T $CONFIG_DIR/config.toml.new $CONFIG_DIR/config.toml"
remote "install -m 0644 $STAGE/$UNIT /etc/systemd/system/$UNIT"
remote "systemctl daemon-reload && systemctl enable $UNIT && systemctl restart $UNIT"
remote "rm -rf $STAGE"

# --- 6. report -------------------------------------------------------------------------------
remote "systemctl --no-pager --full status $UNIT" || true
if remote "$VENV/bin/edge-runtime health --state-dir $STATE_DIR"; then
    [[ $DRY_RUN -eq 0 ]] || { echo "deploy.sh: dry run: nothing was run"; exit 0; }
    echo "deploy.sh: $HOST runs $SLOT; the service is healthy"
else
    status=$?
    echo "deploy.sh: $HOST: edge-runtime health failed (exit $status); see: ssh $HOST journalctl -u $UNIT -n 50" >&2
    exit "$status"
fi
