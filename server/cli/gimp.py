"""`style-transfer gimp install|uninstall|doctor`: the GIMP 3 plug-in (stylegimp)
installed, removed, or checked on this machine and against a server."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from styletransfer.v1 import wire

from ..errors import UsageError
from . import options as o


def add_parser(sub) -> None:
    p = sub.add_parser("gimp", help="install, remove or check the GIMP 3 plug-in",
                       description="Manage the GIMP 3 plug-in (Filters > Artistic > Style Transfer...).")
    p.add_argument("action", choices=("install", "uninstall", "doctor"))
    p.add_argument("--dir", help="GIMP's plug-ins folder (default: the one of your GIMP 3 profile)")
    p.add_argument("--idle-exit", type=o.seconds(), default=None, metavar="SECONDS",
                   help="install: the server the plug-in starts by itself on this machine exits after this long "
                        "without a call (default: 900)")
    p.add_argument("--weights", help="install: the VGG19 weights file that server loads (default: "
                                     "$STYLE_TRANSFER_WEIGHTS when installing, else torch hub's cache)")
    p.add_argument("--server", help=f"doctor: the server address to check (default {wire.DEFAULT_ADDRESS})")
    p.add_argument("--token-file", help="doctor: file with the server's bearer token")
    p.add_argument("--tls-ca", nargs="?", const="", default=None, metavar="PEM",
                   help="doctor: connect with TLS (optionally trusting this CA file)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import stylegimp

    plugins = Path(args.dir) if args.dir and args.dir.strip() else None
    if args.action == "install":
        try:
            where = stylegimp.describe_profile(plugins)
            weights = args.weights or os.environ.get("STYLE_TRANSFER_WEIGHTS") or None
            if weights and not Path(weights).is_file():
                raise UsageError(f"--weights: no file {weights}")
            command = stylegimp.server_command()
            target = stylegimp.install(plugins, command=command, weights=str(Path(weights).resolve()) if weights else None,
                                       idle_exit=args.idle_exit or stylegimp.LOCAL_IDLE_EXIT)
        except stylegimp.NoProfile as e:
            raise UsageError(str(e)) from None
        print(f"using the {where}")
        print(f"installed the GIMP plug-in in {target}")
        if command:
            print(f"it starts {command[0]} serve by itself when no server answers on this machine")
        else:
            print("no style-transfer program found to start a server from: start one yourself (style-transfer serve)")
        print("restart GIMP; it is under Filters > Artistic > Style Transfer...")
        return 0
    if args.action == "uninstall":
        try:
            removed = stylegimp.uninstall(plugins)
        except stylegimp.NoProfile as e:
            raise UsageError(str(e)) from None
        print(f"removed {removed}" if removed else "the plug-in was not installed there; nothing to do")
        return 0
    token = o.read_token_file(args.token_file) if args.token_file else None
    checks, contract = stylegimp.doctor(plugins)
    address = args.server or wire.DEFAULT_ADDRESS
    starter = None  # what the plug-in starts when nothing answers on this machine (plain connections only)
    if address.rpartition(":")[0].strip("[]") in wire.LOCAL_HOSTS and not token and args.tls_ca is None:
        try:
            starter = stylegimp.recorded_server((plugins or stylegimp.default_plugins_dir()) / stylegimp.PLUGIN_NAME)
        except stylegimp.NoProfile:
            starter = None
    checks += server_checks(contract, address, token, args.tls_ca, starter)
    for ok, text in checks:
        print(f"[{'ok' if ok else '!!'}] {text}")
    return 0 if all(ok for ok, _ in checks) else 1


def server_checks(contract: str | None, server: str, token: str | None, tls_ca: str | None,
                  starter: list[str] | None = None) -> list[tuple[bool, str]]:
    """(ok, finding) for the server the plug-in will use: it answers (with the token and
    TLS given), speaks the installed plug-in's contract version, runs verified weights.
    starter: the command the plug-in starts a local server with, when nothing answers
    (then no server running is fine)."""
    from ..client import Client, RemoteError, ServerUnavailable

    try:
        with Client(server, token=token, tls_ca=tls_ca, connect_timeout=3) as client:
            info = client.info()
    except ServerUnavailable as e:
        if starter:
            return [(True, f"no server running at {server} now: the plug-in starts one itself when needed "
                           f"({starter[0]} serve)")]
        return [(False, str(e))]
    except RemoteError as e:
        return [(False, f"the server at {server} answers but refused GetInfo: {e.details}")]
    checks = [(True, f"server at {server}: version {info['server_version']}, {info['device']} ({info['dtype']})")]
    theirs = info.get("contract_version") or "unknown (older than v1.1)"
    if contract is not None:
        checks.append((theirs == contract, f"contract: plug-in {contract}, server {theirs}" + (
            "" if theirs == contract else ": install the plug-in from the server's version (style-transfer gimp "
                                          "install) or update the server")))
    checks.append((bool(info["model_verified"]), f"server weights {info['model']}" + (
        " verified (torchvision's ImageNet VGG19)" if info["model_verified"] else
        " are UNVERIFIED: not the ImageNet VGG19 weights, results are meaningless; start the server with "
        "vgg19-dcbb9e9d.pth")))
    return checks
