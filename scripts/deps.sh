#!/usr/bin/env bash
# Installs the Debian packages hookd needs to build and test, only those
# that are missing. Runs apt-get through sudo when not root.
set -euo pipefail

packages=(cmake make gcc pkg-config python3 curl
          libluajit2-5.1-dev lua-cjson-dev libuv1-dev libcurl4-openssl-dev
          libhttp-parser-dev libsqlite3-dev librabbitmq-dev librdkafka-dev
          rabbitmq-server)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
    || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${missing[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
