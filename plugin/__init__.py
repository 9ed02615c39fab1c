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
import importlib.metadata
import json
import os
import shutil
import sys
from pathlib import Path

PLUGIN_NAME = "style-transfer"
SOURCE = Path(__file__).resolve().parent / PLUGIN_NAME
VENDORED = ("grpclib", "h2", "hpack", "hyperframe", "multidict", "google.protobuf", "styletransfer")
_COMPILED = (".so", ".pyd", ".dylib", ".dll")


PROFILE_FILES = ("gimprc", "sessionrc", "pluginrc", "shortcutsrc", "menurc", "toolrc", "devicerc", "contextrc")


def version() -> str:
    """This project's version (the installed distribution's, from pyproject.toml)."""
    try:
        return importlib.metadata.version("gimp-style-transfer")
    except importlib.metadata.PackageNotFoundError:  # a source tree that was never installed
        return "0+unknown"


class NoProfile(Exception):
    """No GIMP 3 profile was found; the message lists where it looked."""


def _env(name: str) -> str | None:
    """An environment variable's value; unset and empty (or blank) are the same."""
    value = os.environ.get(name, "")
    return value if value.strip() else None


def profile_bases() -> list[tuple[str, Path]]:
    """(kind, folder holding GIMP's versioned profiles) for this system, in order of preference."""
    home = Path.home()
    if sys.platform == "win32":
        appdata = Path(_env("APPDATA") or home / "AppData" / "Roaming")
        return [("Windows", appdata / "GIMP")]
    if sys.platform == "darwin":
        return [("macOS", home / "Library" / "Application Support" / "GIMP")]
    config = Path(_env("XDG_CONFIG_HOME") or home / ".config")
    return [("native", config / "GIMP"),
            ("Flatpak", home / ".var" / "app" / "org.gimp.GIMP" / "config" / "GIMP"),
            ("Snap", home / "snap" / "gimp" / "current" / ".config" / "GIMP")]


def _version(name: str) -> tuple[int, ...] | None:
    try:
        version = tuple(int(p) for p in name.split("."))
    except ValueError:
        return None
    return version if version and version[0] == 3 else None


def is_profile(folder: Path) -> bool:
    """A GIMP profile GIMP has run in: a folder with one of the files GIMP writes there."""
    return folder.is_dir() and any((folder / f).is_file() for f in PROFILE_FILES)


def find_profiles() -> list[tuple[str, Path]]:
    """(kind, profile) of every existing GIMP 3 profile, newest first: the highest GIMP 3
    version, then the one GIMP last wrote to. $GIMP3_DIRECTORY (if set) is the only one."""
    if _env("GIMP3_DIRECTORY"):
        return [("GIMP3_DIRECTORY", Path(_env("GIMP3_DIRECTORY")))]
    found = []
    for kind, base in profile_bases():
        if not base.is_dir():
            continue
        for folder in base.iterdir():
            version = _version(folder.name)
            if version and is_profile(folder):
                found.append((version, _last_written(folder), kind, folder))
    found.sort(key=lambda f: (f[0], f[1]), reverse=True)
    return [(kind, folder) for _, _, kind, folder in found]


def _last_written(folder: Path) -> float:
    return max((folder / f).stat().st_mtime for f in PROFILE_FILES if (folder / f).is_file())


def gimp_config_dir() -> Path:
    """The GIMP 3 profile to use: the newest existing one (see find_profiles). Raises
    NoProfile, naming where it looked."""
    profiles = find_profiles()
    if profiles:
        return profiles[0][1]
    looked = [str(Path(_env("GIMP3_DIRECTORY")))] if _env("GIMP3_DIRECTORY") else \
        [str(base / "3.*") for _, base in profile_bases()]
    raise NoProfile("no GIMP 3 profile found (looked in " + ", ".join(looked) + "): start GIMP 3 once, "
                    "or pass the plug-ins folder with --dir")


def default_plugins_dir() -> Path:
    return gimp_config_dir() / "plug-ins"


def describe_profile(plugins_dir: Path | None) -> str:
    """Which profile install/doctor use, and why (the newest of several, its kind)."""
    if plugins_dir is not None:
        return f"plug-ins folder {plugins_dir} (from --dir)"
    profiles = find_profiles()
    if not profiles:
        return "no GIMP 3 profile found"
    kind, folder = profiles[0]
    text = f"GIMP 3 profile {folder} ({kind})"
    if len(profiles) > 1:
        text += "; the newest of " + ", ".join(f"{p} ({k})" for k, p in profiles)
    return text


def find_gimp() -> str | None:
    """Where GIMP 3 is installed (a description), or None."""
    for name in ("gimp-3.0", "gimp-console-3.0", "gimp-3", "gimp"):
        path = shutil.which(name)
        if path and (name != "gimp" or _gimp_is_3(path)):
            return path
    for flatpak in (Path("/var/lib/flatpak/app/org.gimp.GIMP"), Path.home() / ".local/share/flatpak/app/org.gimp.GIMP"):
        if flatpak.is_dir():
            return f"Flatpak org.gimp.GIMP ({flatpak})"
    if Path("/snap/gimp").is_dir():
        return "Snap gimp (/snap/gimp)"
    if sys.platform == "darwin":
        for app in sorted(Path("/Applications").glob("GIMP*.app"), reverse=True):
            if (app / "Contents" / "MacOS").is_dir() and "2.10" not in app.name:
                return str(app)
    if sys.platform == "win32":
        for base in filter(None, (_env("ProgramFiles"), _env("LOCALAPPDATA") and str(Path(_env("LOCALAPPDATA")) / "Programs"))):
            for exe in sorted(Path(base).glob("GIMP 3*/bin/gimp-3*.exe"), reverse=True):
                return str(exe)
    return None


