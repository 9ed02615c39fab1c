"""The Ray Serve cluster (`serve --cluster`, the `cluster` extra): engine replicas
(replica.py), deployed or found by deploy.py, and the front's workers that hand
prepared jobs to them (runner.py). `build_app` is what a KubeRay RayService imports
(`import_path: styleserver.cluster:build_app`); nothing here imports Ray until used."""

from .deploy import build_app

__all__ = ["build_app"]
