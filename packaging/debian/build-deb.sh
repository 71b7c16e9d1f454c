#!/usr/bin/env bash
# Builds dist/pyrsia_VERSION_ARCH.deb from dist/pyrsia (make binary), completions/
# (make completions) and a man page generated from the CLI.
#   packaging/debian/build-deb.sh VERSION [ARCH]      ARCH defaults to this machine's
# The tree is assembled in a temporary directory and packed with
# `dpkg-deb --root-owner-group`, so every file is root:root whoever builds it.
# Prints the path of the package it wrote.
set -euo pipefail
umask 022
version=${1:?usage: build-deb.sh VERSION [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
python=${PYTHON:-$top/.venv/bin/python}
binary=$top/dist/pyrsia
[ -x "$binary" ] || { echo "build-deb: $binary is missing; run make binary" >&2; exit 1; }
for file in pyrsia.bash _pyrsia pyrsia.fish; do
    [ -f "$top/completions/$file" ] || { echo "build-deb: completions/$file is missing; run make completions" >&2; exit 1; }
done
# A stale binary would ship under the wrong version number.
reported=$("$binary" --version)
[ "$reported" = "pyrsia $version" ] || { echo "build-deb: dist/pyrsia says '$reported', not 'pyrsia $version'" >&2; exit 1; }
# The man page's date: the last commit's, so rebuilding the same tree gives the same page.
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
chmod 0755 "$root"  # mktemp makes it 0700; it becomes the package's `./`
install -D -m 0755 "$binary" "$root/usr/bin/pyrsia"
install -D -m 0644 "$here/pyrsia.service" "$root/lib/systemd/system/pyrsia.service"
install -D -m 0644 "$top/completions/pyrsia.bash" "$root/usr/share/bash-completion/completions/pyrsia"
install -D -m 0644 "$top/completions/_pyrsia" "$root/usr/share/zsh/vendor-completions/_pyrsia"
install -D -m 0644 "$top/completions/pyrsia.fish" "$root/usr/share/fish/vendor_completions.d/pyrsia.fish"
install -d -m 0755 "$root/usr/share/man/man1" "$root/usr/share/doc/pyrsia" "$root/DEBIAN"
"$python" "$here/../man/generate.py" "$root/usr/share/man/man1/pyrsia.1"
gzip -9n "$root/usr/share/man/man1/pyrsia.1"
install -m 0644 "$top/README.md" "$root/usr/share/doc/pyrsia/README.md"
cat > "$root/usr/share/doc/pyrsia/copyright" <<'COPYRIGHT'
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: pyrsia
Source: https://github.com/pyrsia/pyrsia

Files: *
Copyright: the pyrsia developers
License: Apache-2.0
 On Debian systems, the full text of the Apache License, Version 2.0 is in
 /usr/share/common-licenses/Apache-2.0.
COPYRIGHT
for script in postinst prerm postrm; do install -m 0755 "$here/$script" "$root/DEBIAN/$script"; done
cat > "$root/DEBIAN/control" <<CONTROL
Package: pyrsia
Version: $version
Architecture: $arch
Maintainer: pyrsia developers <dev@pyrsia.invalid>
Section: net
Priority: optional
Depends: libc6, adduser
Installed-Size: $(du -sk --exclude=DEBIAN "$root" | cut -f1)
Homepage: https://github.com/pyrsia/pyrsia
Description: decentralized package network for Docker images and Maven artifacts
 A pyrsia node serves the Docker Registry v2 pull API and the Maven repository
 layout on localhost, fetching artifacts from a peer-to-peer network and serving
 only what its transparency log vouches for.
 .
 The package runs the node as the pyrsia.service systemd unit, as user pyrsia,
 with its data in /var/lib/pyrsia.
CONTROL
mkdir -p "$top/dist"
deb=$top/dist/pyrsia_${version}_${arch}.deb
dpkg-deb --build --root-owner-group "$root" "$deb" >/dev/null
echo "$deb"
