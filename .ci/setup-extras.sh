#!/usr/bin/env bash
# Installs what the scratch MariaDB, MySQL, Postgres 17/18, NATS, Kafka and schema-registry
# launchers need on a fresh Debian 12 machine, then fills their download cache. Idempotent; a few
# seconds when all is there.
#
# Called by .ci/setup with the project's venv python as $PYTHON. The Kafka jars and the Apicurio
# Registry distribution come from Maven Central via mvn into $CDC_SCRATCH_CACHE (default
# ~/.cache/cdc-scratch); the first run also starts each Java server once to write its
# class-data-sharing archive, which halves later start times.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}

java_ok() {
  command -v java >/dev/null 2>&1 || return 1
  local v
  v=$(java -XshowSettings:properties -version 2>&1 | awk -F'= ' '/java.specification.version/ {print $2}')
  [ "${v%%.*}" -ge 17 ] 2>/dev/null
}

need_apt=()
command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || need_apt+=(mariadb-server)
command -v mariadb-install-db >/dev/null 2>&1 || need_apt+=(mariadb-server)
command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || need_apt+=(nats-server)
java_ok || need_apt+=(default-jre-headless)
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
# rewrites the private Postgres 17/18 roots' binaries to use the root's loader (scratch/_debian.py)
command -v patchelf >/dev/null 2>&1 || need_apt+=(patchelf)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)  # headless: the EventSource test of cdc serve
if [ ${#need_apt[@]} -gt 0 ]; then
  mapfile -t need_apt < <(printf '%s\n' "${need_apt[@]}" | sort -u)
  echo "setup-extras: installing ${need_apt[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_apt[@]}" >/dev/null
  # Debian's packages may start system-wide servers (unless policy-rc.d forbids it); the tests
  # run their own, so stop the ones this install started.
  case " ${need_apt[*]} " in
    *" mariadb-server "*)
      if [ -s /run/mysqld/mysqld.pid ] && kill -0 "$(cat /run/mysqld/mysqld.pid)" 2>/dev/null; then
        service mariadb stop >/dev/null 2>&1 || true
      fi ;;
  esac
  case " ${need_apt[*]} " in
    *" nats-server "*)
      if [ -x /etc/init.d/nats-server ]; then service nats-server stop >/dev/null 2>&1 || true; fi ;;
  esac
fi

"$PYTHON" -m scratch.kafka fetch >/dev/null
"$PYTHON" -m scratch.registry fetch >/dev/null
# Oracle MySQL: Debian sid's mysql-server-core and its libraries, unpacked into the cache (needs
# dpkg-deb and deb.debian.org; about 10 s and 50 MB the first time, nothing later)
"$PYTHON" -m scratch.mysql fetch >/dev/null
# PostgreSQL 18 (sid) and 17 (trixie), Debian's builds in private roots under
# /var/cache/cdc-scratch when root (the postgres user must read them), so that the tests' version
# matrix (CDC_PG_VERSIONS, default 15,18) never fetches mid-test; about 5 s and 40 MB each
"$PYTHON" -m scratch.postgres fetch 18 17 >/dev/null
