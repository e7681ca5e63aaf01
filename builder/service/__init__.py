"""The blueprint-submission service: Image Builder's Weldr API over a Unix socket (and TCP),
and its client."""
