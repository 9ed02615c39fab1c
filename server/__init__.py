"""styleserver: the gRPC service, its client library and the `style-transfer` CLI."""

__version__ = "0.1.0"
