#!/usr/bin/env bash
# Prints the version of the image built from the checked-out commit.
#
#   bash .github/scripts/version.sh [REVISION]     (default HEAD)
#
# The scheme (README, "From git push to a plan"):
#
#   - a release tag on the commit itself, vX.Y.Z or X.Y.Z (pre-releases such
#     as v1.3.0-rc.1 too): that version, without the "v";
#   - otherwise, the next patch after the nearest release tag, as a
#     pre-release that names the distance and the commit:
#         v1.2.3 + 5 commits, commit 1a2b3c4d5e  ->  1.2.4-ci.5.g1a2b3c4d5e
#     and after a pre-release tag the same suffix is appended to it:
#         v1.3.0-rc.1 + 2 commits              ->  1.3.0-rc.1.ci.2.g1a2b3c4d5e
#   - no release tag at all: as if v0.0.0 were on the first commit:
#         0.0.1-ci.<commits>.g<commit>
#
# Every result is a semantic version (rollgate's registry orders versions by
# semver) that sorts above the tag it follows and below the next release, and
# whose ci.N counts up along a branch. It has no "+build" part: AMI names
# (which carry the version) may not contain "+". The "g" keeps the commit an
# alphanumeric identifier, which semver allows with leading zeros.
#
# Needs the history and the tags (actions/checkout with fetch-depth: 0).
set -euo pipefail

rev=${1:-HEAD}

die() {
  printf 'version.sh: %s\n' "$*" >&2
  exit 1
}

semver_re='^([0-9]|[1-9][0-9]*)\.([0-9]|[1-9][0-9]*)\.([0-9]|[1-9][0-9]*)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$'

git rev-parse --verify --quiet "$rev^{commit}" >/dev/null || die "$rev is not a commit of this repository"
if [ "$(git rev-parse --is-shallow-repository)" = true ]; then
  die "the clone is shallow: the version needs the history and the tags (actions/checkout: fetch-depth: 0)"
fi

# A release tag name -> the version it names, or nothing.
tag_version() {
  local v=${1#v}
  if [[ $v =~ $semver_re ]]; then
    printf '%s\n' "$v"
  fi
}

# 1. A release tag on the commit itself (the highest, if there are several).
exact=$(
  git tag --points-at "$rev" | while read -r tag; do tag_version "$tag"; done | sort -V | tail -n 1
)
if [ -n "$exact" ]; then
  printf '%s\n' "$exact"
  exit 0
fi

commit=$(git rev-parse --short=10 "$rev")

# 2. The nearest release tag among the ancestors.
base=""
distance=""
while read -r tag; do
  v=$(tag_version "$tag")
  [ -n "$v" ] || continue
  n=$(git rev-list --count "$tag..$rev")
  if [ -z "$distance" ] || [ "$n" -lt "$distance" ]; then
    base=$v
    distance=$n
  fi
done < <(git tag --merged "$rev")

if [ -z "$base" ]; then
  # 3. No release yet.
  version="0.0.1-ci.$(git rev-list --count "$rev").g$commit"
elif [[ $base == *-* ]]; then
  version="$base.ci.$distance.g$commit"
else
  IFS=. read -r major minor patch <<<"$base"
  version="$major.$minor.$((patch + 1))-ci.$distance.g$commit"
fi

[[ $version =~ $semver_re ]] || die "derived $version, which is not a semantic version"
printf '%s\n' "$version"
