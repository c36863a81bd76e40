#!/usr/bin/env bash
# The main job: a punktfunk host and client on loopback, streaming a real desktop. By default a
# private headless sway is started (as an unprivileged user when run as root); the host gives
# the client its own sway output at exactly the client's mode, launches the desktop probe app
# on it, captures it with wlr-screencopy and encodes it with x264 over punktfunk/1. The client
# decodes every frame, checks that each carries the app's stamp in order, sends scripted input
# (which the app logs), and prints what arrived and how late, from the app's render to the
# client's decode. Writes the received stream, one decoded frame and the app's input log to
# demo-out/.
#
# Environment: DESKTOP (sway: a private headless sway; existing: the sway this shell runs in;
# none: the host's test pattern, no desktop), MODE (1280x720@60), SECONDS_TO_RUN (10), CODEC
# (h264), BITRATE (kbit/s, 10000), PORT (47800), IMPAIR (e.g. "loss=5%": the data plane then
# runs through the impairment proxy), FEC (parity percentage the client asks for; default: the
# host's 20), OUT (demo-out).
set -euo pipefail
cd "$(dirname "$0")/.."

DESKTOP=${DESKTOP:-sway}
case "$DESKTOP" in
sway)
    # Everything below runs again inside a private sway, which stops when it ends.
    exec env DESKTOP=existing target/release/punktfunk-testenv sway -- "$0" "$@"
    ;;
existing)
    if [ -z "${SWAYSOCK:-}" ] || [ -z "${WAYLAND_DISPLAY:-}" ]; then
        echo "demo: DESKTOP=existing needs a running sway (SWAYSOCK and WAYLAND_DISPLAY set)" >&2
        exit 2
    fi
    ;;
none) unset WAYLAND_DISPLAY SWAYSOCK DISPLAY XDG_CURRENT_DESKTOP ;;
*) echo "demo: DESKTOP must be sway, existing or none" >&2; exit 2 ;;
esac

MODE=${MODE:-1280x720@60}
SECONDS_TO_RUN=${SECONDS_TO_RUN:-10}
CODEC=${CODEC:-h264}
BITRATE=${BITRATE:-10000}
PORT=${PORT:-47800}
IMPAIR=${IMPAIR:-}
FEC=${FEC:-}
BIN=target/release
OUT=${OUT:-demo-out}
case "$CODEC" in h264) EXT=h264 ;; hevc) EXT=hevc ;; av1) EXT=obu ;; *) echo "CODEC must be h264, hevc or av1" >&2; exit 2 ;; esac

mkdir -p "$OUT"
CONFIG=$(mktemp -d)
CLIENT_ARGS=()
if [ "$DESKTOP" != none ]; then
    # The app the client asks for: the desktop probe, drawing stamped frames and logging input.
    rm -f "$OUT/probe-input.jsonl"
    cat > "$CONFIG/apps.toml" <<TOML
[[app]]
id = 1
title = "Desktop"

[[app]]
id = 2
title = "Probe"
command = ["$PWD/$BIN/punktfunk-desktop-probe", "--log", "$PWD/$OUT/probe-input.jsonl"]
TOML
    cat > "$CONFIG/input.txt" <<'SCRIPT'
# Focus the app with a click in the middle, then a little of everything.
800  abs 500 500 1000 1000
850  button left down
900  button left up
1200 move 40 20
1500 scroll 0 -120
2000 text hello from punktfunk
2600 key 42 down shift
2650 key 30 down shift
2700 key 30 up shift
2750 key 42 up
SCRIPT
    CLIENT_ARGS+=(--app Probe --app-stamps --input-script "$CONFIG/input.txt")
fi
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$CONFIG"
}
trap cleanup EXIT

"$BIN/punktfunk-host" --config-dir "$CONFIG" --log info serve --listen "127.0.0.1:$PORT" --sessions 1 \
    > "$OUT/host.out" 2> "$OUT/host.log" &
pids+=($!)
for _ in $(seq 1 100); do
    grep -q "listening" "$OUT/host.out" 2>/dev/null && break
    sleep 0.1
done
if ! grep -q "listening" "$OUT/host.out"; then
    echo "demo: the host did not start; see $OUT/host.log" >&2
    cat "$OUT/host.log" >&2
    exit 1
fi
FINGERPRINT=$(awk '{print $NF}' "$OUT/host.out")
echo "host: $(cat "$OUT/host.out")"

if [ -n "$FEC" ]; then CLIENT_ARGS+=(--fec "$FEC"); fi
if [ -n "$IMPAIR" ]; then
    "$BIN/punktfunk-impair" --listen 127.0.0.1:0 --upstream "127.0.0.1:$((PORT + 1))" --backward "$IMPAIR" \
        > "$OUT/impair.out" 2>&1 &
    pids+=($!)
    for _ in $(seq 1 50); do grep -q "listening on" "$OUT/impair.out" 2>/dev/null && break; sleep 0.1; done
    PROXY=$(awk '/listening on/ {print $3; exit}' "$OUT/impair.out")
    CLIENT_ARGS+=(--data-via "$PROXY")
    echo "data plane through the impairment proxy at $PROXY: $IMPAIR"
fi

# Pair the demo client the way a person would: arm a PIN on the host, type it on the client.
"$BIN/punktfunk-host" --config-dir "$CONFIG" pair > "$OUT/pair.out" 2> "$OUT/pair.log" &
pair_pid=$!
pids+=($pair_pid)
for _ in $(seq 1 50); do grep -q "^PIN" "$OUT/pair.out" 2>/dev/null && break; sleep 0.1; done
PIN=$(awk '/^PIN/ {print $2; exit}' "$OUT/pair.out")
if [ -z "$PIN" ]; then
    echo "demo: the host armed no pairing PIN; see $OUT/pair.log" >&2
    cat "$OUT/pair.log" >&2
    exit 1
fi
echo "pairing: the host shows PIN $PIN; the client types it"
"$BIN/punktfunk-client" --config-dir "$CONFIG" --log warn pair "127.0.0.1:$PORT" --pin-code "$PIN" --name demo-client
wait "$pair_pid"
echo "host: $(cat "$OUT/pair.out" | tail -1)"

echo "client: $MODE $CODEC ${BITRATE} kbit/s for ${SECONDS_TO_RUN} s (pinned to the host's fingerprint)"
"$BIN/punktfunk-client" --config-dir "$CONFIG" --log warn connect "127.0.0.1:$PORT" --pin "$FINGERPRINT" \
    --mode "$MODE" --codec "$CODEC" --bitrate "$BITRATE" --seconds "$SECONDS_TO_RUN" \
    --out "$OUT/stream.$EXT" --png "$OUT/frame.png" "${CLIENT_ARGS[@]}"
echo
echo "host: $(grep -o 'output="[^"]*" backends=\[[^]]*\]' "$OUT/host.log" | head -1 || true) (display, capture, input, audio)"
echo "wrote $OUT/stream.$EXT (play with: ffplay $OUT/stream.$EXT) and $OUT/frame.png"
if [ "$DESKTOP" != none ]; then
    typed=$(grep '"event":"key"' "$OUT/probe-input.jsonl" 2>/dev/null | grep '"pressed"' \
        | sed -n 's/.*"utf8":"\([^"]*\)".*/\1/p' | tr -d '\n' || true)
    echo "the app received $(grep -c '"event"' "$OUT/probe-input.jsonl" 2>/dev/null || echo 0) log lines of input; typed: \"$typed\" ($OUT/probe-input.jsonl)"
fi
