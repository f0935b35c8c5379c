#!/bin/sh
# The Debian packages (debian/, pg_buildext): built in the matrix root of a
# Debian suite (default trixie), installed with dpkg -i into a clean root of
# the same suite (debootstrap's, nothing else installed), where the
# regression suite runs against the installed files (make installcheck on
# a cluster preloading the packaged library). As root; called by
# test/matrix/run.sh. Prints "deb: N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/../.." && pwd)
suite=${1:-trixie}
matrix_cache=${SMSDISPATCH_MATRIX_CACHE:-/var/cache/smsdispatch-matrix}
. "$top/test/matrix/chroot.sh"
trap matrix_cleanup EXIT
trap 'exit 130' INT TERM HUP

passed=0
failed=0
step() {
	if [ "$1" = 0 ]; then
		passed=$((passed + 1))
		echo "ok - $2"
	else
		failed=$((failed + 1))
		echo "not ok - $2"
	fi
}
finish() {
	echo "deb: $passed passed, $failed failed"
	[ "$failed" = 0 ]
	exit
}

# build
root=$(matrix_root "$suite") && matrix_mount "$root"
step $? "the $suite root"
[ "$failed" = 0 ] || finish
rm -rf "$root/build/deb"
matrix_copy_tree "$top" "$root/build/deb"
mv "$root/build/deb/build/smsdispatch" "$root/build/deb/smsdispatch"
rmdir "$root/build/deb/build"
matrix_run "$root" 'set -e
	apt-get install -y -qq --no-install-recommends debhelper dpkg-dev postgresql-server-dev-all >/dev/null
	cd /build/deb/smsdispatch
	pg_buildext updatecontrol
	apt-get build-dep -y -qq ./ >/dev/null
	dpkg-buildpackage -us -uc -b'
step $? "dpkg-buildpackage builds the packages"
debs=$(ls "$root"/build/deb/*.deb 2>/dev/null)
echo "$debs" | grep -q 'postgresql-[0-9]*-smsdispatch_.*\.deb$'
step $? "a postgresql-NN-smsdispatch package: $(echo "$debs" | sed 's|.*/||' | tr '\n' ' ')"
echo "$debs" | grep -q '/smsdispatch-modem_.*\.deb$'
step $? "the sidecar's own package smsdispatch-modem"
echo "$debs" | grep -q '/smsdispatch-http_.*\.deb$'
step $? "the HTTP sidecar's own package smsdispatch-http"
matrix_cleanup
[ "$failed" = 0 ] || finish

# install into a clean root
clean=$(matrix_clean_root "$suite") && matrix_mount "$clean"
step $? "a clean $suite root"
[ "$failed" = 0 ] || finish
mkdir -p "$clean/tmp/debs"
cp $debs "$clean/tmp/debs/"
matrix_run "$clean" 'apt-get update -qq
	# dpkg -i stops at the dependencies it lacks; apt then installs them and
	# finishes the configuration
	dpkg -i /tmp/debs/*.deb >/dev/null 2>&1 || apt-get install -f -y -qq --no-install-recommends >/dev/null
	dpkg-query -W -f="\${Package} \${Status}\n" postgresql-*-smsdispatch smsdispatch-modem smsdispatch-http'
step $? "dpkg -i installs the packages"
major=$(ls "$clean/usr/lib/postgresql" | sort -n | tail -n 1)
for f in usr/lib/postgresql/$major/lib/smsdispatch.so \
	usr/share/postgresql/$major/extension/smsdispatch.control \
	usr/share/postgresql/$major/extension/smsdispatch--1.0.sql \
	usr/share/postgresql/$major/extension/smsdispatch--1.0--1.1.sql \
	usr/share/postgresql/$major/extension/smsdispatch--1.1.sql \
	usr/bin/smsdispatch-modem usr/lib/systemd/system/smsdispatch-modem@.service \
	usr/bin/smsdispatch-http usr/lib/systemd/system/smsdispatch-http.service; do
	[ -e "$clean/$f" ]
	step $? "installed: /$f"
done
[ ! -e "$clean/usr/lib/postgresql/$major/bin/smsdispatch-modem" ]
step $? "the extension package carries no copy of the sidecar"
matrix_run "$clean" '/usr/bin/smsdispatch-modem --help 2>&1 | grep -q -- --gammurc'
step $? "the packaged sidecar runs (--help)"
[ ! -e "$clean/usr/lib/postgresql/$major/bin/smsdispatch-http" ]
step $? "the extension package carries no copy of the HTTP sidecar"
matrix_run "$clean" '/usr/bin/smsdispatch-http --help 2>&1 | grep -q -- --mo-token-file'
step $? "the packaged HTTP sidecar runs (--help)"

# make installcheck: the tree's tests only (the build tools of PGXS to run
# them), the extension from the package
matrix_copy_tree "$top" "$clean"
matrix_run "$clean" "set -e
	apt-get install -y -qq --no-install-recommends make postgresql-server-dev-$major >/dev/null
	test ! -e /build/smsdispatch/smsdispatch.so
	dir=/var/tmp/smsdispatch-installcheck
	rm -rf \$dir
	mkdir -p \$dir
	chown -R postgres \$dir /build/smsdispatch
	runuser -u postgres -- /usr/lib/postgresql/$major/bin/initdb -D \$dir/data --encoding=UTF8 --no-locale >/dev/null
	cat /build/smsdispatch/test/regress.conf >>\$dir/data/postgresql.conf
	printf \"listen_addresses = ''\\nunix_socket_directories = '\$dir'\\nport = 5499\\n\" >>\$dir/data/postgresql.conf
	runuser -u postgres -- /usr/lib/postgresql/$major/bin/pg_ctl -D \$dir/data -l \$dir/server.log -w start >/dev/null
	rc=0
	cd /build/smsdispatch
	runuser -u postgres -- env PGHOST=\$dir PGPORT=5499 make installcheck || rc=\$?
	[ \$rc = 0 ] || cat /build/smsdispatch/regression.diffs 2>/dev/null | head -100
	runuser -u postgres -- /usr/lib/postgresql/$major/bin/pg_ctl -D \$dir/data -m fast -w stop >/dev/null
	exit \$rc"
step $? "make installcheck passes against the installed package (PostgreSQL $major)"
finish
