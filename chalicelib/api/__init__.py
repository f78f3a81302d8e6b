"""HTTP API: one blueprint per concept. Validates input, calls a service, maps domain errors."""