def _gimp_is_3(path: str) -> bool:
    import subprocess

    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    return "version 3." in out


# The server the plug-in starts for itself (plugin/style-transfer/style_transfer_local.py)
# ends after this long without a call: long enough to try a few settings in a row.
LOCAL_IDLE_EXIT = 900.0


def server_command() -> list[str] | None:
    """This installation's `style-transfer` program, for the plug-in to start; None if
    it cannot be found."""
    beside = Path(sys.executable).with_name("style-transfer")
    found = str(beside) if beside.is_file() else shutil.which("style-transfer")
    return [str(Path(found).resolve())] if found else None


def install(plugins_dir: Path | None = None, command: list[str] | None = None, idle_exit: float = LOCAL_IDLE_EXIT,
            weights: str | None = None) -> Path:
    """Copy the plug-in and its vendored packages; returns the plug-in's folder.
    Replaces an earlier install in place. Records in install.json the server the
    plug-in may start on this machine: `command` (default: this installation's
    `style-transfer`), run as `COMMAND serve ... --idle-exit idle_exit [--weights
    weights]`."""
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
    command = command or server_command()
    local = {"command": command, "idle_exit": idle_exit, "weights": weights} if command else None
    (staging / "install.json").write_text(json.dumps({"version": version(), "python": sys.executable,
                                                      "server": local}, indent=1))
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


def recorded_server(target: Path) -> list[str] | None:
    """The command the installed plug-in starts a local server with (install.json), or None."""
    try:
        recorded = json.loads((Path(target) / "install.json").read_text()).get("server") or {}
    except (OSError, ValueError):
        return None
    return recorded.get("command") or None


def uninstall(plugins_dir: Path | None = None) -> Path | None:
    """Remove the plug-in; returns the removed folder, or None if there was none."""
    target = (Path(plugins_dir) if plugins_dir else default_plugins_dir()) / PLUGIN_NAME
    if not target.exists():
        return None
    shutil.rmtree(target)
    return target


def installed_contract(target: Path) -> str | None:
    """CONTRACT_VERSION of the plug-in's vendored copy of styletransfer/v1/wire.py."""
    import ast

    path = target / "vendor" / "styletransfer" / "v1" / "wire.py"
    try:
        tree = ast.parse(path.read_text())
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "CONTRACT_VERSION" for t in node.targets):
            return ast.literal_eval(node.value)
    return None


def doctor(plugins_dir: Path | None = None) -> tuple[list[tuple[bool, str]], str | None]:
    """(ok, finding) for each thing the plug-in needs on this machine: GIMP 3, its
    profile, the plug-in's files and version; and the contract version of the installed
    plug-in (None where there is none), for the CLI's checks of a server
    (styleserver.cli.gimp)."""
    gimp = find_gimp()
    checks = [(gimp is not None, f"GIMP 3 installed: {gimp}" if gimp else
               "no GIMP 3 installation found (gimp-3.0, gimp --version, Flatpak org.gimp.GIMP, Snap): install GIMP 3")]
    if plugins_dir is None:
        try:
            plugins_dir = default_plugins_dir()
        except NoProfile as e:
            return checks + [(False, str(e))], None
        profile_text = describe_profile(None)
    else:
        plugins_dir = Path(plugins_dir)
        profile_text = f"GIMP 3 profile {plugins_dir.parent} (from --dir)"
    config = plugins_dir.parent
    if is_profile(config):
        checks.append((True, profile_text))
    else:
        checks.append((False, f"{config} is not a GIMP 3 profile (" + ("missing" if not config.is_dir() else
                      f"none of {', '.join(PROFILE_FILES[:3])}, ... in it") + "): start GIMP 3 once, or pass "
                      "the plug-ins folder of your profile with --dir"))
    target = plugins_dir / PLUGIN_NAME
    checks.append(((target / f"{PLUGIN_NAME}.py").is_file(), f"plug-in {target / (PLUGIN_NAME + '.py')}"
                   + ("" if target.is_dir() else " is not installed: run style-transfer gimp install")))
    contract = None
    if target.is_dir():
        main = target / f"{PLUGIN_NAME}.py"
        checks.append((os.access(main, os.X_OK), f"{main.name} is executable"))
        missing = [n for n in VENDORED if not target.joinpath("vendor", *n.split(".")).is_dir()]
        checks.append((not missing, "vendored packages " + (f"missing: {', '.join(missing)}" if missing else "present")))
        try:
            installed = json.loads((target / "install.json").read_text()).get("version")
        except (OSError, ValueError):
            installed = None
        ours = version()
        checks.append((installed == ours, f"plug-in version {installed}" + (
            "" if installed == ours else f", this project is {ours}: run style-transfer gimp install")))
        contract = installed_contract(target)
    return checks, contract
