"""The service's default paths, in a module of their own so that the command line can name them without
importing the service (and its database libraries)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_SOCKET = Path("/run/imgbuild/api.socket")
DEFAULT_STATE = Path("/var/lib/imgbuild")
