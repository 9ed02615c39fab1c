"""stylegimp: installs, removes and checks the GIMP 3 plug-in.

The plug-in itself is `style-transfer/style-transfer.py` beside this file. GIMP 3
finds a plug-in in a folder of its own, named like the file, in a `plug-ins`
folder of its configuration directory. GIMP's Python has no grpcio (and no pip on
Windows and macOS), so the install copies the pure-Python gRPC stack the plug-in
speaks with (grpclib, h2, hpack, hyperframe, multidict, protobuf) and the
contract's generated code into the plug-in's `vendor` folder, leaving out every
compiled extension: each of those packages falls back to pure Python without it.
"""

from __future__ import annotations

import importlib
import json
import os
import shutil
import socket
import sys
from pathlib import Path

PLUGIN_NAME = "style-transfer"
SOURCE = Path(__file__).resolve().parent / PLUGIN_NAME
VENDORED = ("grpclib", "h2", "hpack", "hyperframe", "multidict", "google.protobuf", "styletransfer")
_COMPILED = (".so", ".pyd", ".dylib", ".dll")


def gimp_config_dir() -> Path:
    """GIMP 3's per-user configuration directory on this system ($GIMP3_DIRECTORY wins)."""
    if os.environ.get("GIMP3_DIRECTORY"):
        return Path(os.environ["GIMP3_DIRECTORY"])
    if sys.platform == "win32":
        return Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming")) / "GIMP" / "3.0"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "GIMP" / "3.0"
    return Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config")) / "GIMP" / "3.0"


def default_plugins_dir() -> Path:
    return gimp_config_dir() / "plug-ins"


def install(plugins_dir: Path | None = None) -> Path:
    """Copy the plug-in and its vendored packages; returns the plug-in's folder.
    Replaces an earlier install in place."""
    plugins_dir = Path(plugins_dir) if plugins_dir else default_plugins_dir()
    target = plugins_dir / PLUGIN_NAME
    staging = plugins_dir / f".{PLUGIN_NAME}.installing"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    for source in SOURCE.glob("*.py"):
        shutil.copy2(source, staging / source.name)
    os.chmod(staging / f"{PLUGIN_NAME}.py", 0o755)  # GIMP runs it as a program
    vendor = staging / "vendor"
    for name in VENDORED:
        _copy_package(name, vendor)
    from styleserver import __version__

    (staging / "install.json").write_text(json.dumps({"version": __version__, "python": sys.executable}, indent=1))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def _copy_package(name: str, vendor: Path) -> None:
    module = importlib.import_module(name)
    source = Path(module.__file__).parent
    dest = vendor.joinpath(*name.split("."))
    if "." in name:  # a namespace parent such as google/: an empty package marker is enough
        parent = dest.parent
        parent.mkdir(parents=True, exist_ok=True)
        (parent / "__init__.py").touch()
    shutil.copytree(source, dest, ignore=shutil.ignore_patterns("__pycache__", *(f"*{e}" for e in _COMPILED)))


def uninstall(plugins_dir: Path | None = None) -> Path | None:
    """Remove the plug-in; returns the removed folder, or None if there was none."""
    target = (Path(plugins_dir) if plugins_dir else default_plugins_dir()) / PLUGIN_NAME
    if not target.exists():
        return None
    shutil.rmtree(target)
    return target


def doctor(plugins_dir: Path | None = None, server: str = "127.0.0.1:50051") -> list[tuple[bool, str]]:
    """(ok, finding) for each thing the plug-in needs."""
    plugins_dir = Path(plugins_dir) if plugins_dir else default_plugins_dir()
    config = plugins_dir.parent
    target = plugins_dir / PLUGIN_NAME
    checks = [
        (config.is_dir(), f"GIMP 3 configuration folder {config}"
         + ("" if config.is_dir() else " is missing: start GIMP 3 once, or pass --dir")),
        ((target / f"{PLUGIN_NAME}.py").is_file(), f"plug-in {target / (PLUGIN_NAME + '.py')}"
         + ("" if target.is_dir() else " is not installed: run style-transfer gimp install")),
    ]
    if target.is_dir():
        main = target / f"{PLUGIN_NAME}.py"
        checks.append((os.access(main, os.X_OK), f"{main.name} is executable"))
        missing = [n for n in VENDORED if not target.joinpath("vendor", *n.split(".")).is_dir()]
        checks.append((not missing, "vendored packages " + (f"missing: {', '.join(missing)}" if missing else "present")))
    host, _, port = server.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=2):
            checks.append((True, f"server reachable at {server}"))
    except (OSError, ValueError) as e:
        checks.append((False, f"no server at {server} ({e.__class__.__name__}): start one with "
                              f"style-transfer serve --port {port}"))
    return checks
