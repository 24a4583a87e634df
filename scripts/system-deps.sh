#!/usr/bin/env bash
# System packages the tests and the demo use: gst-rtsp-server (a real RTSP camera), stunnel4 (TLS in
# front of the test Kafka broker), and with `test` chromium (the live page's browser test). Idempotent;
# installs only what is missing, with apt-get, and only when it can (root or passwordless sudo).
set -euo pipefail
PACKAGES=(gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good gstreamer1.0-plugins-bad python3-gi stunnel4)
[ "${1:-}" = test ] && PACKAGES+=(chromium)
missing=()
for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null; then
    echo "system-deps: no apt-get; install gst-rtsp-server + PyGObject (RTSP tests), stunnel4 (Kafka TLS tests) and chromium (the live page's test): ${missing[*]}" >&2
    exit 0
fi
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo -n"
echo "system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1 || {
    $SUDO apt-get update -q >/dev/null && $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
}
