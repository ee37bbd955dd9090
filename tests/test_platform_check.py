"""The studio's first start on a desktop without the X11 libraries Qt needs: one line naming
the packages, before Qt can abort the process."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from clp2p_studio import platform_check

LDD_MISSING = """\
\tlinux-vdso.so.1 (0x00007ffd)
\tlibQt6XcbQpa.so.6 => /venv/PySide6/Qt/lib/libQt6XcbQpa.so.6 (0x00007f46)
\tlibxcb-cursor.so.0 => not found
\tlibxkbcommon-x11.so.0 => not found
\tlibc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x00007f45)
"""


def _ldd(text: str):
    def run(cmd, **kw):
        assert cmd[0] == "ldd"
        return subprocess.CompletedProcess(cmd, 0, stdout=text, stderr="")

    return run


@pytest.mark.parametrize(
    "soname, package",
    [
        ("libxcb-cursor.so.0", "libxcb-cursor0"),
        ("libxkbcommon-x11.so.0", "libxkbcommon-x11-0"),
        ("libEGL.so.1", "libegl1"),
        ("libxcb-icccm.so.4", "libxcb-icccm4"),
    ],
)
def test_a_library_names_its_debian_package(soname, package):
    assert platform_check.debian_package(soname) == package


@pytest.mark.parametrize(
    "env, platform, xcb",
    [
        ({"DISPLAY": ":0"}, "linux", True),
        ({"DISPLAY": ":0", "WAYLAND_DISPLAY": "wayland-0"}, "linux", False),
        ({"DISPLAY": ":0", "QT_QPA_PLATFORM": "offscreen"}, "linux", False),
        ({"QT_QPA_PLATFORM": "xcb"}, "linux", True),
        ({"DISPLAY": ":0"}, "darwin", False),
    ],
)
def test_only_an_x11_start_on_linux_is_checked(env, platform, xcb):
    assert platform_check.uses_xcb(env, platform) is xcb


def test_missing_libraries_are_one_line_with_the_apt_command(monkeypatch):
    monkeypatch.setattr(platform_check, "xcb_plugin", lambda: Path("/venv/libqxcb.so"))
    line = platform_check.problem({"DISPLAY": ":0"}, _ldd(LDD_MISSING))
    assert line is not None and "\n" not in line
    assert "libxcb-cursor.so.0, libxkbcommon-x11.so.0" in line
    assert "sudo apt-get install libxcb-cursor0 libxkbcommon-x11-0'" in line
    assert (
        platform_check.problem({"DISPLAY": ":0"}, _ldd("\tlibc.so.6 => /lib/libc.so.6\n")) is None
    )
    assert platform_check.problem({"QT_QPA_PLATFORM": "offscreen"}, _ldd(LDD_MISSING)) is None


def test_the_studio_says_it_and_stops_before_qt_starts(monkeypatch, capsys):
    from PySide6.QtWidgets import QApplication

    from clp2p_studio import app

    monkeypatch.setattr(QApplication, "instance", staticmethod(lambda: None))
    monkeypatch.setattr(platform_check, "problem", lambda: "clp2p-studio: install libxcb-cursor0")
    assert app.main([]) == 2
    assert capsys.readouterr().err == "clp2p-studio: install libxcb-cursor0\n"


def test_readme_names_the_same_packages():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert platform_check.APT_LINE in readme
