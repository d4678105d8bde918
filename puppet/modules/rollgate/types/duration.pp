# A duration as rollgate's configuration writes it: a whole number and a
# unit, e.g. "500ms", "15s", "5m", "1h".
type Rollgate::Duration = Pattern[/\A[0-9]+(ms|s|m|h)\z/]
