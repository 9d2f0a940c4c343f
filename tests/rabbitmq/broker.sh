#!/usr/bin/env bash
# Starts and stops a private RabbitMQ node for tests: everything it writes
# (database, logs, Erlang cookie, settings) stays under DIR, it listens on
# 127.0.0.1 only, and its AMQP, distribution and epmd ports are its own, so
# it never meets a system broker or another test's node.
#
#   broker.sh start DIR PORT   start (or restart on the same DIR, keeping its
#                              durable queues) and wait until PORT speaks AMQP
#   broker.sh stop DIR PORT    stop the node and its epmd; no-op if not running
#
# With BROKER_OWNER_PID set, start also leaves a watcher that stops the node
# once that process is gone, so a crashed or killed test leaves no broker.
# With BROKER_TLS_PORT set on the first start of a DIR, the node also takes
# amqps on that port, with a test CA made by openssl in DIR/tls (ca.pem;
# the server certificate is for "localhost" only). Without openssl it
# starts without TLS and says so. BROKER_EXTRA_CONF (lines of rabbitmq.conf)
# is added to the node's settings on the first start of a DIR.
#
# Exit status 0 on success; 2 when rabbitmq-server is not installed, so
# callers can skip; 1 for any other failure (the node's log tail is printed).
set -euo pipefail

RMQ_BIN=/usr/lib/rabbitmq/bin
SELF="$(cd "$(dirname "$0")" && pwd)/$(basename "$0")"
START_TIMEOUT=${BROKER_START_TIMEOUT:-90}

usage() {
  echo "usage: $0 start|stop DIR PORT" >&2
  exit 1
}

# Prints a TCP port on 127.0.0.1 that nobody listens on right now.
free_port() {
  python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

# Succeeds when PORT answers the AMQP 0-9-1 protocol header with a frame
# (connection.start), which the node only sends once it accepts clients.
amqp_ready() {
  python3 - "$1" <<'EOF'
import socket, sys
try:
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=2)
    s.sendall(b"AMQP\x00\x00\x09\x01")
    data = s.recv(8)
    sys.exit(0 if len(data) >= 7 and data[0] == 1 else 1)
except OSError:
    sys.exit(1)
EOF
}

# Writes DIR/env once (node name and ports), so a restart on the same DIR
# is the same node with the same data.
write_env() {
  local dir=$1 port=$2
  [ -f "$dir/env" ] && return 0
  mkdir -p "$dir/home" "$dir/mnesia" "$dir/log"
  cat >"$dir/env" <<EOF
export HOME='$dir/home'
export RABBITMQ_NODENAME='hookdtest$$@localhost'
export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
export RABBITMQ_NODE_PORT=$port
export RABBITMQ_DIST_PORT=$(free_port)
export ERL_EPMD_PORT=$(free_port)
export ERL_EPMD_ADDRESS=127.0.0.1
export RABBITMQ_CTL_DIST_PORT_MIN=$(free_port)
export RABBITMQ_CTL_DIST_PORT_MAX=\$RABBITMQ_CTL_DIST_PORT_MIN
export RABBITMQ_MNESIA_BASE='$dir/mnesia'
export RABBITMQ_LOG_BASE='$dir/log'
export RABBITMQ_LOGS='$dir/log/node.log'
export RABBITMQ_CONFIG_FILE='$dir/rabbitmq'
export RABBITMQ_ADVANCED_CONFIG_FILE='$dir/advanced.config'
export RABBITMQ_CONF_ENV_FILE='$dir/rabbitmq-env.conf'
export RABBITMQ_ENABLED_PLUGINS_FILE='$dir/enabled_plugins'
export RABBITMQ_PLUGINS_EXPAND_DIR='$dir/plugins-expand'
export RABBITMQ_PID_FILE='$dir/node.pid'
export RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}'
EOF
  # Large test bodies must not trip the disk alarm on a small scratch disk.
  printf 'disk_free_limit.absolute = 1MB\nloopback_users.guest = true\n' \
    >"$dir/rabbitmq.conf"
  tls_conf "$dir"
  [ -z "${BROKER_EXTRA_CONF:-}" ] || printf '%s\n' "$BROKER_EXTRA_CONF" >>"$dir/rabbitmq.conf"
  echo '[].' >"$dir/advanced.config"
  echo '[].' >"$dir/enabled_plugins"
  : >"$dir/rabbitmq-env.conf"
}

# Makes DIR/tls: a CA and a server certificate for DNS name localhost.
make_certs() {
  local t=$1/tls
  mkdir -p "$t"
  (
    cd "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -days 2 -subj /CN=hookd-test-ca -keyout ca.key -out ca.pem
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -subj /CN=localhost -keyout key.pem -out server.csr
    printf '%s\n' 'subjectAltName=DNS:localhost' 'basicConstraints=CA:FALSE' \
      'extendedKeyUsage=serverAuth' >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
      -days 2 -extfile server.ext -out cert.pem
  ) >"$t/openssl.log" 2>&1
}

