"""Stage kinds: one module per kind, each with its JSON Schema in schemas/<kind>.json."""
