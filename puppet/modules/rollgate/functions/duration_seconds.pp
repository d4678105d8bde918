# @summary Converts a Rollgate::Duration to whole seconds, rounding up.
#
# Used to derive systemd timeouts from rollgate durations, so the two can
# never disagree.
#
# @param duration
#   The duration, e.g. "15s" or "2m".
# @return [Integer] The duration in seconds, at least the duration itself.
function rollgate::duration_seconds(Rollgate::Duration $duration) >> Integer {
  $parts = $duration.match(/\A([0-9]+)(ms|s|m|h)\z/)
  $amount = Integer($parts[1], 10)
  case $parts[2] {
    'ms': { ($amount + 999) / 1000 }
    's': { $amount }
    'm': { $amount * 60 }
    default: { $amount * 3600 }
  }
}