# Appends the TLS listener to the node's settings when asked and possible.
tls_conf() {
  local dir=$1 port=${BROKER_TLS_PORT:-}
  [ -n "$port" ] || return 0
  if ! command -v openssl >/dev/null || ! make_certs "$dir"; then
    echo "broker.sh: no TLS listener (openssl missing or failed)" >&2
    rm -rf "$dir/tls"
    return 0
  fi
  cat >>"$dir/rabbitmq.conf" <<EOF
listeners.ssl.1 = 127.0.0.1:$port
ssl_options.cacertfile = $dir/tls/ca.pem
ssl_options.certfile = $dir/tls/cert.pem
ssl_options.keyfile = $dir/tls/key.pem
ssl_options.verify = verify_none
ssl_options.fail_if_no_peer_cert = false
EOF
}

log_tail() {
  local dir=$1
  echo "--- $dir/log (tail) ---" >&2
  tail -n 30 "$dir"/log/*.log "$dir/log/console.out" 2>/dev/null >&2 || true
}

# Leaves one watcher per DIR that runs "stop" after $BROKER_OWNER_PID ends.
watch_owner() {
  local dir=$1 port=$2 owner=${BROKER_OWNER_PID:-}
  [ -n "$owner" ] || return 0
  if [ -f "$dir/watcher.pid" ] && kill -0 "$(cat "$dir/watcher.pid")" 2>/dev/null; then
    return 0
  fi
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; "$2" stop "$3" "$4"' \
    _ "$owner" "$SELF" "$dir" "$port" >/dev/null 2>&1 </dev/null &
  echo $! >"$dir/watcher.pid"
}

start() {
  local dir=$1 port=$2 pid waited=0
  [ -x "$RMQ_BIN/rabbitmq-server" ] || { echo "rabbitmq-server not installed" >&2; exit 2; }
  if [ -f "$dir/server.pid" ] && kill -0 "$(cat "$dir/server.pid")" 2>/dev/null; then
    echo "a broker already runs for $dir (pid $(cat "$dir/server.pid"))" >&2
    exit 1
  fi
  write_env "$dir" "$port"
  # shellcheck disable=SC1091
  . "$dir/env"
  cd "$dir"
  setsid "$RMQ_BIN/rabbitmq-server" >"$dir/log/console.out" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$dir/server.pid"
  watch_owner "$dir" "$port"
  until amqp_ready "$port"; do
    if ! kill -0 "$pid" 2>/dev/null; then
      echo "rabbitmq-server exited during start" >&2
      log_tail "$dir"
      exit 1
    fi
    if [ "$waited" -ge $((START_TIMEOUT * 5)) ]; then
      echo "rabbitmq-server not ready on port $port after ${START_TIMEOUT}s" >&2
      log_tail "$dir"
      exit 1
    fi
    sleep 0.2
    waited=$((waited + 1))
  done
}

# Waits up to $2 tenths of a second for process $1 to end.
wait_gone() {
  local pid=$1 n=0
  while kill -0 "$pid" 2>/dev/null && [ "$n" -lt "$2" ]; do
    sleep 0.1
    n=$((n + 1))
  done
  ! kill -0 "$pid" 2>/dev/null
}

stop() {
  local dir=$1 pid
  [ -f "$dir/env" ] || return 0
  # shellcheck disable=SC1091
  . "$dir/env"
  if [ -f "$dir/server.pid" ]; then
    pid=$(cat "$dir/server.pid")
    # The start script passes SIGTERM on to the node, which shuts down
    # cleanly (closing client connections with connection.close). If it
    # has not within 30 s, SIGKILL its process group (setsid made it ours).
    # SIGCONT first, for a node a test has stopped to play a hung broker.
    kill -CONT -- "-$pid" 2>/dev/null || true
    if kill -TERM "$pid" 2>/dev/null && ! wait_gone "$pid" 300; then
      kill -KILL -- "-$pid" 2>/dev/null || true
      wait_gone "$pid" 50 || true
    fi
    # A start may have followed meanwhile: its pid file stays.
    [ "$(cat "$dir/server.pid" 2>/dev/null)" = "$pid" ] && rm -f "$dir/server.pid"
  fi
  # The node started this epmd on a port of its own; nothing else uses it.
  epmd -port "$ERL_EPMD_PORT" -kill >/dev/null 2>&1 || true
}

[ $# -eq 3 ] || usage
case $1 in
start) start "$2" "$3" ;;
stop) stop "$2" "$3" ;;
*) usage ;;
esac
