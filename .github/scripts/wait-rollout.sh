#!/usr/bin/env bash
# Waits until an operator has decided the plan of this image and its rollout
# has ended, within a time limit. Exit 0 only when the rollout succeeded.
#
#   AMI_ID=ami-... WAIT_MINUTES=60 [SERVICE=web] \
#   CONSUL_HTTP_ADDR=... [CONSUL_HTTP_TOKEN=...] bash .github/scripts/wait-rollout.sh
#
# `rollgate status --wait` follows a rollout that has started; it has no time
# limit of its own, so it runs under timeout(1). Before approval there is no
# rollout to follow, so the plan's decision is polled first with
# `rollgate history --json`: rejected, expired or superseded ends the wait
# with a failure. Afterwards the plan's recorded outcome decides: succeeded
# passes; failed, reverted or aborted fails.
set -euo pipefail

: "${AMI_ID:?AMI_ID is required}"
: "${CONSUL_HTTP_ADDR:?CONSUL_HTTP_ADDR is required: waiting needs Consul}"
service=${SERVICE:-web}
minutes=${WAIT_MINUTES:-60}
[[ $minutes =~ ^[1-9][0-9]*$ ]] || {
  echo "wait-rollout.sh: WAIT_MINUTES must be a whole number of minutes, not '$minutes'" >&2
  exit 2
}
summary=${GITHUB_STEP_SUMMARY:-/dev/stdout}
poll=${POLL_SECONDS:-15}
deadline=$((SECONDS + minutes * 60))

finish() {
  local status=$1 text=$2
  echo "$text"
  echo "- Rollout: $text" >>"$summary"
  exit "$status"
}

# The newest plan whose target is this image, as compact JSON, or nothing.
our_plan() {
  rollgate history "$service" --json |
    jq -c --arg ami "$AMI_ID" '[.[] | select(.target.image_id == $ami)] | sort_by(.created_at) | last // empty'
}

announced=""
while :; do
  remaining=$((deadline - SECONDS))
  [ "$remaining" -gt 0 ] || finish 1 "gave up after $minutes minutes (WAIT_MINUTES) without an outcome for $AMI_ID."

  if ! plan=$(our_plan); then
    echo "Cannot read the plans of $service (rollgate history failed); retrying."
    sleep "$poll"
    continue
  fi
  if [ -z "$plan" ]; then
    [ "$announced" = none ] || echo "No plan for $AMI_ID yet; waiting for the coordinator."
    announced=none
    sleep "$poll"
    continue
  fi

  id=$(jq -r .id <<<"$plan")
  state=$(jq -r .decision.state <<<"$plan")
  result=$(jq -r '.outcome.result // empty' <<<"$plan")
  reason=$(jq -r '.outcome.reason // empty' <<<"$plan")

  if [ -n "$result" ]; then
    if [ "$result" = succeeded ]; then
      finish 0 "plan $id succeeded."
    fi
    finish 1 "plan $id $result${reason:+: $reason}."
  fi

  case "$state" in
    pending)
      [ "$announced" = "$id" ] || echo "Plan $id waits for an operator (rollgate approve $id)."
      announced=$id
      sleep "$poll"
      ;;
    approved)
      echo "Plan $id is approved; following its rollout (for at most ${remaining}s more)."
      status=0
      timeout "$remaining" rollgate status "$service" --wait || status=$?
      if [ "$status" -eq 124 ]; then
        finish 1 "plan $id: the rollout did not end within $minutes minutes (WAIT_MINUTES)."
      fi
      # The outcome recorded on the plan decides, whatever status said:
      # loop once more to read it (status may have followed an older rollout).
      sleep 2
      ;;
    rejected | expired | superseded)
      finish 1 "plan $id was $state; nothing was rolled out."
      ;;
    *)
      finish 1 "plan $id is in a state this script does not know: $state."
      ;;
  esac
done
