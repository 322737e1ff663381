#!/bin/sh
# Installs the Debian packages cogpipe builds, tests and benchmarks with; does
# nothing when they are all present. Usage: scripts/deps.sh [build|test|bench]
set -eu

# libcurl4-openssl-dev (libcurl 7.85 or later) and libssl-dev (libcrypto 3)
# are linked; libopenblas-dev is the optional CBLAS. The packaging test
# makes a Debian package: dpkg-dev brings dpkg-shlibdeps, binutils readelf.
# The install test links a program through `pkg-config --static`, which
# names the libraries libcurl links too: curlstatic lists their -dev
# packages, which libcurl4-openssl-dev only suggests.
build="build-essential cmake pkg-config liblua5.4-dev libcurl4-openssl-dev
libuv1-dev libutf8proc-dev libxxhash-dev libssl-dev libopenblas-dev python3"
curlstatic="libnghttp2-dev libidn2-dev librtmp-dev libssh2-1-dev libpsl-dev libkrb5-dev
libldap-dev libzstd-dev libbrotli-dev zlib1g-dev"
test="$build $curlstatic clang libclang-rt-14-dev python3 lua-check valgrind openssl chromium
dpkg-dev binutils"
bench="$test nginx-light curl python3-numpy libopenblas-dev"

case "${1:-build}" in
build) want=$build ;;
test) want=$test ;;
bench) want=$bench ;;
*) echo "usage: $0 [build|test|bench]" >&2; exit 2 ;;
esac

missing=""
for p in $want; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "installing:$missing" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends $missing >/dev/null
