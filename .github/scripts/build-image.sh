#!/usr/bin/env bash
# Bakes the web AMI with Packer, as images/README.md describes, and reports
# the image it made.
#
#   VERSION=1.2.4-ci.5.g1a2b3c4d5e REGION=eu-west-1 CONSUL_VERSION=1.20.2 \
#   CONSUL_SHA256=<sha256> [SUBNET_ID=subnet-...] bash .github/scripts/build-image.sh
#
# Expects the release binaries in target/dist/ (cargo build --profile dist
# -p rollgate -p web) and the Consul archive in images/downloads/
# (fetch-consul.sh). Writes images/packer-manifest.json (the manifest
# post-processor) and, under GitHub Actions, the outputs ami_id and region.
# Needs AWS credentials for Packer's amazon-ebs builder (the CI role of
# infra/github_ci.tf).
set -euo pipefail

: "${VERSION:?VERSION is required}"
: "${REGION:?REGION is required}"
: "${CONSUL_VERSION:?CONSUL_VERSION is required}"
: "${CONSUL_SHA256:?CONSUL_SHA256 is required}"
subnet_id=${SUBNET_ID:-}

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$repo"

for binary in target/dist/rollgate target/dist/web; do
  [ -x "$binary" ] || {
    echo "build-image.sh: $binary is missing; run cargo build --profile dist -p rollgate -p web first" >&2
    exit 1
  }
done

vars=(
  -var "version=$VERSION"
  -var "region=$REGION"
  -var "consul_version=$CONSUL_VERSION"
  -var "consul_sha256=$CONSUL_SHA256"
  -var "subnet_id=$subnet_id"
)

cd images
rm -f packer-manifest.json
packer init .
packer validate "${vars[@]}" .
packer build -color=false -timestamp-ui "${vars[@]}" .

# The build of the last run: "artifact_id": "<region>:ami-...".
artifact_id=$(jq -r '.last_run_uuid as $run
  | [.builds[] | select(.packer_run_uuid == $run)] | last | .artifact_id // empty' packer-manifest.json)
region=${artifact_id%%:*}
ami_id=${artifact_id#*:}
if [[ ! $ami_id =~ ^ami-[0-9a-f]+$ ]]; then
  echo "build-image.sh: packer-manifest.json names no AMI of the last run (artifact_id: '$artifact_id')" >&2
  exit 1
fi
echo "Built $ami_id in $region as version $VERSION."

if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "ami_id=$ami_id"
    echo "region=$region"
  } >>"$GITHUB_OUTPUT"
fi
