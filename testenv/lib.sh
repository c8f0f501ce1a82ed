# Shared by testenv/setup, demo, check and teardown. Sourced, not run.
# The trixie chroot lives at $DW_CHROOT (short, because host tools reach
# unix sockets inside it); the source tree is bind-mounted read-only at
# /src/dovewarden inside it and built in /srv/build.

DW_MIRROR=${DW_MIRROR:-http://deb.debian.org/debian}
DW_SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DW_CHROOT_PACKAGES="dovecot-core dovecot-imapd dovecot-pop3d dovecot-lmtpd
 dovecot-dev gcc libc6-dev meson ninja-build pkg-config libhiredis-dev libssl-dev
 libjson-c-dev libcriterion-dev redis-server openssl python3 iproute2 procps
 promtool clang libclang-rt-dev"
# DW_DOVECOT=2.3: a Debian 12 chroot with Dovecot 2.3.19.1 instead, for the
# build and the unit suite on 2.3 (testenv/check23). Its hiredis 0.14 builds
# the Redis backend without TLS; no clang for libFuzzer.
DW_DOVECOT=${DW_DOVECOT:-2.4}
DW_SUITE=trixie
if [ "$DW_DOVECOT" = 2.3 ]; then
	DW_SUITE=bookworm
	_dw_pkgs=
	for _dw_p in $DW_CHROOT_PACKAGES; do
		case $_dw_p in
		promtool|clang|libclang-rt-dev) ;;
		*) _dw_pkgs="$_dw_pkgs $_dw_p" ;;
		esac
	done
	DW_CHROOT_PACKAGES=${_dw_pkgs# }
	unset _dw_p _dw_pkgs
fi
DW_CHROOT=${DW_CHROOT:-/var/tmp/dw${DW_DOVECOT/./}}

dw_log() { printf '[testenv] %s\n' "$*" >&2; }

# Run a command inside the chroot with a clean environment
dw_chroot() {
	chroot "$DW_CHROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
		LANG=C.UTF-8 HOME=/root TERM=dumb "$@"
}

dw_mount() {
	mountpoint -q "$DW_CHROOT/proc" || mount -t proc proc "$DW_CHROOT/proc"
	mkdir -p "$DW_CHROOT/src/dovewarden"
	if ! mountpoint -q "$DW_CHROOT/src/dovewarden"; then
		mount --bind "$DW_SRC" "$DW_CHROOT/src/dovewarden"
		mount -o remount,bind,ro "$DW_CHROOT/src/dovewarden"
	fi
}

dw_umount() {
	local m
	for m in "$DW_CHROOT/src/dovewarden" "$DW_CHROOT/proc"; do
		if mountpoint -q "$m"; then
			umount "$m" || umount -l "$m"
		fi
	done
	return 0
}
