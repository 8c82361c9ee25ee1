#!/usr/bin/env bash
# The one-machine example cluster of docs/deployment.md, on the services of
# `cargo xtask services up` (Redis 16379, ZooKeeper 12181, RabbitMQ 17001/17002).
# Starts two rmqkeepers, two msgbus and two comet nodes in the background, writes their PIDs to
# /tmp/plugcloud-example/pids, and stops exactly those PIDs on `run.sh stop`.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
state=/tmp/plugcloud-example
broker="${BROKER:-$here/../../../target/debug/broker}"

if [[ "${1:-}" == "stop" ]]; then
    [[ -f "$state/pids" ]] || { echo "not running"; exit 0; }
    while read -r pid; do kill "$pid" 2>/dev/null || true; done < "$state/pids"
    rm -f "$state/pids"
    echo "stopped"
    exit 0
fi

mkdir -p "$state"
: > "$state/pids"
start() { # name, args...
    local name=$1; shift
    "$broker" "$@" > "$state/$name.log" 2>&1 &
    echo $! >> "$state/pids"
    echo "started $name (pid $!, log $state/$name.log)"
}
for n in 1 2; do
    start "rmqkeeper-$n" rmqkeeper \
        --amqp-url "amqp://127.0.0.1:1700$n/%2f" \
        --mgmt-url "http://127.0.0.1:1710$n" --mgmt-user guest --mgmt-password guest \
        --zk-servers 127.0.0.1:12181 --zk-auth plugcloud-example:example-zk-password-change-me \
        --root /rabbitmq-example --check-interval-ms 2000
done
for n in msgbus-1 msgbus-2 comet-a comet-b; do
    kind=${n%%-*}
    start "$n" "$kind" --config "$here/$n.toml"
done
