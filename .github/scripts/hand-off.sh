#!/usr/bin/env bash
# Hands the image Packer made to rollgate, and says in the job summary what
# happened.
#
#   MANIFEST=images/packer-manifest.json AMI_ID=ami-... VERSION=1.2.4-ci.5.g... \
#   [SERVICE=web] [PUBLIC_URL=https://rollgate.example.com] \
#   [CONSUL_HTTP_ADDR=... CONSUL_HTTP_TOKEN=... CONSUL_CACERT=...] \
#   bash .github/scripts/hand-off.sh
#
# Packer has already tagged the image (rollgate:artifact, rollgate:version),
# so the coordinator's registry poll finds it without any help. When the
# runner can reach Consul (CONSUL_HTTP_ADDR set, from a repository secret),
# `rollgate publish --manifest` also writes the trigger, so planning starts at
# once, and the plan is looked up to be linked. `rollgate` must be on PATH;
# AWS credentials (the CI role) are needed for publish, which re-applies the
# tags.
#
# Outputs (under GitHub Actions): published=true|false, plan_id (when found).
# Exits non-zero only when a publish was attempted and failed.
set -euo pipefail

: "${MANIFEST:?MANIFEST is required}"
: "${AMI_ID:?AMI_ID is required}"
: "${VERSION:?VERSION is required}"
service=${SERVICE:-web}
public_url=${PUBLIC_URL:-}
public_url=${public_url%/}
plan_wait=${PLAN_WAIT_SECONDS:-120}

summary=${GITHUB_STEP_SUMMARY:-/dev/stdout}
output=${GITHUB_OUTPUT:-/dev/null}

artifact=$(jq -r '.last_run_uuid as $run
  | [.builds[] | select(.packer_run_uuid == $run)] | last | .custom_data.artifact // empty' "$MANIFEST")

console_line() {
  if [ -n "$public_url" ]; then
    echo "- Console: [$public_url]($public_url) (the plan is listed there once the coordinator has computed it)"
  else
    echo "- No console address configured (repository variable ROLLGATE_PUBLIC_URL): see the plan with \`rollgate plan $service\`."
  fi
}

{
  echo "## Image ${artifact:-?} $VERSION"
  echo
  echo "- AMI: \`$AMI_ID\`, tagged \`rollgate:artifact=${artifact:-?}\`, \`rollgate:version=$VERSION\` by Packer"
} >>"$summary"

if [ -z "${CONSUL_HTTP_ADDR:-}" ]; then
  {
    echo "- **Handed off through the registry poll.** Consul is not reachable from this runner (no ROLLGATE_CONSUL_HTTP_ADDR secret), so nothing was published directly: the coordinator finds the tagged image at its next registry poll (\`registry_poll\`) and plans it then."
    console_line
  } >>"$summary"
  echo "published=false" >>"$output"
  echo "Consul is not configured for this workflow: the coordinator's registry poll will find $AMI_ID."
  exit 0
fi

if ! rollgate publish --manifest "$MANIFEST"; then
  {
    echo "- **Publish failed.** \`rollgate publish --manifest\` could not trigger planning (see the step's log). The image keeps the tags Packer gave it, so the coordinator's registry poll can still find it."
    console_line
  } >>"$summary"
  echo "published=false" >>"$output"
  exit 1
fi
echo "published=true" >>"$output"

# The plan of this image, once the coordinator has computed it.
plan_json=""
deadline=$((SECONDS + plan_wait))
while [ "$SECONDS" -lt "$deadline" ]; do
  if history=$(rollgate history "$service" --json 2>/dev/null); then
    plan_json=$(jq -c --arg ami "$AMI_ID" \
      '[.[] | select(.target.image_id == $ami)] | sort_by(.created_at) | last // empty' <<<"$history")
    [ -n "$plan_json" ] && break
  fi
  sleep 5
done

{
  echo "- **Published with \`rollgate publish --manifest\`**: the coordinator was told at once."
  if [ -n "$plan_json" ]; then
    plan_id=$(jq -r .id <<<"$plan_json")
    state=$(jq -r .decision.state <<<"$plan_json")
    echo "plan_id=$plan_id" >>"$output"
    if [ -n "$public_url" ]; then
      echo "- Plan: [$plan_id]($public_url) ($state); approve it there or with \`rollgate approve $plan_id\`."
    else
      echo "- Plan: \`$plan_id\` ($state); see it with \`rollgate plan $service\`, approve it with \`rollgate approve $plan_id\`."
    fi
  else
    echo "- No plan for \`$AMI_ID\` appeared within ${plan_wait}s (the coordinator logs why it planned nothing, e.g. a newer version already runs)."
    console_line
  fi
} >>"$summary"
