"""styleserver: the gRPC service (service/), the Ray Serve cluster (cluster/), the
Python client library (client/) and the `style-transfer` command (cli/)."""

import importlib.metadata

try:
    __version__ = importlib.metadata.version("gimp-style-transfer")  # pyproject.toml's, the one place
except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"
