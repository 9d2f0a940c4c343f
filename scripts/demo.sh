#!/usr/bin/env bash
# The main job on the example input: builds hookd, starts a demo sink and
# the router with examples/main.json and the hooks in plugins/, posts the
# example events, and shows what each hook delivered.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
scripts/build.sh

work=$(mktemp -d)
sink_port=18766
api=http://127.0.0.1:8765
for port in 8765 "$sink_port"; do
  if ! python3 -c 'import socket,sys; socket.create_server(("127.0.0.1", int(sys.argv[1])))' "$port" 2>/dev/null; then
    echo "demo: port $port on 127.0.0.1 is in use; stop what holds it and retry" >&2
    exit 1
  fi
done
cleanup() {
  [ -n "${hookd_pid:-}" ] && kill "$hookd_pid" 2>/dev/null && wait "$hookd_pid" 2>/dev/null
  [ -n "${sink_pid:-}" ] && kill "$sink_pid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

# The demo runs on a store of its own, so it neither sees nor leaves
# anything in the data_dir of examples/main.json.
python3 - "$work" <<'PY'
import json, os, sys
work = sys.argv[1]
with open("examples/main.json") as f:
    cfg = json.load(f)
for key in ("plugins_dir", "catalog", "lua_dir"):
    if key in cfg:
        cfg[key] = os.path.abspath(os.path.join("examples", cfg[key]))
cfg["data_dir"] = os.path.join(work, "data")
with open(os.path.join(work, "main.json"), "w") as f:
    json.dump(cfg, f)
PY

python3 tests/sink/sink.py --port "$sink_port" --quiet > "$work/sink.out" 2>&1 &
sink_pid=$!
for _ in $(seq 1 100); do
  grep -q READY "$work/sink.out" && break
  sleep 0.1
done
CRM_TOKEN=demo-token build/hookd run --config "$work/main.json" 2> "$work/hookd.log" &
hookd_pid=$!

for _ in $(seq 1 100); do
  curl -sf "$api/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -sf "$api/healthz" >/dev/null || { cat "$work/hookd.log"; exit 1; }

post() {
  printf '%-40s ' "POST $1"
  curl -s -X POST -H "Content-Type: $2" --data-binary "@$1" "$api/v1/events"
  echo
}
post examples/events/click.json application/json
post examples/events/deliv.json application/json
post examples/events/sample-1k.ndjson application/x-ndjson

# Wait until every hook has delivered what it queued.
for _ in $(seq 1 100); do
  queued=$(curl -s "$api/v1/hooks" | python3 -c \
    'import json,sys; print(sum(h["counters"]["queued"] for h in json.load(sys.stdin)["hooks"]))')
  [ "$queued" = 0 ] && break
  sleep 0.1
done

echo
python3 scripts/demo_report.py "$api" "http://127.0.0.1:$sink_port"
cp "$work/hookd.log" build/demo-hookd.log
echo "The router's log is in build/demo-hookd.log."
