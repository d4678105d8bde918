#!/usr/bin/env bash
# Downloads the Consul release archive the image needs, verifies it the way
# images/README.md says (HashiCorp's signature on SHA256SUMS, then the
# archive's checksum) and prints the archive's SHA-256 for Packer's
# consul_sha256 variable.
#
#   bash .github/scripts/fetch-consul.sh VERSION ARCH DEST_DIR
#
# DEST_DIR is images/downloads, where the template looks for
# consul_<VERSION>_linux_<ARCH>.zip. The signing key is fetched from
# HashiCorp and accepted only if its fingerprint is the one pinned below
# (HashiCorp's published release-signing key).
set -euo pipefail

version=${1:?usage: fetch-consul.sh VERSION ARCH DEST_DIR}
arch=${2:?usage: fetch-consul.sh VERSION ARCH DEST_DIR}
dest=${3:?usage: fetch-consul.sh VERSION ARCH DEST_DIR}

hashicorp_fingerprint=C874011F0AB405110D02105534365D9472D7468F
key_url=https://www.hashicorp.com/.well-known/pgp-key.txt
base_url="https://releases.hashicorp.com/consul/$version"
zip="consul_${version}_linux_${arch}.zip"
sums="consul_${version}_SHA256SUMS"

die() {
  printf 'fetch-consul.sh: %s\n' "$*" >&2
  exit 1
}

[[ $version =~ ^[0-9]+\.[0-9]+\.[0-9]+$ ]] || die "VERSION must look like 1.20.2, not $version"
[[ $arch == amd64 || $arch == arm64 ]] || die "ARCH must be amd64 or arm64, not $arch"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export GNUPGHOME="$work/gnupg"
mkdir -m 700 "$GNUPGHOME"

fetch() {
  curl --fail --silent --show-error --location --proto '=https' --tlsv1.2 \
    --retry 3 --output "$2" "$1"
}

fetch "$key_url" "$work/hashicorp.asc"
gpg --batch --quiet --import "$work/hashicorp.asc" 2>/dev/null
gpg --batch --with-colons --fingerprint | grep -q "^fpr:::::::::$hashicorp_fingerprint:" ||
  die "the key at $key_url does not have the pinned fingerprint $hashicorp_fingerprint"

fetch "$base_url/$sums" "$work/$sums"
fetch "$base_url/$sums.sig" "$work/$sums.sig"
status=$(gpg --batch --status-fd 1 --verify "$work/$sums.sig" "$work/$sums" 2>/dev/null || true)
# VALIDSIG names the signing (sub)key first and the primary key last.
awk -v fpr="$hashicorp_fingerprint" '$2 == "VALIDSIG" && ($3 == fpr || $NF == fpr) { ok = 1 } END { exit !ok }' <<<"$status" ||
  die "$sums is not signed by HashiCorp's key $hashicorp_fingerprint"

sha256=$(awk -v f="$zip" '$2 == f { print $1 }' "$work/$sums")
[[ $sha256 =~ ^[0-9a-f]{64}$ ]] || die "$sums lists no $zip"

mkdir -p "$dest"
fetch "$base_url/$zip" "$dest/$zip"
echo "$sha256  $dest/$zip" | sha256sum --check --quiet - >&2 ||
  die "$zip does not match the signed checksum $sha256"

printf '%s\n' "$sha256"
