"""docs/kuberay.yaml: no cluster can be started here, so its syntax and its ties to
the code are checked: it parses, the Serve config inside it parses and names this
project's application builder and deployment, the fronts' command line is one the
CLI accepts, and the probes are gRPC health probes on the served port."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")

MANIFEST = Path(__file__).resolve().parent.parent / "docs" / "kuberay.yaml"


@pytest.fixture(scope="module")
def docs() -> dict:
    parsed = list(yaml.safe_load_all(MANIFEST.read_text()))
    return {d["kind"]: d for d in parsed}


def test_the_manifest_parses_into_its_three_objects(docs):
    assert set(docs) == {"RayService", "Deployment", "Service"}
    assert docs["RayService"]["apiVersion"] == "ray.io/v1"


def test_the_serve_config_names_the_builder_and_the_deployment(docs):
    from styleserver import cluster
    from styleserver.cluster import deploy

    spec = docs["RayService"]["spec"]
    config = yaml.safe_load(spec["serveConfigV2"])
    app = config["applications"][0]
    assert app["name"] == deploy.APP
    module, _, name = app["import_path"].partition(":")
    assert module == "styleserver.cluster" and callable(getattr(cluster, name))
    deployment = app["deployments"][0]
    assert deployment["name"] == deploy.DEPLOYMENT
    assert deployment["max_ongoing_requests"] == 1  # one job per GPU
    assert deployment["ray_actor_options"]["num_gpus"] == 1
    scaling = deployment["autoscaling_config"]
    assert scaling["min_replicas"] <= scaling["max_replicas"]
    gpu = spec["rayClusterConfig"]["workerGroupSpecs"][0]
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1
    assert spec["rayClusterConfig"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_the_fronts_command_line_is_accepted(docs):
    from styleserver.cli import build_parser

    container = docs["Deployment"]["spec"]["template"]["spec"]["containers"][0]
    script = container["command"][-1]
    ray_start, _, serve = script.partition("&&")
    assert ray_start.split()[:2] == ["ray", "start"] and "style-transfer-head-svc:6379" in ray_start
    argv = shlex.split(serve.strip())
    assert argv[:2] == ["exec", "style-transfer"]
    args = build_parser().parse_args(argv[2:])
    assert args.command == "serve" and args.cluster == "auto" and args.attach
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["grpc"] == args.port and ports["metrics"] == args.metrics_port
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"]["port"] == args.port  # grpc.health.v1, SERVING once attached


def test_the_service_exposes_grpc_and_metrics(docs):
    service = docs["Service"]
    front = docs["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"] == front
    assert {p["name"] for p in service["spec"]["ports"]} == {"grpc", "metrics"}


def test_the_serve_config_fits_ray_serves_schema(docs):
    schema = pytest.importorskip("ray.serve.schema", reason="Ray Serve is not installed (the cluster extra)")
    config = yaml.safe_load(docs["RayService"]["spec"]["serveConfigV2"])
    parsed = schema.ServeDeploySchema.model_validate(config) if hasattr(schema.ServeDeploySchema, "model_validate") \
        else schema.ServeDeploySchema.parse_obj(config)
    assert parsed.applications[0].import_path == "styleserver.cluster:build_app"
