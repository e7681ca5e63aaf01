"""One module per command; see builder.cli."""
