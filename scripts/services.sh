#!/usr/bin/env bash
# Make sure PostgreSQL and Redis are reachable for the tests, and print `export` lines for them.
#   eval "$(scripts/services.sh)"
# Order: DATABASE_URL / REDIS_URL when set; else the local services on 127.0.0.1 when they answer; else start the
# machine's installed servers (or install Debian's packages when root) as throwaway instances under /tmp.
# Progress goes to stderr; only `export` lines go to stdout.
set -euo pipefail
log() { echo "services: $*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
wait_port() { for _ in $(seq 1 60); do port_open "$1" && return 0; sleep 0.5; done; return 1; }
apt_install() {
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    log "installing $*"
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@") >&2
  else
    log "cannot install $* (need root and apt-get)"; return 1
  fi
}

# --- Redis ---
if [ -z "${REDIS_URL:-}" ]; then
  if port_open 6379; then
    REDIS_URL="redis://127.0.0.1:6379/0"
  else
    command -v redis-server >/dev/null || apt_install redis-server || true
    if command -v redis-server >/dev/null; then
      if ! port_open 6390; then
        log "starting throwaway redis on 6390"
        redis-server --daemonize yes --bind 127.0.0.1 --port 6390 --save "" --appendonly no \
          --dir /tmp --logfile /tmp/fer-test-redis.log >&2
        wait_port 6390
      fi
      REDIS_URL="redis://127.0.0.1:6390/0"
    else
      log "no Redis available"; exit 1
    fi
  fi
fi
echo "export REDIS_URL=$REDIS_URL"

# --- PostgreSQL ---
if [ -z "${DATABASE_URL:-}" ]; then
  if ! port_open 5432 && command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    log "starting the machine's PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start >&2 || true
    wait_port 5432 || true
  fi
  if port_open 5432; then
    DATABASE_URL="postgres://postgres@127.0.0.1:5432/postgres"
  else
    command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || apt_install postgresql || true
    bindir=$(dirname "$(ls /usr/lib/postgresql/*/bin/initdb 2>/dev/null | tail -n1)")
    if [ -x "$bindir/initdb" ]; then
      data=/tmp/fer-test-pg
      runas=""
      [ "$(id -u)" = 0 ] && runas="runuser -u postgres --"
      if [ ! -d "$data" ]; then
        mkdir -p "$data" && [ -n "$runas" ] && chown postgres "$data"
        $runas "$bindir/initdb" -D "$data" -U postgres --auth=trust >&2
      fi
      if ! port_open 5433; then
        log "starting throwaway PostgreSQL on 5433"
        $runas "$bindir/pg_ctl" -D "$data" -o "-p 5433 -k /tmp -c listen_addresses=127.0.0.1" -l "$data.log" start >&2
        wait_port 5433
      fi
      DATABASE_URL="postgres://postgres@127.0.0.1:5433/postgres"
    else
      log "no PostgreSQL available"; exit 1
    fi
  fi
fi
echo "export DATABASE_URL=$DATABASE_URL"
