#!/usr/bin/env bash
# Redis, RabbitMQ (N independent nodes with the management plugin) and ZooKeeper on 127.0.0.1 for
# development and CI. Called by `cargo xtask services`; safe to run by hand. See docs/services.md.
#
#   services.sh up     [--only LIST] [--rabbit-nodes N] [--fresh]
#   services.sh down   [--only LIST]
#   services.sh status [--only LIST] [--rabbit-nodes N]
#   services.sh env            print the env file (what is running now)
#
# LIST is a comma-separated subset of redis,rabbitmq,zookeeper. Everything lives under
# .cache/services/<name>/ (config, data, logs, pid files). `up` installs missing Debian packages,
# starts what is not running yet, waits until each service really answers, and writes
# .cache/services/env (KEY=VALUE lines). `down` stops only processes whose PIDs `up` recorded.
set -Eeuo pipefail
trap 'echo "services: error: unexpected failure (line $LINENO: $BASH_COMMAND)" >&2' ERR

root="$(cd "$(dirname "$0")/.." && pwd)"
base="$root/.cache/services"
env_file="$base/env"

# Fixed ports, away from the defaults (6379, 5672/15672/25672, 2181) and from the kernel's
# ephemeral range (32768-60999) that tests binding port 0 use. RabbitMQ node N (1-9):
# AMQP 17000+N, management 17100+N, Erlang distribution 17200+N.
readonly REDIS_PORT=16379
readonly ZK_PORT=12181
readonly RABBIT_AMQP_BASE=17000 RABBIT_MGMT_BASE=17100 RABBIT_DIST_BASE=17200
readonly RABBIT_MAX_NODES=9
readonly RABBIT_USER=guest RABBIT_PASSWORD=guest # guest may log in from loopback only: that's us
readonly EPMD_PORT=4369

# Readiness and stop timeouts in seconds (overridable for slow machines).
readonly REDIS_TIMEOUT="${SERVICES_REDIS_TIMEOUT:-20}"
readonly RABBIT_TIMEOUT="${SERVICES_RABBIT_TIMEOUT:-120}"
readonly ZK_TIMEOUT="${SERVICES_ZK_TIMEOUT:-60}"
readonly STOP_TIMEOUT="${SERVICES_STOP_TIMEOUT:-30}"

readonly ZK_CLASSPATH=/etc/zookeeper/conf:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-simple.jar
readonly RABBIT_SERVER=/usr/lib/rabbitmq/bin/rabbitmq-server

log() { echo "services: $*" >&2; }
die() {
  echo "services: error: $*" >&2
  exit 1
}
usage_error() {
  echo "services: $*" >&2
  echo "usage: services.sh up|down|status|env [--only redis,rabbitmq,zookeeper] [--rabbit-nodes N] [--fresh]" >&2
  exit 2
}
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Arguments

command="${1:-}"
[ -n "$command" ] || usage_error "missing command"
shift
case "$command" in
  up | down | status | env) ;;
  help | -h | --help)
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *) usage_error "unknown command \`$command\`" ;;
esac

