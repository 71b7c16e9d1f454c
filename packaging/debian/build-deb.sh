#!/usr/bin/env bash
# Builds dist/pyrsia_VERSION_ARCH.deb from dist/pyrsia, the completions and the man page.
#   packaging/debian/build-deb.sh VERSION [ARCH]
set -euo pipefail
version=${1:?usage: build-deb.sh VERSION [ARCH]}
arch=${2:-$(dpkg --print-architecture)}
here=$(cd "$(dirname "$0")" && pwd)
top=$(cd "$here/../.." && pwd)
python=${PYTHON:-$top/.venv/bin/python}
[ -x "$top/dist/pyrsia" ] || { echo "build-deb: dist/pyrsia is missing; run make binary" >&2; exit 1; }

root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
install -D -m 0755 "$top/dist/pyrsia" "$root/usr/bin/pyrsia"
install -D -m 0644 "$here/pyrsia.service" "$root/lib/systemd/system/pyrsia.service"
install -D -m 0644 "$top/completions/pyrsia.bash" "$root/usr/share/bash-completion/completions/pyrsia"
install -D -m 0644 "$top/completions/_pyrsia" "$root/usr/share/zsh/vendor-completions/_pyrsia"
install -D -m 0644 "$top/completions/pyrsia.fish" "$root/usr/share/fish/vendor_completions.d/pyrsia.fish"
install -d "$root/usr/share/man/man1" "$root/usr/share/doc/pyrsia" "$root/DEBIAN"
"$python" "$here/../man/generate.py" "$root/usr/share/man/man1/pyrsia.1"
gzip -9n "$root/usr/share/man/man1/pyrsia.1"
install -m 0644 "$top/README.md" "$root/usr/share/doc/pyrsia/README.md"
for script in postinst prerm postrm; do install -m 0755 "$here/$script" "$root/DEBIAN/$script"; done
cat > "$root/DEBIAN/control" <<CONTROL
Package: pyrsia
Version: $version
Architecture: $arch
Maintainer: pyrsia developers <dev@pyrsia.invalid>
Section: net
Priority: optional
Depends: libc6, adduser
Installed-Size: $(du -sk "$root" | cut -f1)
Homepage: https://pyrsia.invalid
Description: decentralized package network for Docker images and Maven artifacts
 A pyrsia node serves the Docker Registry v2 pull API and the Maven repository
 layout on localhost, fetching artifacts from a peer-to-peer network and serving
 only what its transparency log vouches for.
CONTROL
mkdir -p "$top/dist"
dpkg-deb --build --root-owner-group "$root" "$top/dist/pyrsia_${version}_${arch}.deb" >/dev/null
echo "$top/dist/pyrsia_${version}_${arch}.deb"
