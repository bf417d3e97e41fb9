#!/usr/bin/env bash
# Install (if missing) and run PostgreSQL, RabbitMQ and Kafka (KRaft) natively on loopback.
#   scripts/services.sh up       install what is missing, start what is down, wait until each answers
#   scripts/services.sh status   say which service answers
#   scripts/services.sh down     stop the three services
#   scripts/services.sh env      print the export lines that point HelixAgent at them
#   scripts/services.sh restart-postgres   fast restart of PostgreSQL (fault drills and tests)
#   scripts/services.sh crash-postgres     stop PostgreSQL as a crash would (no shutdown checkpoint,
#                                          WAL not yet written is lost), then start it: it recovers
#   scripts/services.sh restart-kafka      clean stop and start of the running Kafka broker, with the
#                                          command line (and so the data) it was started with
# Idempotent: a service that already answers is left alone. Needs root to install packages.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
CACHE=${HELIX_CACHE_DIR:-$ROOT/.cache}
KAFKA_DIR=$CACHE/kafka
PG_VERSION=${PG_VERSION:-15}
PG_CLUSTER=${PG_CLUSTER:-main}
PG_PORT=${PG_PORT:-5432}
KAFKA_PORT=${KAFKA_PORT:-9092}
KAFKA_CONTROLLER_PORT=${KAFKA_CONTROLLER_PORT:-9093}
DB_NAME=helixagent DB_USER=helixagent DB_PASSWORD=helixagent

say() { echo "services: $*" >&2; }
answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() {  # name port seconds
  local i
  for ((i = 0; i < $3 * 5; i++)); do answers "$2" && return 0; sleep 0.2; done
  say "$1 did not answer on port $2 within $3 s"; return 1
}