want_redis=1 want_rabbit=1 want_zk=1
rabbit_nodes=2 rabbit_nodes_given=0 fresh=0
while (($#)); do
  case "$1" in
    --only | --only=*)
      if [ "$1" = --only ]; then
        (($# >= 2)) || usage_error "--only needs a list"
        list="$2"
        shift
      else
        list="${1#--only=}"
      fi
      want_redis=0 want_rabbit=0 want_zk=0
      IFS=, read -ra names <<<"$list"
      ((${#names[@]})) || usage_error "--only needs a list"
      for name in "${names[@]}"; do
        case "$name" in
          redis) want_redis=1 ;;
          rabbitmq | rabbit) want_rabbit=1 ;;
          zookeeper | zk) want_zk=1 ;;
          *) usage_error "unknown service \`$name\` in --only (known: redis, rabbitmq, zookeeper)" ;;
        esac
      done
      ;;
    --rabbit-nodes | --rabbit-nodes=*)
      if [ "$1" = --rabbit-nodes ]; then
        (($# >= 2)) || usage_error "--rabbit-nodes needs a number"
        rabbit_nodes="$2"
        shift
      else
        rabbit_nodes="${1#--rabbit-nodes=}"
      fi
      [[ "$rabbit_nodes" =~ ^[1-9]$ ]] || usage_error "--rabbit-nodes must be 1..$RABBIT_MAX_NODES, got \`$rabbit_nodes\`"
      rabbit_nodes_given=1
      ;;
    --fresh) fresh=1 ;;
    *) usage_error "unknown option \`$1\`" ;;
  esac
  shift
done
[ "$command" = up ] || [ "$fresh" = 0 ] || usage_error "--fresh only goes with up"

# ---------------------------------------------------------------------------------------------
# Processes: a pid counts as ours only if it is alive and its command line still matches what
# we started (a recycled pid is never signalled).

# pid_alive PID MARKER: true when PID runs and its command line contains MARKER.
pid_alive() {
  local pid="$1" marker="$2" cmdline
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$marker"* ]]
}

# await_exec PID MARKER: waits (up to 5 s) until a process we just forked has exec'd what we
# started: until then its command line is still this script's, and `pid_alive` would take it for
# a dead or foreign process (seen with `up --only zookeeper`, which probes at once).
await_exec() {
  local i
  for i in $(seq 50); do
    kill -0 "$1" 2>/dev/null || return 0
    pid_alive "$1" "$2" && return 0
    sleep 0.1
  done
}

# pid_env_has PID VAR=VALUE: PID's environment holds exactly that variable.
pid_env_has() {
  local environ
  environ="$(tr '\0' '\n' <"/proc/$1/environ" 2>/dev/null)" || return 1
  grep -qxF "$2" <<<"$environ"
}

# read_pid FILE: the pid stored in FILE, or nothing.
read_pid() {
  local pid=""
  [ -f "$1" ] && read -r pid <"$1" 2>/dev/null || true
  [[ "$pid" =~ ^[0-9]+$ ]] && echo "$pid" || true
}

# port_listening PORT: something listens on 127.0.0.1:PORT (or on all addresses).
port_listening() {
  [ -n "$(ss -Hltn "sport = :$1" 2>/dev/null)" ]
}

# pid_running PID: alive and not a zombie waiting to be reaped.
pid_running() {
  local stat
  kill -0 "$1" 2>/dev/null || return 1
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [ "${stat%% *}" != Z ]
}

# stop_pids NAME TIMEOUT PID...: SIGTERM, wait up to TIMEOUT seconds, then SIGKILL what is left
# and wait for it to go. The caller checked that each pid is ours.
stop_pids() {
  local name="$1" timeout="$2" pid deadline left killed=0
  shift 2
  (($#)) || return 0
  kill -TERM "$@" 2>/dev/null || true
  deadline=$(($(date +%s) + timeout))
  while :; do
    left=()
    for pid in "$@"; do
      if pid_running "$pid"; then left+=("$pid"); fi
    done
    ((${#left[@]})) || return 0
    if (($(date +%s) >= deadline)); then
      if ((killed)); then
        log "$name: pids ${left[*]} survive SIGKILL"
        return 1
      fi
      log "$name: still running after ${timeout} s, sending SIGKILL to ${left[*]}"
      kill -KILL "${left[@]}" 2>/dev/null || true
      killed=1
      deadline=$(($(date +%s) + 5))
    fi
    sleep 0.2
  done
}

# ---------------------------------------------------------------------------------------------
# Packages

ensure_packages() {
  local packages=(curl) missing=() pkg
  ((want_redis)) && packages+=(redis-server)
  ((want_rabbit)) && packages+=(rabbitmq-server)
  ((want_zk)) && packages+=(zookeeper)
  for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
  done
  ((${#missing[@]})) || return 0
  local start sudo_cmd=()
  start="$(now)"
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  log "installing ${missing[*]} (Debian packages; policy-rc.d keeps them from starting themselves)"
  "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get -o DPkg::Lock::Timeout=600 install -y -qq \
    --no-install-recommends "${missing[@]}" >"$base/apt.log" 2>&1 ||
    die "apt-get install ${missing[*]} failed; log: $base/apt.log"
  log "installed ${missing[*]} in $(elapsed "$start") s"
}

# ---------------------------------------------------------------------------------------------
# Readiness probes (each answers in at most ~2 s)

redis_ready() {
  [ "$(timeout 2 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]
}

# rabbit_ready N: the management API's aliveness test on vhost / passes (declares a queue,
# publishes and consumes a message).
rabbit_ready() {
  local answer
  answer="$(curl -fsS -m 2 -u "$RABBIT_USER:$RABBIT_PASSWORD" \
    "http://127.0.0.1:$(rabbit_mgmt_port "$1")/api/aliveness-test/%2F" 2>/dev/null)" || return 1
  [[ "$answer" == *'"status":"ok"'* ]]
}

# ZooKeeper answers `ruok` before it serves; `srvr` prints `Mode:` only once it does.
zk_ready() {
  local answer
  # shellcheck disable=SC2016 # $1 expands in the inner shell
  answer="$(timeout 2 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" && printf srvr >&3 && cat <&3' _ "$ZK_PORT" \
    2>/dev/null)" || true
  [[ "$answer" == *$'\nMode: '* || "$answer" == 'Mode: '* ]]
}

# wait_ready NAME TIMEOUT LOG PROBE PIDFUNC [OUTPUT]: polls PROBE until it passes; fails early
# when the process behind PIDFUNC died. Errors name the service and its log file (and show the
# tail of OUTPUT, the captured stdout/stderr, too when given).
wait_ready() {
  local name="$1" timeout="$2" logfile="$3" probe="$4" pidfunc="$5" output="${6:-}" start deadline
  start="$(now)"
  deadline=$(($(date +%s) + timeout))
  while ! $probe; do
    if [ -z "$($pidfunc)" ]; then
      show_log "$logfile"
      [ -z "$output" ] || show_log "$output"
      die "$name exited while starting; log: $logfile${output:+ (output: $output)}"
    fi
    if (($(date +%s) >= deadline)); then
      show_log "$logfile"
      [ -z "$output" ] || show_log "$output"
      die "$name not ready after ${timeout} s; log: $logfile${output:+ (output: $output)} (stop what runs with: cargo xtask services down)"
    fi
    sleep 0.2
  done
  log "$name ready (${started_at:+$(elapsed "$started_at") s after start, }$(elapsed "$start") s of waiting here)"
}

show_log() {
  [ -f "$1" ] || return 0
  echo "---- last lines of $1 ----" >&2
  tail -n 25 "$1" >&2
  echo "----" >&2
}

# ---------------------------------------------------------------------------------------------
# Redis: one instance, no persistence.

redis_dir="$base/redis"
redis_log="$redis_dir/redis.log"
redis_pid() {
  local pid
  pid="$(read_pid "$redis_dir/redis.pid")"
  [ -n "$pid" ] && pid_alive "$pid" "redis-server" && pid_alive "$pid" ":$REDIS_PORT" && echo "$pid" || true
}

redis_start() {
  mkdir -p "$redis_dir/data"
  rm -f "$redis_dir/redis.pid"
  redis-server --bind 127.0.0.1 --port "$REDIS_PORT" --save '' --appendonly no \
    --daemonize yes --pidfile "$redis_dir/redis.pid" --dir "$redis_dir/data" \
    --logfile "$redis_log" 9>&- || die "redis-server did not start; log: $redis_log"
  # --daemonize returns before the pid file exists.
  local i
  for i in $(seq 50); do
    [ -n "$(redis_pid)" ] && return 0
    sleep 0.1
  done
  show_log "$redis_log"
  die "redis-server wrote no pid file; log: $redis_log"
}

# redis_stop_pids: appends the pid to stop to the caller's `stop` array.
redis_stop_pids() {
  local pid
  pid="$(redis_pid)"
  [ -n "$pid" ] || return 0
  log "stopping redis (pid $pid)"
  stop+=("$pid")
}

# ---------------------------------------------------------------------------------------------
# RabbitMQ: node N is rabbitN@localhost in .cache/services/rabbitmqN/. It runs as the current
# user through /usr/lib/rabbitmq/bin/rabbitmq-server (the /usr/sbin wrapper switches user). Two
# pid files: launcher.pid (the rabbitmq-server shell, leader of its own session, written by us at
# once) and rabbit.pid (the Erlang VM, written by RabbitMQ while booting, deleted while stopping).

rabbit_dir() { echo "$base/rabbitmq$1"; }
rabbit_node() { echo "rabbit$1@localhost"; }
rabbit_amqp_port() { echo $((RABBIT_AMQP_BASE + $1)); }
rabbit_mgmt_port() { echo $((RABBIT_MGMT_BASE + $1)); }
rabbit_dist_port() { echo $((RABBIT_DIST_BASE + $1)); }
rabbit_log() { echo "$(rabbit_dir "$1")/log/$(rabbit_node "$1").log"; }

# rabbit_vm_pid N: the Erlang VM of node N, if ours and alive.
rabbit_vm_pid() {
  local pid
  pid="$(read_pid "$(rabbit_dir "$1")/rabbit.pid")"
  # The VM's command line names its home folder (the node name travels in the environment).
  [ -n "$pid" ] && pid_alive "$pid" "-home $(rabbit_dir "$1") " && echo "$pid" || true
}

# rabbit_launcher_pid N: the rabbitmq-server shell of node N, if ours and alive.
rabbit_launcher_pid() {
  local pid
  pid="$(read_pid "$(rabbit_dir "$1")/launcher.pid")"
  [ -n "$pid" ] && pid_alive "$pid" "$RABBIT_SERVER" && pid_env_has "$pid" "HOME=$(rabbit_dir "$1")" &&
    echo "$pid" || true
}

# rabbit_group_pids N: processes still in node N's process group (the launcher's pid, as it
# leads its own session) and carrying its environment: finds a VM whose launcher died before
# the VM wrote rabbit.pid.
rabbit_group_pids() {
  local leader pid pgid listing
  leader="$(read_pid "$(rabbit_dir "$1")/launcher.pid")"
  [ -n "$leader" ] || return 0
  listing="$(ps -eo pid=,pgid=)" || return 0
  while read -r pid pgid; do
    [ "$pgid" = "$leader" ] && pid_env_has "$pid" "HOME=$(rabbit_dir "$1")" && echo "$pid"
  done <<<"$listing"
  return 0
}

# rabbit_pid N: the main pid of node N (VM if known, else launcher), or nothing.
rabbit_pid() {
  local pid
  pid="$(rabbit_vm_pid "$1")"
  [ -n "$pid" ] || pid="$(rabbit_launcher_pid "$1")"
  [ -n "$pid" ] || pid="$(rabbit_group_pids "$1" | head -n1)"
  echo "$pid"
}

# The node numbers that have a folder (started at least once).
rabbit_known_nodes() {
  local d
  for d in "$base"/rabbitmq[1-9]; do
    [ -d "$d" ] && echo "${d##*rabbitmq}"
  done
  return 0
}

# The Erlang cookie: the one the packaged CLI uses (/var/lib/rabbitmq, read as root), so plain
# `rabbitmqctl -n rabbitN@localhost ...` works; otherwise a cookie of our own.
rabbit_cookie() {
  local cookie_file="$base/rabbitmq.cookie"
  if [ -r /var/lib/rabbitmq/.erlang.cookie ]; then
    cat /var/lib/rabbitmq/.erlang.cookie
  else
    [ -s "$cookie_file" ] || (umask 077 && head -c 48 /dev/urandom | base64 | tr -dc A-Za-z0-9 >"$cookie_file")
    cat "$cookie_file"
  fi
}

rabbit_start() {
  local n="$1" d amqp mgmt dist node
  d="$(rabbit_dir "$n")"
  amqp="$(rabbit_amqp_port "$n")"
  mgmt="$(rabbit_mgmt_port "$n")"
  dist="$(rabbit_dist_port "$n")"
  node="$(rabbit_node "$n")"
  mkdir -p "$d/mnesia" "$d/log"
  cat >"$d/rabbitmq.conf" <<EOF
# Written by scripts/services.sh: node $node, loopback only.
listeners.tcp.default = 127.0.0.1:$amqp
management.tcp.ip = 127.0.0.1
management.tcp.port = $mgmt
loopback_users.guest = true
EOF
  echo '[rabbitmq_management].' >"$d/enabled_plugins"
  rm -f "$d/.erlang.cookie"
  (umask 077 && rabbit_cookie >"$d/.erlang.cookie")
  chmod 400 "$d/.erlang.cookie"
  rm -f "$d/rabbit.pid" "$d/launcher.pid"
  (
    cd "$d"
    export HOME="$d" \
      RABBITMQ_NODENAME="$node" \
      RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 \
      RABBITMQ_NODE_PORT="$amqp" \
      RABBITMQ_DIST_PORT="$dist" \
      RABBITMQ_CONFIG_FILE="$d/rabbitmq.conf" \
      RABBITMQ_ENABLED_PLUGINS_FILE="$d/enabled_plugins" \
      RABBITMQ_MNESIA_BASE="$d/mnesia" \
      RABBITMQ_LOG_BASE="$d/log" \
      RABBITMQ_PID_FILE="$d/rabbit.pid" \
      ERL_EPMD_ADDRESS=127.0.0.1 \
      ERL_EPMD_PORT="$EPMD_PORT" \
      RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}"
    # Not a process group leader here, so setsid execs in place: $! is the server's pid.
    exec 9>&- # the lock stays with this script, not with the server
    exec setsid "$RABBIT_SERVER" </dev/null >"$d/stdout.log" 2>&1
  ) &
  echo $! >"$d/launcher.pid"
}

# rabbit_stop_pids N: appends node N's pids to the caller's `stop` array. Both are read before
# anything is signalled because RabbitMQ deletes its pid file while stopping.
rabbit_stop_pids() {
  local vm launcher others=() pid
  vm="$(rabbit_vm_pid "$1")"
  launcher="$(rabbit_launcher_pid "$1")"
  for pid in $(rabbit_group_pids "$1"); do
    [ "$pid" = "$vm" ] || [ "$pid" = "$launcher" ] || others+=("$pid")
  done
  [ -n "$vm$launcher${others[*]}" ] || return 0
  log "stopping $(rabbit_node "$1") (vm pid ${vm:--}, launcher pid ${launcher:--}${others[*]:+, in its group ${others[*]}})"
  [ -z "$vm" ] || stop+=("$vm")
  [ -z "$launcher" ] || stop+=("$launcher")
  stop+=("${others[@]}")
}

# epmd: started by us (bound to 127.0.0.1) only when none runs; its pid is recorded in
# epmd/epmd.pid, and only then does `down` stop it.
epmd_dir="$base/epmd"
epmd_pid() {
  local pid
  pid="$(read_pid "$epmd_dir/epmd.pid")"
  [ -n "$pid" ] && pid_alive "$pid" epmd && echo "$pid" || true
}

epmd_ensure() {
  [ -n "$(epmd_pid)" ] && return 0
  rm -f "$epmd_dir/epmd.pid"
  if port_listening "$EPMD_PORT"; then
    log "an epmd we did not start listens on port $EPMD_PORT: using it, \`down\` will leave it alone"
    return 0
  fi
  mkdir -p "$epmd_dir"
  ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT" setsid epmd -daemon </dev/null >"$epmd_dir/epmd.log" 2>&1 9>&- ||
    die "epmd did not start; log: $epmd_dir/epmd.log"
  local i pid
  for i in $(seq 50); do
    pid="$(ss -Hltnp "sport = :$EPMD_PORT" 2>/dev/null)" || true
    pid="$(grep -o 'pid=[0-9]*' <<<"$pid" | head -n1 | cut -d= -f2)" || true
    if [ -n "$pid" ] && pid_alive "$pid" epmd; then
      echo "$pid" >"$epmd_dir/epmd.pid"
      return 0
    fi
    sleep 0.1
  done
  die "epmd started but does not listen on 127.0.0.1:$EPMD_PORT; log: $epmd_dir/epmd.log"
}

epmd_stop() {
  local pid
  pid="$(epmd_pid)"
  if [ -z "$pid" ]; then
    rm -f "$epmd_dir/epmd.pid"
    return 0
  fi
  log "stopping epmd (pid $pid)"
  if ! ERL_EPMD_ADDRESS=127.0.0.1 ERL_EPMD_PORT="$EPMD_PORT" epmd -kill >/dev/null 2>&1; then
    log "epmd refused to stop (other Erlang nodes still registered?): left running, pid $pid"
    return 0
  fi
  stop_pids epmd 5 "$pid"
  rm -f "$epmd_dir/epmd.pid"
}

# ---------------------------------------------------------------------------------------------
# ZooKeeper: standalone, four-letter words ruok/srvr/stat/mntr allowed, no admin server.

zk_dir="$base/zookeeper"
zk_log="$zk_dir/zookeeper.log"
zk_pid() {
  local pid
  pid="$(read_pid "$zk_dir/zookeeper.pid")"
  [ -n "$pid" ] && pid_alive "$pid" "$zk_dir/zoo.cfg" && echo "$pid" || true
}

zk_start() {
  mkdir -p "$zk_dir/data"
  cat >"$zk_dir/zoo.cfg" <<EOF
# Written by scripts/services.sh: standalone, loopback only.
tickTime=2000
dataDir=$zk_dir/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=200
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat,mntr
autopurge.snapRetainCount=3
autopurge.purgeInterval=1
EOF
  rm -f "$zk_dir/zookeeper.pid"
  (
    cd "$zk_dir"
    exec 9>&- # the lock stays with this script, not with the server
    exec setsid java -Xms64m -Xmx512m -XX:+UseSerialGC -cp "$ZK_CLASSPATH" \
      org.apache.zookeeper.server.quorum.QuorumPeerMain "$zk_dir/zoo.cfg" </dev/null >"$zk_log" 2>&1
  ) &
  echo $! >"$zk_dir/zookeeper.pid"
  await_exec $! "$zk_dir/zoo.cfg"
}

# zk_stop_pids: appends the pid to stop to the caller's `stop` array.
zk_stop_pids() {
  local pid
  pid="$(zk_pid)"
  [ -n "$pid" ] || return 0
  log "stopping zookeeper (pid $pid)"
  stop+=("$pid")
}

# ---------------------------------------------------------------------------------------------
# The env file: KEY=VALUE lines for what runs now (values hold no spaces or quotes, so the file
# can also be sourced by a shell).

write_env() {
  local tmp="$env_file.tmp" n ids=()
  mkdir -p "$base"
  {
    echo "# Written by scripts/services.sh: services running on 127.0.0.1 now. See docs/services.md."
    echo "SERVICES_DIR=$base"
    if [ -n "$(redis_pid)" ]; then
      echo "REDIS_URL=redis://127.0.0.1:$REDIS_PORT/"
      echo "REDIS_ADDR=127.0.0.1:$REDIS_PORT"
      echo "REDIS_LOG=$redis_log"
    fi
    for n in $(rabbit_known_nodes); do
      [ -n "$(rabbit_pid "$n")" ] || continue
      ids+=("$n")
      echo "RABBITMQ_${n}_NODE=$(rabbit_node "$n")"
      echo "RABBITMQ_${n}_AMQP_URL=amqp://$RABBIT_USER:$RABBIT_PASSWORD@127.0.0.1:$(rabbit_amqp_port "$n")/%2f"
      echo "RABBITMQ_${n}_AMQP_ADDR=127.0.0.1:$(rabbit_amqp_port "$n")"
      echo "RABBITMQ_${n}_MGMT_URL=http://127.0.0.1:$(rabbit_mgmt_port "$n")"
      echo "RABBITMQ_${n}_MGMT_USER=$RABBIT_USER"
      echo "RABBITMQ_${n}_MGMT_PASSWORD=$RABBIT_PASSWORD"
      echo "RABBITMQ_${n}_DIST_PORT=$(rabbit_dist_port "$n")"
      echo "RABBITMQ_${n}_LOG=$(rabbit_log "$n")"
    done
    if ((${#ids[@]})); then
      echo "RABBITMQ_NODES=${#ids[@]}"
      echo "RABBITMQ_NODE_IDS=$(
        IFS=,
        echo "${ids[*]}"
      )"
    fi
    if [ -n "$(zk_pid)" ]; then
      echo "ZOOKEEPER_ADDR=127.0.0.1:$ZK_PORT"
      echo "ZOOKEEPER_LOG=$zk_log"
    fi
  } >"$tmp"
  mv "$tmp" "$env_file"
}

# ---------------------------------------------------------------------------------------------
# Commands

# check_port NAME PORT: fails when something we did not start holds PORT.
check_port() {
  port_listening "$2" && die "$1: port 127.0.0.1:$2 is taken by another process (see: ss -ltnp 'sport = :$2')"
  return 0
}

cmd_up() {
  local start n started=()
  start="$(now)"
  mkdir -p "$base"
  ensure_packages
  started_at="$(now)"

  if ((want_redis)); then
    if [ -n "$(redis_pid)" ]; then
      log "redis already running (pid $(redis_pid))"
    else
      check_port redis "$REDIS_PORT"
      ((fresh)) && rm -rf "$redis_dir/data"
      redis_start
      started+=(redis)
    fi
  fi
  if ((want_zk)); then
    if [ -n "$(zk_pid)" ]; then
      log "zookeeper already running (pid $(zk_pid))"
    else
      check_port zookeeper "$ZK_PORT"
      ((fresh)) && rm -rf "$zk_dir/data"
      zk_start
      started+=(zookeeper)
    fi
  fi
  if ((want_rabbit)); then
    local to_start=()
    for n in $(seq "$rabbit_nodes"); do
      if [ -n "$(rabbit_pid "$n")" ]; then
        log "$(rabbit_node "$n") already running (pid $(rabbit_pid "$n"))"
      else
        check_port "$(rabbit_node "$n")" "$(rabbit_amqp_port "$n")"
        check_port "$(rabbit_node "$n")" "$(rabbit_mgmt_port "$n")"
        check_port "$(rabbit_node "$n")" "$(rabbit_dist_port "$n")"
        to_start+=("$n")
      fi
    done
    if ((${#to_start[@]})); then
      epmd_ensure
      for n in "${to_start[@]}"; do
        ((fresh)) && rm -rf "$(rabbit_dir "$n")/mnesia"
        rabbit_start "$n"
        started+=("$(rabbit_node "$n")")
      done
    fi
  fi

  # Readiness: every selected service, whether started now or before.
  ((want_redis)) && wait_ready redis "$REDIS_TIMEOUT" "$redis_log" redis_ready redis_pid
  ((want_zk)) && wait_ready zookeeper "$ZK_TIMEOUT" "$zk_log" zk_ready zk_pid
  if ((want_rabbit)); then
    for n in $(seq "$rabbit_nodes"); do
      # shellcheck disable=SC2329 # called indirectly by wait_ready
      eval "probe_rabbit_$n() { rabbit_ready $n; }; pid_rabbit_$n() { rabbit_pid $n; }"
      wait_ready "$(rabbit_node "$n")" "$RABBIT_TIMEOUT" "$(rabbit_log "$n")" "probe_rabbit_$n" "pid_rabbit_$n" \
        "$(rabbit_dir "$n")/stdout.log"
    done
  fi

  write_env
  if ((${#started[@]})); then
    log "started ${started[*]}: ready in $(elapsed "$started_at") s (total $(elapsed "$start") s)"
  else
    log "nothing to start: everything asked for already runs and is ready"
  fi
  log "env file: $env_file"
  grep -v '^#' "$env_file"
}

cmd_down() {
  local start n stop=() still=0
  start="$(now)"
  # Every pid is read (and checked to be ours) before anything is signalled; then all get
  # SIGTERM together, and SIGKILL after the timeout.
  if ((want_rabbit)); then
    for n in $(rabbit_known_nodes); do
      rabbit_stop_pids "$n"
    done
  fi
  if ((want_zk)); then zk_stop_pids; fi
  if ((want_redis)); then redis_stop_pids; fi
  if ((${#stop[@]})); then
    stop_pids stop "$STOP_TIMEOUT" "${stop[@]}"
  else
    log "nothing of ours runs"
  fi
  # Our pid files only; data and logs stay for the next `up` and for reading.
  if ((want_rabbit)); then
    for n in $(rabbit_known_nodes); do
      rm -f "$(rabbit_dir "$n")/rabbit.pid" "$(rabbit_dir "$n")/launcher.pid"
    done
  fi
  if ((want_zk)); then rm -f "$zk_dir/zookeeper.pid"; fi
  if ((want_redis)); then rm -f "$redis_dir/redis.pid"; fi
  # epmd last, and only when none of our nodes still needs it.
  for n in $(rabbit_known_nodes); do
    [ -z "$(rabbit_pid "$n")" ] || still=1
  done
  ((still)) || epmd_stop
  write_env
  log "down in $(elapsed "$start") s"
}

cmd_status() {
  local n nodes=() state pid ready
  printf '%-20s %-8s %-8s %-6s %s\n' SERVICE STATE PID READY PORTS
  if ((want_redis)); then
    pid="$(redis_pid)"
    status_line redis "$pid" redis_ready "$REDIS_PORT" "$redis_log"
  fi
  if ((want_rabbit)); then
    mapfile -t nodes < <(
      {
        rabbit_known_nodes
        ((rabbit_nodes_given)) && seq "$rabbit_nodes"
        rabbit_known_nodes | grep -q . || seq "$rabbit_nodes"
      } | sort -un
    )
    for n in "${nodes[@]}"; do
      pid="$(rabbit_pid "$n")"
      # shellcheck disable=SC2329 # called indirectly by status_line
      eval "probe_rabbit_$n() { rabbit_ready $n; }"
      status_line "$(rabbit_node "$n")" "$pid" "probe_rabbit_$n" \
        "amqp $(rabbit_amqp_port "$n"), mgmt $(rabbit_mgmt_port "$n"), dist $(rabbit_dist_port "$n")" \
        "$(rabbit_log "$n")"
    done
    pid="$(epmd_pid)"
    if [ -n "$pid" ]; then
      printf '%-20s %-8s %-8s %-6s %s\n' epmd running "$pid" - "$EPMD_PORT (started by us)"
    elif port_listening "$EPMD_PORT"; then
      printf '%-20s %-8s %-8s %-6s %s\n' epmd running - - "$EPMD_PORT (not ours)"
    fi
  fi
  if ((want_zk)); then
    pid="$(zk_pid)"
    status_line zookeeper "$pid" zk_ready "$ZK_PORT" "$zk_log"
  fi
  [ -f "$env_file" ] && echo "env file: $env_file"
  return 0
}

# status_line NAME PID PROBE PORTS LOG
status_line() {
  local name="$1" pid="$2" probe="$3" ports="$4" state ready
  if [ -n "$pid" ]; then
    state=running
    if $probe; then ready=yes; else ready=no; fi
  else
    state=stopped pid=- ready=no
  fi
  printf '%-20s %-8s %-8s %-6s %s\n' "$name" "$state" "$pid" "$ready" "$ports"
}

# One command at a time: concurrent `up`/`down` would race on pid files.
mkdir -p "$base"
exec 9>"$base/.lock"
flock -w 600 9 || die "another services.sh holds $base/.lock"

case "$command" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env)
    write_env
    grep -v '^#' "$env_file"
    ;;
esac
