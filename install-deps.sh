#!/bin/sh
# Installs the Debian packages smsdispatch needs to build, test and run its
# demo. Does nothing for packages already present; needs root to install.
set -e

packages="
	build-essential
	postgresql-15
	postgresql-server-dev-15
	postgresql-15-cron
	libcurl4-openssl-dev
	libxml2-dev
	libgammu-dev
	gammu
	libpq-dev
	valgrind
	libipc-run-perl
	clang
	libclang-rt-14-dev
	nginx-light
	python3
	procps
	chromium
	fonts-dejavu-core
	prometheus-postgres-exporter
"

missing=""
for p in $packages; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -z "$missing" ]; then
	exit 0
fi

if [ "$(id -u)" != 0 ]; then
	echo "install-deps.sh: missing packages:$missing" >&2
	echo "install-deps.sh: run as root (or: sudo $0)" >&2
	exit 1
fi

echo "install-deps.sh: installing$missing"
export DEBIAN_FRONTEND=noninteractive
# keep Debian's postinst from starting services a test did not start
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
