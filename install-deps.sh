#!/bin/sh
# Installs the Debian packages smsdispatch needs to build, test and run its
# demo. Does nothing for packages already present; needs root to install.
#
# PostgreSQL is the distribution's own major (Debian 12: 15, Debian 13: 17,
# unstable: 18) unless PG_MAJOR=NN names another that the apt sources have.
set -e

export DEBIAN_FRONTEND=noninteractive

# The major of the distribution's "postgresql" package: its version reads
# "17+278+deb13u1".
distribution_major() {
	apt-cache policy postgresql 2>/dev/null |
		sed -n 's/^ *Candidate: \([0-9][0-9]*\)+.*/\1/p'
}

major=${PG_MAJOR:-}
if [ -z "$major" ]; then
	major=$(distribution_major)
	if [ -z "$major" ] && [ "$(id -u)" = 0 ]; then
		apt-get update -qq
		major=$(distribution_major)
	fi
fi
if [ -z "$major" ]; then
	# without apt lists, fall back to the newest server-dev installed
	major=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -n 1)
fi
case "$major" in
	'' | *[!0-9]*)
		echo "install-deps.sh: cannot tell which PostgreSQL major to install; set PG_MAJOR=NN" >&2
		exit 1
		;;
esac

# clang and libclang-rt-dev are Debian's default LLVM pair (libFuzzer needs
# the compiler-rt of the same major as clang).
packages="
	build-essential
	postgresql-$major
	postgresql-server-dev-$major
	postgresql-$major-cron
	libcurl4-openssl-dev
	libxml2-dev
	libgammu-dev
	gammu
	libpq-dev
	valgrind
	libipc-run-perl
	clang
	libclang-rt-dev
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

echo "install-deps.sh: installing PostgreSQL $major and$missing"
# keep Debian's postinst from starting services a test did not start
policy=/usr/sbin/policy-rc.d
if [ ! -e "$policy" ]; then
	printf '#!/bin/sh\nexit 101\n' > "$policy"
	chmod +x "$policy"
	trap 'rm -f "$policy"' EXIT
fi
apt-get update -qq
apt-get install -y -qq --no-install-recommends $missing
