"""The first start on a Linux desktop: Qt's X11 platform plugin (``xcb``) needs system
libraries that a fresh system may lack (``libxcb-cursor0`` above all), and when it cannot load
them Qt aborts the whole process with a message that names no package. This check runs before
Qt starts: it asks the dynamic loader (``ldd``) which libraries the plugin cannot find and
says, in one line, which Debian/Ubuntu packages to install."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Mapping
from importlib.util import find_spec
from pathlib import Path

# What PySide6's xcb plugin needs beyond a base system: README's set-up names these
# (a test holds README's apt line equal to this one).
X11_PACKAGES = (
    "libxcb-cursor0",
    "libxkbcommon-x11-0",
    "libxcb-icccm4",
    "libxcb-image0",
    "libxcb-keysyms1",
    "libxcb-randr0",
    "libxcb-render-util0",
    "libxcb-shape0",
    "libxcb-xkb1",
    "libegl1",
)
APT_LINE = "sudo apt-get install " + " ".join(X11_PACKAGES)


def uses_xcb(env: Mapping[str, str] = os.environ, platform: str = sys.platform) -> bool:
    """Whether Qt will pick its X11 plugin: on Linux, asked for (``QT_QPA_PLATFORM=xcb``) or
    by default on an X display without Wayland."""
    if not platform.startswith("linux"):
        return False
    chosen = env.get("QT_QPA_PLATFORM", "")
    if chosen:
        return chosen.split(":")[0] == "xcb"
    return bool(env.get("DISPLAY")) and not env.get("WAYLAND_DISPLAY")


def xcb_plugin() -> Path | None:
    spec = find_spec("PySide6")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "Qt" / "plugins" / "platforms" / "libqxcb.so"
    return path if path.is_file() else None


def missing_libraries(plugin: Path, run: Callable = subprocess.run) -> list[str]:
    """The shared libraries ``plugin`` needs that the loader cannot find (``ldd``'s "not
    found"); empty when none are missing or ``ldd`` cannot tell."""
    try:
        out = run(["ldd", str(plugin)], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    lines = [line for line in out.splitlines() if "=> not found" in line]
    return sorted({line.split("=>")[0].strip() for line in lines})


def debian_package(soname: str) -> str:
    """The Debian/Ubuntu package of a library by the naming rule: ``libxcb-cursor.so.0`` ->
    ``libxcb-cursor0``, ``libxkbcommon-x11.so.0`` -> ``libxkbcommon-x11-0``."""
    name, _, version = soname.partition(".so.")
    name, version = name.lower(), version.split(".")[0]
    if not version:
        return name
    return f"{name}-{version}" if name[-1].isdigit() else f"{name}{version}"


def problem(env: Mapping[str, str] = os.environ, run: Callable = subprocess.run) -> str | None:
    """One line saying what to install when Qt's X11 plugin would not load; None otherwise."""
    plugin = xcb_plugin() if uses_xcb(env) else None
    missing = missing_libraries(plugin, run) if plugin is not None else []
    if not missing:
        return None
    packages = " ".join(dict.fromkeys(debian_package(m) for m in missing))
    return (
        f"clp2p-studio: Qt's X11 plugin cannot load, the system lacks {', '.join(missing)}: "
        f"install it with 'sudo apt-get install {packages}' (all the studio needs: "
        f"'{APT_LINE}')"
    )
