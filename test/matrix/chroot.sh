# Sourced by the version matrix: Debian roots made with debootstrap from the
# machine's own Debian mirror, kept in a cache between runs, and commands run
# inside them with the file systems PostgreSQL needs mounted.
#
# The caller sets matrix_cache (the cache directory) and calls
# matrix_cleanup from its EXIT trap: every mount made here is undone there.

matrix_mounts=""

# The Debian mirror the machine's apt sources name (deb822 or one-line
# form), so that the roots come from where this machine's packages come.
matrix_mirror() {
	if [ -n "${SMSDISPATCH_MATRIX_MIRROR:-}" ]; then
		echo "$SMSDISPATCH_MATRIX_MIRROR"
		return
	fi
	cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list \
		/etc/apt/sources.list.d/*.sources 2>/dev/null |
		sed -n -e 's/^URIs: *\([^ ]*\/debian\)\/\{0,1\}$/\1/p' \
			-e 's/^deb  *\(\[[^]]*\] *\)\{0,1\}\([^ ]*\/debian\)\/\{0,1\} .*/\2/p' |
		head -n 1
}

# Makes the root of a Debian suite (trixie, sid) unless the cache has it.
# A root is built under a temporary name and renamed when complete, so an
# interrupted debootstrap never leaves a root that looks usable.
matrix_root() {
	suite=$1
	root=$matrix_cache/$suite
	if [ -e "$root/.smsdispatch-root" ]; then
		echo "$root"
		return 0
	fi
	mirror=$(matrix_mirror)
	if [ -z "$mirror" ]; then
		echo "matrix: no Debian mirror in the apt sources; set SMSDISPATCH_MATRIX_MIRROR" >&2
		return 1
	fi
	command -v debootstrap >/dev/null 2>&1 ||
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >&2 || return 1
	rm -rf "$root.partial"
	mkdir -p "$matrix_cache"
	echo "matrix: debootstrap $suite from $mirror" >&2
	debootstrap --variant=minbase "$suite" "$root.partial" "$mirror" \
		>"$matrix_cache/$suite.debootstrap.log" 2>&1 || {
		echo "matrix: debootstrap $suite failed, see $matrix_cache/$suite.debootstrap.log" >&2
		return 1
	}
	# a mirror that serves a snapshot of the archive has Release files past
	# their Valid-Until date: their signatures are still checked
	echo 'Acquire::Check-Valid-Until "false";' \
		>"$root.partial/etc/apt/apt.conf.d/99smsdispatch-snapshot"
	# no service of a package starts in the root
	printf '#!/bin/sh\nexit 101\n' >"$root.partial/usr/sbin/policy-rc.d"
	chmod +x "$root.partial/usr/sbin/policy-rc.d"
	# the root as debootstrap left it, for matrix_clean_root
	tar -C "$root.partial" -cf "$matrix_cache/$suite.base.tar.partial" . &&
		mv "$matrix_cache/$suite.base.tar.partial" "$matrix_cache/$suite.base.tar"
	touch "$root.partial/.smsdispatch-root"
	rm -rf "$root"
	mv "$root.partial" "$root"
	echo "$root"
}

# A root of the suite as debootstrap made it, nothing installed since, new
# at each call (ROOT-clean): where a package is installed as on a machine
# that never built it.
matrix_clean_root() {
	suite=$1
	base=$matrix_cache/$suite.base.tar
	clean=$matrix_cache/$suite-clean
	if [ ! -e "$base" ]; then
		# a cache from before the base was kept: make the base once
		rm -rf "$clean"
		echo "matrix: debootstrap $suite (clean root)" >&2
		debootstrap --variant=minbase "$suite" "$clean" "$(matrix_mirror)" \
			>"$matrix_cache/$suite.debootstrap-clean.log" 2>&1 || return 1
		echo 'Acquire::Check-Valid-Until "false";' \
			>"$clean/etc/apt/apt.conf.d/99smsdispatch-snapshot"
		printf '#!/bin/sh\nexit 101\n' >"$clean/usr/sbin/policy-rc.d"
		chmod +x "$clean/usr/sbin/policy-rc.d"
		tar -C "$clean" -cf "$base.partial" . && mv "$base.partial" "$base" || return 1
	fi
	rm -rf "$clean"
	mkdir -p "$clean"
	tar -C "$clean" -xf "$base" || return 1
	echo "$clean"
}

# mount_in ROOT TARGET ARGS...: one mount inside a root, remembered for
# matrix_cleanup.
mount_in() {
	target=$1/$2
	shift 2
	mkdir -p "$target"
	mount "$@" "$target" || return 1
	matrix_mounts="$target $matrix_mounts"
}

# Mounts /proc, /sys, /dev, /dev/pts and /dev/shm in a root, and the host's
# resolver configuration so that apt works inside.
matrix_mount() {
	mount_in "$1" proc -t proc proc &&
	mount_in "$1" sys -t sysfs sysfs &&
	mount_in "$1" dev --bind /dev &&
	mount_in "$1" dev/pts --bind /dev/pts &&
	mount_in "$1" dev/shm -t tmpfs -o mode=1777,size=2g shm &&
	cp -L /etc/resolv.conf "$1/etc/resolv.conf" 2>/dev/null
	return 0
}

# Undoes every mount, the last made first.
matrix_cleanup() {
	for m in $matrix_mounts; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null ||
			echo "matrix: could not unmount $m" >&2
	done
	matrix_mounts=""
}

# matrix_run ROOT COMMAND: runs a shell command inside the root as root,
# with a clean environment.
matrix_run() {
	chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
		LANG=C.UTF-8 TERM=dumb DEBIAN_FRONTEND=noninteractive CI="${CI:-}" \
		/bin/sh -c "$2"
}

# matrix_copy_tree TOP ROOT: the source tree as git sees it (tracked and
# untracked files, nothing ignored) into ROOT/build/smsdispatch.
matrix_copy_tree() {
	dest=$2/build/smsdispatch
	rm -rf "$dest"
	mkdir -p "$dest"
	if git -C "$1" rev-parse --git-dir >/dev/null 2>&1; then
		git -C "$1" ls-files -z --cached --others --exclude-standard |
			tar -C "$1" --null --no-recursion -T - -cf - | tar -C "$dest" -xf -
	else
		tar -C "$1" --exclude=./tmp_check --exclude=./demo --exclude='*.o' \
			--exclude='*.so' -cf - . | tar -C "$dest" -xf -
	fi
	chmod 755 "$2/build" "$dest"
}