apt_install() {
  local missing=()
  for pkg in "$@"; do dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg"); done
  ((${#missing[@]})) || return 0
  [ "$(id -u)" = 0 ] || { say "need root to install ${missing[*]}"; exit 1; }
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

postgres_up() {
  apt_install "postgresql-$PG_VERSION" postgresql-client
  if ! pg_lsclusters -h | awk -v c="$PG_CLUSTER" '$2 == c' | grep -q .; then
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" -p "$PG_PORT" >/dev/null
  fi
  if ! answers "$PG_PORT"; then
    say "starting PostgreSQL $PG_VERSION/$PG_CLUSTER on $PG_PORT"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
  fi
  wait_port PostgreSQL "$PG_PORT" 30
  local i
  for ((i = 0; i < 50; i++)); do pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break; sleep 0.2; done
  su postgres -c "psql -p $PG_PORT -tAc \"SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'\"" | grep -q 1 ||
    su postgres -c "psql -p $PG_PORT -qc \"CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASSWORD'\""
  su postgres -c "psql -p $PG_PORT -tAc \"SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'\"" | grep -q 1 ||
    su postgres -c "createdb -p $PG_PORT -O $DB_USER $DB_NAME"
}

rabbitmq_up() {
  apt_install rabbitmq-server
  if ! answers 5672; then
    say "starting RabbitMQ"
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  wait_port RabbitMQ 5672 60
  local i
  for ((i = 0; i < 60; i++)); do rabbitmqctl -q ping >/dev/null 2>&1 && break; sleep 0.5; done
  ((i < 60)) || { say "RabbitMQ does not answer rabbitmqctl ping"; return 1; }
  # HelixAgent's queues in classic queue storage version 2 (RabbitMQ 3.10+; the default from 4.0),
  # which RabbitMQ recommends for new deployments. A policy also converts queues declared
  # before it. migrate-pending was faster with it in most paired runs (docs/benchmarks.md).
  rabbitmqctl -q set_policy --apply-to queues helixagent-queues '^helixagent\.' '{"queue-version": 2}' >/dev/null
}

kafka_libs() {
  if [ ! -f "$KAFKA_DIR/libs/.complete" ]; then
    say "fetching the Kafka broker jars from Maven Central"
    mkdir -p "$KAFKA_DIR/libs"
    mvn -q -B -f scripts/kafka/pom.xml dependency:copy-dependencies \
      -DincludeScope=runtime -DoutputDirectory="$KAFKA_DIR/libs" >/dev/null
    touch "$KAFKA_DIR/libs/.complete"
  fi
}

kafka_up() {
  command -v java >/dev/null || apt_install openjdk-17-jre-headless
  command -v mvn >/dev/null || apt_install maven
  answers "$KAFKA_PORT" && return 0
  kafka_libs
  mkdir -p "$KAFKA_DIR/data"
  sed -e "s#@DATA@#$KAFKA_DIR/data#" -e "s#@PORT@#$KAFKA_PORT#g" -e "s#@CONTROLLER_PORT@#$KAFKA_CONTROLLER_PORT#g" \
    scripts/kafka/server.properties >"$KAFKA_DIR/server.properties"
  local cp="$KAFKA_DIR/libs/*"
  if [ ! -f "$KAFKA_DIR/data/meta.properties" ]; then
    java -cp "$cp" kafka.tools.StorageTool format -t "$(java -cp "$cp" kafka.tools.StorageTool random-uuid)" \
      -c "$KAFKA_DIR/server.properties" >/dev/null
  fi
  say "starting Kafka (KRaft) on $KAFKA_PORT"
  nohup java -Xms256m -Xmx512m -XX:+UseG1GC -Dlog4j2.configurationFile="$ROOT/scripts/kafka/log4j2.properties" \
    -Dkafka.logs.dir="$KAFKA_DIR" -cp "$cp" kafka.Kafka "$KAFKA_DIR/server.properties" \
    >"$KAFKA_DIR/kafka.out" 2>&1 &
  echo $! >"$KAFKA_DIR/kafka.pid"
  wait_port Kafka "$KAFKA_PORT" 90 || { tail -20 "$KAFKA_DIR/kafka.out" >&2; return 1; }
}

print_env() {
  cat <<ENV
export DATABASE_URL=postgresql://$DB_USER:$DB_PASSWORD@127.0.0.1:$PG_PORT/$DB_NAME
export RABBITMQ_URL=amqp://guest:guest@127.0.0.1:5672//
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:$KAFKA_PORT
ENV
}

status() {
  local rc=0 name port
  for pair in "PostgreSQL:$PG_PORT" "RabbitMQ:5672" "Kafka:$KAFKA_PORT"; do
    name=${pair%%:*} port=${pair##*:}
    if answers "$port"; then echo "$name: up (127.0.0.1:$port)"; else echo "$name: down"; rc=1; fi
  done
  return $rc
}

kafka_down() {  # a clean shutdown; waits until the broker has let go of its port
  if [ -f "$KAFKA_DIR/kafka.pid" ]; then kill "$(cat "$KAFKA_DIR/kafka.pid")" 2>/dev/null || true; rm -f "$KAFKA_DIR/kafka.pid"; fi
  pkill -f 'kafka\.Kafka .*server\.properties' 2>/dev/null || true
  local waited=0
  while pgrep -f 'kafka\.Kafka .*server\.properties' >/dev/null && [ $waited -lt 60 ]; do sleep 1; waited=$((waited + 1)); done
}

kafka_restart() {  # the running broker, stopped cleanly and started again exactly as it was started
  local pid cwd
  local -a cmd
  pid=$(pgrep -f 'kafka\.Kafka .*server\.properties' | head -n 1) || { kafka_up; return; }
  mapfile -d '' cmd <"/proc/$pid/cmdline"  # it may come from another checkout, with its own data
  cwd=$(readlink "/proc/$pid/cwd")
  kafka_down
  mkdir -p "$KAFKA_DIR"
  say "starting Kafka (KRaft) on $KAFKA_PORT again"
  (cd "$cwd" && exec nohup "${cmd[@]}" >"$KAFKA_DIR/kafka.out" 2>&1) &
  echo $! >"$KAFKA_DIR/kafka.pid"
  wait_port Kafka "$KAFKA_PORT" 90 || { tail -20 "$KAFKA_DIR/kafka.out" >&2; return 1; }
}

down() {
  kafka_down
  command -v rabbitmqctl >/dev/null && rabbitmqctl -q stop >/dev/null 2>&1 || true
  command -v pg_ctlcluster >/dev/null && pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop 2>/dev/null || true
  say "stopped"
}

case "${1:-up}" in
  up)
    # Only the export lines go to stdout, so `eval "$(scripts/services.sh up)"` is safe even when
    # a tool says something on the way (pg_ctlcluster reports a stale pid file, for one).
    { postgres_up; rabbitmq_up; kafka_up; status; } >&2
    print_env
    ;;
  status) status ;;
  down) down ;;
  env) print_env ;;
  restart-postgres)  # restart-postgres [SECONDS]: stay stopped that long before starting again
    if [ -n "${2:-}" ]; then
      pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m fast && sleep "$2" && pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start
    else
      pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" restart -m fast
    fi && wait_port PostgreSQL "$PG_PORT" 30
    ;;
  crash-postgres)
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" stop -m immediate
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start && wait_port PostgreSQL "$PG_PORT" 60
    ;;
  restart-kafka) kafka_restart ;;
  *) echo "usage: $0 up|status|down|env|restart-postgres [SECONDS]|crash-postgres|restart-kafka" >&2; exit 2 ;;
esac
