"""`style-transfer info --server HOST:PORT`: what a server runs and accepts."""

from __future__ import annotations

import argparse
import json

from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what a server runs", description="Ask a server what it runs and accepts.")
    o.add_client_options(p, required=True)
    p.add_argument("--json", action="store_true", help="print the raw reply as JSON")
    p.set_defaults(func=run)


def client(args):
    """The client of --server, --token-file and --tls-ca."""
    from ..client import Client

    token = o.read_token_file(args.token_file) if args.token_file else None
    return Client(args.server, token=token, tls_ca=args.tls_ca)


def run(args: argparse.Namespace) -> int:
    info = client(args).info()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    limits = info["limits"]
    flag = "" if info["model_verified"] else "   <-- NOT the ImageNet VGG19 weights: results are meaningless"
    print(f"server   {args.server} (version {info['server_version']})")
    print(f"device   {info['device']} ({info['dtype']})")
    for d in info.get("devices", []):
        threads = f", {d['threads']} threads" if d.get("threads") else ""
        print(f"         {d['name']}: {d['state']}{threads}, {int(d['jobs'])} jobs, {d['busy_seconds']:.0f} s busy")
    print(f"model    {info['model']}{flag}")
    n = {k: int(float(v)) for k, v in limits.items()}  # int64 fields arrive as strings (proto3 JSON)
    print(f"limits   {n['max_pixels']:,} pixels per image, {n['max_work_pixels']:,} worked, "
          f"{_gib(n['max_job_bytes'])} per job; {n['max_styles']} styles and {_gib(n['max_request_bytes'])} "
          f"per request;\n         queue of {n['max_queue']}, {n['max_calls']} calls at once; uploads within "
          f"{float(limits['upload_seconds']):g} s at {n['min_upload_bytes_per_second'] // 1024} KiB/s or more, "
          f"in {n['chunk_bytes'] // 1024} KiB chunks")
    print(f"presets  {', '.join(p['name'] for p in info['presets'])}")
    return 0


def _gib(n: int) -> str:
    return f"{n / (1 << 30):.3g} GiB" if n >= 1 << 30 else f"{n / (1 << 20):.3g} MiB"

