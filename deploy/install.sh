#!/usr/bin/env bash
# Installs the sensorcast agent as a systemd service on Debian or Raspberry Pi OS (bookworm,
# bullseye), or removes it. Idempotent: run it again to upgrade; your config is kept.
#
#   sudo deploy/install.sh                     # from this checkout (PyPI for dependencies)
#   sudo deploy/install.sh --wheels DIR        # offline, from a wheelhouse (deploy/qemu/wheels)
#   sudo deploy/install.sh --runtime tflite    # tflite-runtime instead of LiteRT (numpy < 2)
#   sudo deploy/install.sh --uninstall         # remove service, venv and user; keep config/state
#   sudo deploy/install.sh --uninstall --purge # ... and /etc/sensorcast, /var/lib/sensorcast
#
# What it makes: a system user `sensorcast` (no login, no home), a venv in /opt/sensorcast
# with only the agent (no TensorFlow), /etc/sensorcast/sensorcast.toml (an example that
# `sensorcast check` accepts, with the demo model in /etc/sensorcast/models; never
# overwritten), /etc/sensorcast/mqtt-password (empty, 0600, for LoadCredential=), the state
# directory /var/lib/sensorcast, and /etc/systemd/system/sensorcast.service, enabled and
# started when systemd runs (not in a chroot or a container build).
set -euo pipefail

PREFIX=/opt/sensorcast
CONF_DIR=/etc/sensorcast
STATE_DIR=/var/lib/sensorcast
UNIT=/etc/systemd/system/sensorcast.service
USER_NAME=sensorcast
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/.." && pwd)

say() { echo "sensorcast install: $*" >&2; }
die() { echo "sensorcast install: error: $*" >&2; exit 1; }

wheels="" runtime=litert action=do_install purge=0
while [ $# -gt 0 ]; do
    case "$1" in
        --wheels) wheels=${2:?--wheels needs a directory}; shift 2 ;;
        --runtime) runtime=${2:?--runtime needs litert or tflite}; shift 2 ;;
        --uninstall) action=do_uninstall; shift ;;
        --purge) purge=1; shift ;;
        -h|--help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done
[ "$(id -u)" -eq 0 ] || die "run as root (sudo $0 ...)"
case "$runtime" in litert|tflite) ;; *) die "--runtime must be litert or tflite, not $runtime" ;; esac
[ -z "$wheels" ] || [ -d "$wheels" ] || die "--wheels $wheels: no such directory"

systemd_running() { [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; }

do_uninstall() {
    if systemd_running; then
        systemctl disable --now sensorcast.service >/dev/null 2>&1 || true
    fi
    rm -f "$UNIT"
    systemd_running && systemctl daemon-reload
    rm -rf "$PREFIX"
    if id "$USER_NAME" >/dev/null 2>&1; then
        userdel "$USER_NAME" 2>/dev/null || say "could not remove user $USER_NAME (still in use?)"
    fi
    if [ "$purge" -eq 1 ]; then
        rm -rf "$CONF_DIR" "$STATE_DIR"
        say "removed, with $CONF_DIR and $STATE_DIR"
    else
        say "removed; kept $CONF_DIR and $STATE_DIR (--purge removes them)"
    fi
}

install_python() {
    command -v python3 >/dev/null 2>&1 || need_apt python3
    python3 -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
        || die "python3 is $(python3 -V 2>&1); sensorcast needs Python 3.9 or newer"
    python3 -c 'import venv, ensurepip' 2>/dev/null || need_apt python3-venv
}

need_apt() {
    command -v apt-get >/dev/null 2>&1 || die "$1 is missing and there is no apt-get; install $1"
    say "installing $1 with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$1" >/dev/null
}

do_install() {
    install_python
    if ! id "$USER_NAME" >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir "$STATE_DIR" \
            --shell /usr/sbin/nologin --comment "sensorcast agent" "$USER_NAME"
        say "created system user $USER_NAME"
    fi
    # Sensors: 1-Wire and hwmon files are world-readable; i2c/gpio devices need these groups.
    for group in i2c gpio spi dialout; do
        getent group "$group" >/dev/null && usermod -a -G "$group" "$USER_NAME"
    done

    [ -x "$PREFIX/bin/python" ] || python3 -m venv "$PREFIX"
    local pip=("$PREFIX/bin/python" -m pip install --quiet --disable-pip-version-check)
    local what=("$REPO")
    if [ -n "$wheels" ]; then
        pip+=(--no-index --find-links "$wheels")
        what=(sensorcast)
    fi
    if [ "$runtime" = tflite ]; then
        say "installing the agent with tflite-runtime into $PREFIX"
        "${pip[@]}" --upgrade "tflite-runtime>=2.14" "numpy<2"
        "${pip[@]}" --upgrade --no-deps "${what[@]}"
        "${pip[@]}" "paho-mqtt>=2.0,<3" "orjson>=3.9" "flatbuffers>=23.5"
        "$PREFIX/bin/python" -m pip uninstall -y -q ai-edge-litert >/dev/null 2>&1 || true
    else
        say "installing the agent into $PREFIX"
        "${pip[@]}" --upgrade "${what[@]}"
    fi
    "$PREFIX/bin/sensorcast" --version >/dev/null || die "the installed agent does not start"

    install -d -m 0755 "$CONF_DIR" "$CONF_DIR/models"
    fresh_config=0
    if [ ! -e "$CONF_DIR/sensorcast.toml" ]; then
        fresh_config=1
        install -m 0644 "$REPO/examples/demo/room.tflite" "$CONF_DIR/models/room.tflite"
        install -m 0644 "$HERE/sensorcast.toml" "$CONF_DIR/sensorcast.toml"
        say "wrote $CONF_DIR/sensorcast.toml (an example: edit it, then: sensorcast check -c it)"
    else
        say "kept your $CONF_DIR/sensorcast.toml"
    fi
    # The credential file LoadCredential= reads; empty unless you use a broker password.
    [ -e "$CONF_DIR/mqtt-password" ] || install -m 0600 /dev/null "$CONF_DIR/mqtt-password"
    install -d -m 0750 -o "$USER_NAME" -g "$USER_NAME" "$STATE_DIR"
    install -d -m 0755 "$(dirname "$UNIT")"
    install -m 0644 "$HERE/sensorcast.service" "$UNIT"

    if systemd_running; then
        systemctl daemon-reload
        systemctl enable sensorcast.service >/dev/null
        if [ "$fresh_config" -eq 1 ]; then
            # The example points at a broker on this machine, which may not exist: start
            # the service once the config is the user's.
            say "sensorcast.service enabled; edit $CONF_DIR/sensorcast.toml, check it, then:" \
                "systemctl start sensorcast"
        elif systemctl restart sensorcast.service; then
            say "sensorcast.service enabled and restarted: systemctl status sensorcast"
        else
            die "sensorcast.service did not start with your config: journalctl -u sensorcast"
        fi
    else
        say "systemd is not running here: start the agent with systemctl start sensorcast on the device"
    fi
    say "done: $("$PREFIX/bin/sensorcast" --version)"
}

"$action"
