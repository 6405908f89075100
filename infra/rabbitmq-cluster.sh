#!/usr/bin/env bash
# A local three-node RabbitMQ cluster, for trying quorum queues and broker failover on one machine (infra/CLUSTER.md).
# The nodes run the installed RabbitMQ as the current user, beside any RabbitMQ already running (such as the system
# service on 5672, which this script never touches), under their own node names, ports and data directory.
#
#   bash infra/rabbitmq-cluster.sh start    starts the nodes that are not running, joins them into one cluster,
#                                           and prints the URL list for RABBITMQ_URL (the only line on stdout)
#   bash infra/rabbitmq-cluster.sh status   each node, the cluster's running members, the URL list (exit 0: all run)
#   bash infra/rabbitmq-cluster.sh stop     stops every node (their data stays: `start` brings the same cluster back)
#   bash infra/rabbitmq-cluster.sh clean    stops every node and removes the data directory
#   bash infra/rabbitmq-cluster.sh ctl N …  rabbitmqctl against node N (1-3), e.g. `ctl 1 list_queues name leader`
#
# So: export RABBITMQ_URL="$(bash infra/rabbitmq-cluster.sh start)"
#
# Env (all optional):
#   RABBITMQ_CLUSTER_NAME     node name stem (default media: media1@localhost, media2@localhost, media3@localhost)
#   RABBITMQ_CLUSTER_PORT     AMQP port of node 1 (default 5681); nodes take PORT, PORT+1, PORT+2, and Erlang
#                             distribution ports 20000 above those
#   RABBITMQ_CLUSTER_DIR      data, logs and pid files (default ${TMPDIR:-/tmp}/rabbitmq-cluster-<name>)
#   RABBITMQ_CLUSTER_TIMEOUT  seconds to wait for a node to start or stop (default 120)
#   RABBITMQ_BIN_DIR          where rabbitmq-server and rabbitmqctl are (found by default)
#
# Start and stop are idempotent: running nodes are left alone, members already joined are not joined again.
set -euo pipefail

NAME="${RABBITMQ_CLUSTER_NAME:-media}"
PORT="${RABBITMQ_CLUSTER_PORT:-5681}"
DIR="${RABBITMQ_CLUSTER_DIR:-${TMPDIR:-/tmp}/rabbitmq-cluster-$NAME}"
TIMEOUT="${RABBITMQ_CLUSTER_TIMEOUT:-120}"
NODES=(1 2 3)

say() { echo "rabbitmq-cluster: $*" >&2; }
fail() {
  say "$*"
  exit 1
}

[[ "$NAME" =~ ^[a-z][a-z0-9_-]*$ ]] || fail "RABBITMQ_CLUSTER_NAME must be lowercase letters, digits, - or _ (got $NAME)"
[[ "$PORT" =~ ^[0-9]+$ ]] && ((PORT >= 1024 && PORT <= 45530)) || fail "RABBITMQ_CLUSTER_PORT must be a port from 1024 to 45530 (got $PORT)"

# Debian's /usr/sbin/rabbitmqctl switches to the `rabbitmq` user, and so to that user's Erlang cookie: these nodes run
# as the current user with ~/.erlang.cookie, so call the scripts the wrappers call.
if [ -z "${RABBITMQ_BIN_DIR:-}" ]; then
  if [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    RABBITMQ_BIN_DIR=/usr/lib/rabbitmq/bin
  elif command -v rabbitmq-server >/dev/null; then
    RABBITMQ_BIN_DIR="$(dirname "$(command -v rabbitmq-server)")"
  else
    fail 'RabbitMQ is not installed (Debian: apt-get install rabbitmq-server), or set RABBITMQ_BIN_DIR'
  fi
fi

node() { echo "$NAME$1@localhost"; }
amqp_port() { echo $((PORT + $1 - 1)); }
node_dir() { echo "$DIR/node$1"; }
ctl() {
  local i="$1"
  shift
  "$RABBITMQ_BIN_DIR/rabbitmqctl" -n "$(node "$i")" "$@"
}
url_list() {
  local urls=() i
  for i in "$@"; do urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$i")"); done
  (IFS=,; echo "${urls[*]}")
}

