#!/usr/bin/env bash
# The main job: a punktfunk host and client on loopback. The host encodes its test pattern with
# x264 and streams it over punktfunk/1; the client decodes every frame, checks each frame's
# stamp, and prints what arrived and how late. Writes the received stream and one decoded
# frame to demo-out/.
#
# Environment: MODE (1280x720@60), SECONDS_TO_RUN (10), CODEC (h264), BITRATE (kbit/s, 10000),
# PORT (47800), IMPAIR (e.g. "loss=5%": the data plane then runs through the impairment proxy),
# FEC (parity percentage the client asks for; default: the host's 20), OUT (demo-out).
set -euo pipefail
cd "$(dirname "$0")/.."

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
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$CONFIG"
}
trap cleanup EXIT

"$BIN/punktfunk-host" --config-dir "$CONFIG" --log warn serve --listen "127.0.0.1:$PORT" --sessions 1 \
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

CLIENT_ARGS=()
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

echo "client: $MODE $CODEC ${BITRATE} kbit/s for ${SECONDS_TO_RUN} s (pinned to the host's fingerprint)"
"$BIN/punktfunk-client" --config-dir "$CONFIG" --log warn connect "127.0.0.1:$PORT" --pin "$FINGERPRINT" \
    --mode "$MODE" --codec "$CODEC" --bitrate "$BITRATE" --seconds "$SECONDS_TO_RUN" \
    --out "$OUT/stream.$EXT" --png "$OUT/frame.png" "${CLIENT_ARGS[@]}"
echo
echo "wrote $OUT/stream.$EXT (play with: ffplay $OUT/stream.$EXT) and $OUT/frame.png"
