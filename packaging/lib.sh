# shellcheck shell=bash
# Shared by packaging/build-deb, test-deb and build-image. Sourced, not run.
# Every chroot starts as a copy of one pristine debootstrap (minbase) of
# the suite the package is for, $DW_PKG_BASE, made once and kept; the
# copies are made anew. Needs root on Debian (12 or later).
#
# DW_PKG_SUITE: trixie (Debian 13, Dovecot 2.4; the default) or bookworm
# (Debian 12, Dovecot 2.3). A bookworm package gets its own chroots and
# output directory (the paths below with -bookworm), so that the trixie
# ones stay as they are.

. "$(dirname "${BASH_SOURCE[0]}")/../testenv/lib.sh"

DW_PKG_SUITE=${DW_PKG_SUITE:-trixie}
case $DW_PKG_SUITE in
trixie)
	pkg_sfx=
	# appended to the package's version: none on the suite of the
	# first package, so that its versions go on as they were
	DW_PKG_VERSION_SUFFIX=
	;;
bookworm)
	pkg_sfx=-bookworm
	# sorts before trixie's version of the same commit, so that a
	# dist-upgrade to trixie upgrades the package
	DW_PKG_VERSION_SUFFIX=~deb12
	;;
*)
	echo "DW_PKG_SUITE=$DW_PKG_SUITE: trixie or bookworm" >&2
	exit 1
	;;
esac
DW_PKG_BASE=${DW_PKG_BASE:-/var/tmp/dwpkg-base$pkg_sfx}
DW_PKG_OUT=${DW_PKG_OUT:-/var/tmp/dwpkg-out$pkg_sfx}

pkg_log() { printf '[packaging] %s\n' "$*" >&2; }

pkg_need_root() {
	[ "$(id -u)" = 0 ] || { echo "$0 must run as root" >&2; exit 1; }
}

# Install host packages (apt-get) unless the commands are there:
# pkg_host_install CMD PACKAGE [CMD PACKAGE ...]
pkg_host_install() {
	local missing=""
	while [ $# -ge 2 ]; do
		command -v "$1" >/dev/null || missing="$missing $2"
		shift 2
	done
	[ -z "$missing" ] && return 0
	pkg_log "installing on the host:$missing"
	export DEBIAN_FRONTEND=noninteractive
	# shellcheck disable=SC2086
	apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >/dev/null ||
		{ apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null &&
		  apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends $missing >/dev/null; }
}

pkg_base() {
	pkg_host_install debootstrap debootstrap
	if [ ! -e "$DW_PKG_BASE/.dwpkg-base" ]; then
		rm -rf "$DW_PKG_BASE"
		pkg_log "debootstrap $DW_PKG_SUITE (minbase) into $DW_PKG_BASE"
		debootstrap --variant=minbase "$DW_PKG_SUITE" "$DW_PKG_BASE" \
			"$DW_MIRROR" >/dev/null
		rm -rf "$DW_PKG_BASE"/var/cache/apt/archives/*.deb
		touch "$DW_PKG_BASE/.dwpkg-base"
	fi
}

# pkg_chroot_new DIR: a fresh copy of the base, where package scripts
# start no services
pkg_chroot_new() {
	pkg_base
	pkg_chroot_umount "$1"
	rm -rf "$1"
	cp -a "$DW_PKG_BASE" "$1"
	rm -f "$1/.dwpkg-base"
	printf '#!/bin/sh\nexit 101\n' > "$1/usr/sbin/policy-rc.d"
	chmod 755 "$1/usr/sbin/policy-rc.d"
	cp /etc/resolv.conf "$1/etc/resolv.conf" 2>/dev/null || true
	mountpoint -q "$1/proc" || mount -t proc proc "$1/proc"
}

# pkg_nodocs DIR: dpkg in the chroot leaves out manual pages and
# translations (quicker installs; a build or test needs none of them)
pkg_nodocs() {
	cat > "$1/etc/dpkg/dpkg.cfg.d/dwpkg-nodocs" <<'C'
path-exclude /usr/share/man/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/info/*
C
}

pkg_chroot_umount() {
	local m
	for m in "$1/src/dovewarden" "$1/proc"; do
		if mountpoint -q "$m" 2>/dev/null; then
			umount "$m" || umount -l "$m"
		fi
	done
	return 0
}

# pkg_in DIR CMD...: run CMD in the chroot DIR with a clean environment
pkg_in() {
	local d=$1
	shift
	chroot "$d" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 HOME=/root TERM=dumb DEBIAN_FRONTEND=noninteractive "$@"
}

# pkg_apt DIR PACKAGE...: install packages (or .deb files) in the chroot
pkg_apt() {
	local d=$1
	shift
	pkg_in "$d" sh -c 'apt-get -o DPkg::Lock::Timeout=600 update -q >/dev/null 2>&1 || true
		apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "$@"' sh "$@"
}
