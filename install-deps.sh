#!/bin/sh
# Installs the Debian packages smsdispatch needs: by default everything to
# build, test and run its demo (make deps, make check, make demo); with
# --runtime only what building and running it on a database server need.
# Does nothing for packages already present; needs root to install.
#
# PostgreSQL is the distribution's own major (Debian 12: 15, Debian 13: 17,
# unstable: 18) unless PG_MAJOR=NN names another that the apt sources have.
set -e

usage() {
	cat <<'EOF'
Usage: ./install-deps.sh [--runtime] [--print] [--help]

Installs the Debian packages smsdispatch needs (as root; packages already
installed are left alone).

  --runtime  only what building and running the extension and the modem
             and HTTP sidecars need: no test, fuzzing or benchmark tools
  --print    print the packages, one per line, and install nothing
             (needs neither root nor apt lists)
  --help     this text

PG_MAJOR=NN picks the PostgreSQL major (default: the distribution's).
While another apt or dpkg holds the dpkg lock or the lock of the package
lists, it waits for it up to APT_LOCK_TIMEOUT seconds (default 300).
EOF
}

selection=all
print=no
for arg in "$@"; do
	case "$arg" in
		--runtime) selection=runtime ;;
		--print) print=yes ;;
		--help | -h) usage; exit 0 ;;
		*)
			echo "install-deps.sh: unknown option \"$arg\"" >&2
			usage >&2
			exit 2
			;;
	esac
done

lock_timeout=${APT_LOCK_TIMEOUT:-300}
export DEBIAN_FRONTEND=noninteractive

# apt-get update. It waits for no lock (DPkg::Lock::Timeout is the dpkg
# lock's, which apt-get install waits for), so while another apt holds the
# lock of the package lists (apt-daily's update, say) it is tried again every
# 5 s, up to lock_timeout; any other failure ends it at once.
update_lists() {
	waited=0
	while ! out=$(LC_ALL=C apt-get update -qq 2>&1); do
		case "$out" in
			*"Could not get lock"*) ;;
			*) echo "$out" >&2; return 1 ;;
		esac
		if [ "$waited" -ge "$lock_timeout" ]; then
			echo "$out" >&2
			echo "install-deps.sh: gave up after waiting $waited s for the lock of the package lists" >&2
			return 1
		fi
		if [ "$waited" = 0 ]; then
			echo "install-deps.sh: another apt holds the lock of the package lists; waiting for it up to $lock_timeout s (APT_LOCK_TIMEOUT)" >&2
		fi
		sleep 5
		waited=$((waited + 5))
	done
	[ -z "$out" ] || echo "$out"
}

# The major of the distribution's "postgresql" package: its version reads
# "17+278+deb13u1".
distribution_major() {
	apt-cache policy postgresql 2>/dev/null |
		sed -n 's/^ *Candidate: \([0-9][0-9]*\)+.*/\1/p'
}

major=${PG_MAJOR:-}
if [ -z "$major" ]; then
	major=$(distribution_major)
	if [ -z "$major" ] && [ "$(id -u)" = 0 ] && [ "$print" = no ]; then
		update_lists
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

# Every package, with what needs it: runtime (building the extension and the
# sidecars, running them), demo (make demo, and the tests too) or test (make
# check, the fuzzer, the benchmarks). NN is the PostgreSQL major. clang and libclang-rt-dev are
# Debian's default LLVM pair (libFuzzer needs the compiler-rt of the same
# major as clang).
package_table() {
	sed "s/NN/$major/" <<'EOF'
build-essential					runtime
postgresql-NN					runtime
postgresql-server-dev-NN		runtime
libcurl4-openssl-dev			runtime
libxml2-dev						runtime
libgammu-dev					runtime
libpq-dev						runtime
libmicrohttpd-dev				runtime	building the Kannel callback sidecar
postgresql-NN-cron				test	pg_cron scheduling run_once and the reports
gammu							test	gammu --identify against the simulated modem
valgrind						test
libipc-run-perl					test	the TAP tests
clang							test	the fuzzer
libclang-rt-dev					test	the fuzzer
nginx-light						test	the benchmarks
python3							demo	the mock gateway, the modem simulator
procps							test
chromium						test	rendering the HTML report
fonts-dejavu-core				test	rendering the HTML report
prometheus-postgres-exporter	test	the exporter's queries
kannel							demo	bearerbox and smsbox of the demo's Kannel step and the Kannel tests
kannel-extras					demo	fakesmsc (a fake SMSC) of the demo's Kannel step and the Kannel tests
patroni							test	the high-availability tests (switchover, failover)
etcd-server						test	Patroni's DCS in the high-availability tests
python3-etcd					test	Patroni's etcd client (Patroni 4 no longer depends on it)
EOF
}

# the packages of the selection, one per line
packages=$(package_table |
	awk -v selection="$selection" 'selection == "all" || $2 == selection { print $1 }')

if [ "$print" = yes ]; then
	echo "$packages"
	exit 0
fi

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
	echo "install-deps.sh: run as root (or: sudo $0 $*)" >&2
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
update_lists
echo "install-deps.sh: if another apt or dpkg holds the dpkg lock, apt-get waits for it up to $lock_timeout s (APT_LOCK_TIMEOUT)"
apt-get -o DPkg::Lock::Timeout="$lock_timeout" install -y -qq --no-install-recommends $missing
