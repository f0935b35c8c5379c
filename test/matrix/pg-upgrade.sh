#!/bin/sh
# Inside a Debian root of the matrix, as root: pg_upgrade from PostgreSQL 15
# to the root's own major (test/matrix/t/pg_upgrade.pl). 15 comes from
# Debian 12's packages, as on a machine upgraded from Debian 12, where the
# old cluster's server stays installed. The tree is built and installed for
# both majors.
set -eu
top=$(cd "$(dirname "$0")/../.." && pwd)
old=${SMSDISPATCH_OLD_MAJOR:-15}
new=$(pg_config --version | sed 's/^PostgreSQL \([0-9]*\).*/\1/')
export DEBIAN_FRONTEND=noninteractive

if ! dpkg-query -W -f='${Status}' "postgresql-server-dev-$old" 2>/dev/null | grep -q "install ok installed"; then
	# the suite that has that major, from the mirror the root uses
	mirror=$(sed -n 's/^deb \([^ ]*\) .*/\1/p' /etc/apt/sources.list | head -n 1)
	echo "deb $mirror bookworm main" >/etc/apt/sources.list.d/bookworm.list
	# only what is asked for by name comes from there
	printf 'Package: *\nPin: release n=bookworm\nPin-Priority: 100\n' \
		>/etc/apt/preferences.d/bookworm
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends \
		"postgresql-$old/bookworm" "postgresql-server-dev-$old/bookworm" \
		"postgresql-client-$old/bookworm"
fi

# a build per major, each in its own copy of the tree
for major in "$old" "$new"; do
	build=/build/pg-upgrade-$major
	rm -rf "$build"
	mkdir -p "$build"
	tar -C "$top" --exclude=./tmp_check --exclude=./demo -cf - . | tar -C "$build" -xf -
	make -C "$build" clean >/dev/null
	make -C "$build" -j2 PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" >/dev/null
	make -C "$build" PG_CONFIG="/usr/lib/postgresql/$major/bin/pg_config" install >/dev/null
done

out=/var/tmp/smsdispatch-pg-upgrade
rm -rf "$out"
mkdir -p "$out"
chown -R postgres "$out"
chmod -R a+rX "$top"
pgxs=/usr/lib/postgresql/$new/lib/pgxs/src
cd "$top"
runuser -u postgres -- env PATH="/usr/lib/postgresql/$new/bin:$PATH" \
	SMSDISPATCH_OLD_INSTALL="/usr/lib/postgresql/$old" \
	TESTDIR="$out" TESTDATADIR="$out/tmp_check" TESTLOGDIR="$out/tmp_check/log" \
	PG_REGRESS="$pgxs/test/regress/pg_regress" \
	prove -I "$pgxs/test/perl" -I test/perl test/matrix/t/pg_upgrade.pl
