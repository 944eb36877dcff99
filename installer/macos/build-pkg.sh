#!/usr/bin/env bash
# macOS installer package (not built or tested on the Linux CI machine; see README).
# Build: pyinstaller build.spec on macOS, then installer/macos/build-pkg.sh -> dist/custodian-VERSION.pkg
# Same layout as the Linux package: the program in /Applications/Custodian, the managed site policy
# in /Library/Application Support/Custodian (root-owned). Service mode as the .deb: the launchd
# jobs in /Library/LaunchDaemons, the account _custodian and the group custodian-users made by
# scripts/postinstall, the vault in /Library/Application Support/Custodian/Service.
# Sign with productsign and notarize for distribution.
set -euo pipefail
cd "$(dirname "$0")/../.."
version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml','rb'))['project']['version'])")
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/Applications" "$root/Library/Application Support/Custodian" "$root/Library/LaunchDaemons"
cp -R dist/custodian "$root/Applications/Custodian"
cp installer/linux/site-policy-README.txt "$root/Library/Application Support/Custodian/README.txt"
cp installer/macos/org.custodian.service.plist installer/macos/org.custodian.rundir.plist "$root/Library/LaunchDaemons/"
pkgbuild --root "$root" --scripts installer/macos/scripts --identifier org.custodian.workstation --version "$version" \
    --install-location / "dist/custodian-$version.pkg"
