# @summary Quotes a value as a TOML basic string.
#
# Backslashes and double quotes are escaped; control characters are refused
# rather than escaped, since no value of the agent configuration may hold one.
#
# @param value
#   The raw value.
# @return [String] The value in double quotes, ready for a TOML file.
function rollgate::toml_string(String $value) >> String {
  if $value =~ /[\x00-\x1f\x7f]/ {
    fail("rollgate::toml_string: control characters are not allowed in '${value}'")
  }
  $escaped = $value.regsubst('\\\\', '\\\\\\\\', 'G').regsubst('"', '\\\\"', 'G')
  "\"${escaped}\""
}
