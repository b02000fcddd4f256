#!/usr/bin/env bash
# Start what the test suite needs that a fresh machine may lack: headless Chromium
# (Debian's package) for the gallery checks, and a Redis server for the platform tests.
set -euo pipefail

if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Debian's chromium for the headless gallery tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi

if ! command -v docker-compose >/dev/null 2>&1; then
  # `docker-compose config` validates docker-compose.yml (tests/test_compose.py); no engine needed,
  # so not docker.io (a mere Recommends).
  echo "installing Debian's docker-compose for the compose file checks"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends docker-compose >/dev/null
fi

if ! command -v redis-server >/dev/null 2>&1; then
  echo "installing Debian's redis-server for the broker tests"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends redis-server >/dev/null
fi

if command -v redis-cli >/dev/null 2>&1 && ! redis-cli -h 127.0.0.1 -p 6379 ping >/dev/null 2>&1; then
  if command -v redis-server >/dev/null 2>&1; then
    echo "starting redis-server on 127.0.0.1:6379"
    mkdir -p /tmp/mfpo-redis
    redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
      --dir /tmp/mfpo-redis --logfile /tmp/mfpo-redis/redis.log
  fi
fi