# The Erlang process of node i, if it runs (its pid file names it and the process is alive).
node_pid() {
  local file pid
  file="$(node_dir "$1")/pid"
  [ -f "$file" ] || return 1
  pid="$(cat "$file")"
  [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

# Runs a command showing its output only when it fails (join_cluster logs feature-flag warnings that are no news).
quiet() {
  local out
  out="$("$@" 2>&1)" && return
  echo "$out" >&2
  return 1
}

# Why a node did not come up: the end of its log.
show_log() {
  local log
  log="$(node_dir "$1")/log/$(node "$1").log"
  [ -f "$log" ] && tail -n 20 "$log" >&2 || true
}

# Nodes share one Erlang cookie, the user's; Erlang makes one on a node's first start, but three nodes starting at
# once would race to write it.
ensure_cookie() {
  local cookie="$HOME/.erlang.cookie"
  [ -f "$cookie" ] && return
  say "creating $cookie (the Erlang cookie the nodes and rabbitmqctl share)"
  # No pipe into `head`: under pipefail, tr's SIGPIPE when head has its 20 letters would fail the script (exit 141).
  local letters
  letters="$(LC_ALL=C tr -dc 'A-Z' < <(head -c 4096 /dev/urandom))"
  (umask 077 && printf '%s' "${letters:0:20}" >"$cookie")
  chmod 400 "$cookie"
}

write_config() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  mkdir -p "$dir"
  # An empty plugin list: no management plugin (its HTTP listener would need a port per node too).
  echo '[].' >"$dir/enabled_plugins"
  # Read instead of /etc/rabbitmq/rabbitmq-env.conf, which belongs to the system node (its NODENAME, its flags).
  : >"$dir/rabbitmq-env.conf"
  cat >"$dir/rabbitmq.conf" <<EOF
# Node $i of the local cluster (written by infra/rabbitmq-cluster.sh; see infra/rabbitmq/rabbitmq.conf for why each setting).
listeners.tcp.1 = 127.0.0.1:$(amqp_port "$i")
consumer_timeout = 1800000
heartbeat = 60
# A node cut off from the majority stops serving rather than diverging (the usual choice for three nodes).
cluster_partition_handling = pause_minority
log.console = false
log.file.level = info
EOF
}

start_node() {
  local i="$1" dir
  dir="$(node_dir "$i")"
  write_config "$i"
  say "starting $(node "$i") on port $(amqp_port "$i")"
  env RABBITMQ_NODENAME="$(node "$i")" \
    RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
    RABBITMQ_NODE_PORT="$(amqp_port "$i")" \
    RABBITMQ_DIST_PORT="$(($(amqp_port "$i") + 20000))" \
    RABBITMQ_MNESIA_BASE="$dir/mnesia" \
    RABBITMQ_LOG_BASE="$dir/log" \
    RABBITMQ_PID_FILE="$dir/pid" \
    RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins" \
    RABBITMQ_CONFIG_FILE="$dir/rabbitmq.conf" \
    RABBITMQ_CONFIG_FILES="$dir/conf.d" \
    RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config" \
    RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf" \
    ERL_EPMD_ADDRESS=127.0.0.1 \
    RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS='-kernel inet_dist_use_interface {127,0,0,1}' \
    "$RABBITMQ_BIN_DIR/rabbitmq-server" -detached
}

# Waits (to the deadline) for node i's pid file, its Erlang distribution and the rabbit application; fails early
# if the process exits.
await_node() {
  local i="$1"
  if ! ctl "$i" -q wait "$(node_dir "$i")/pid" --timeout "$TIMEOUT" >/dev/null || ! ctl "$i" -q await_startup --timeout "$TIMEOUT" >/dev/null; then
    say "$(node "$i") did not start within ${TIMEOUT} s; the end of its log:"
    show_log "$i"
    exit 1
  fi
}

# Whether node i counts node 1 among its cluster's members.
joined() {
  [ "$(ctl "$1" -q eval "lists:member('$(node 1)', rabbit_nodes:all()).")" = true ]
}

cmd_start() {
  ensure_cookie
  # RabbitMQ reserves file handles for every quorum queue: give the nodes as many as the user may have.
  ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
  local files
  files="$(ulimit -n)"
  [ "$files" = unlimited ] || ((files >= 4096)) || say "warning: only $files open files; a node stops accepting connections past ~$((files / 3)) quorum queues"
  mkdir -p "$DIR"
  local i
  # All at once: nodes restarted from earlier data wait for their peers (on two cores this also saves ~10 s).
  for i in "${NODES[@]}"; do
    if node_pid "$i" >/dev/null; then
      say "$(node "$i") is already running"
    else
      start_node "$i"
    fi
  done
  for i in "${NODES[@]}"; do await_node "$i"; done
  for i in "${NODES[@]:1}"; do
    joined "$i" && continue
    say "joining $(node "$i") to $(node 1)"
    # A fresh node is reset first: join_cluster wants a node without data of its own.
    quiet ctl "$i" -q stop_app
    quiet ctl "$i" -q reset
    quiet ctl "$i" -q join_cluster "$(node 1)"
    quiet ctl "$i" -q start_app
    await_node "$i"
  done
  say "running: $(node 1), $(node 2), $(node 3) (data in $DIR)"
  url_list "${NODES[@]}"
}

cmd_stop() {
  local i pids=() pid
  # In parallel: a node stopped last waits for nothing, and each stop takes seconds.
  for i in "${NODES[@]}"; do
    pid="$(node_pid "$i")" || continue
    say "stopping $(node "$i") (pid $pid)"
    (ctl "$i" -q stop "$(node_dir "$i")/pid" --timeout "$TIMEOUT" >/dev/null 2>&1 || kill -KILL "$pid" 2>/dev/null || true) &
    pids+=($!)
  done
  for pid in "${pids[@]}"; do wait "$pid"; done
  for i in "${NODES[@]}"; do
    if pid="$(node_pid "$i")"; then
      say "$(node "$i") is still running (pid $pid) after stop; killing it"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
}

cmd_status() {
  local i pid running=()
  for i in "${NODES[@]}"; do
    if pid="$(node_pid "$i")" && ctl "$i" -q await_startup --timeout 5 >/dev/null 2>&1; then
      echo "$(node "$i")  port $(amqp_port "$i")  running (pid $pid)"
      running+=("$i")
    elif [ -n "${pid:-}" ]; then
      echo "$(node "$i")  port $(amqp_port "$i")  starting or paused (pid $pid)"
    else
      echo "$(node "$i")  port $(amqp_port "$i")  stopped"
    fi
    pid=''
  done
  if [ ${#running[@]} -gt 0 ]; then
    echo "cluster members running: $(ctl "${running[0]}" -q eval 'rabbit_nodes:all_running().' | tr -d '\n ')"
    echo "RABBITMQ_URL=$(url_list "${running[@]}")"
  fi
  [ ${#running[@]} -eq ${#NODES[@]} ]
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  clean)
    cmd_stop
    rm -rf "$DIR"
    ;;
  ctl)
    [[ "${2:-}" =~ ^[123]$ ]] || fail 'usage: rabbitmq-cluster.sh ctl <1|2|3> <rabbitmqctl arguments…>'
    i="$2"
    shift 2
    ctl "$i" "$@"
    ;;
  *)
    echo 'usage: rabbitmq-cluster.sh start | stop | status | clean | ctl <1|2|3> <args…>' >&2
    exit 2
    ;;
esac
