"""``clp2p-studio``: start the desktop workstation (or write a screenshot of it)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

from PySide6.QtCore import QStandardPaths
from PySide6.QtGui import QColor, QIcon, QPalette
from PySide6.QtWidgets import QApplication, QMessageBox

from clp2p.resources import resources_dir


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="clp2p-studio", description="clp2p Studio")
    p.add_argument("--session", help="open this session file")
    p.add_argument("--model", help="model to load (default: the one in the settings, 'shapes')")
    p.add_argument("--screenshot", help="write a PNG of the window and exit")
    p.add_argument(
        "--render", action="store_true", help="with --screenshot: render the selected node first"
    )
    p.add_argument("--data-dir", help="where autosave and logs go")
    return p


def apply_theme(app: QApplication) -> None:
    app.setStyle("Fusion")
    pal = QPalette()
    base, text, mid = QColor("#1f2125"), QColor("#e6e6e6"), QColor("#2b2d31")
    for role, colour in (
        (QPalette.ColorRole.Window, mid),
        (QPalette.ColorRole.WindowText, text),
        (QPalette.ColorRole.Base, base),
        (QPalette.ColorRole.AlternateBase, mid),
        (QPalette.ColorRole.Text, text),
        (QPalette.ColorRole.Button, QColor("#34373c")),
        (QPalette.ColorRole.ButtonText, text),
        (QPalette.ColorRole.Highlight, QColor("#2563eb")),
        (QPalette.ColorRole.HighlightedText, QColor("white")),
        (QPalette.ColorRole.ToolTipBase, base),
        (QPalette.ColorRole.ToolTipText, text),
        (QPalette.ColorRole.PlaceholderText, QColor("#8b8f97")),
    ):
        pal.setColor(role, colour)
    dimmed = QColor("#6b6f77")  # disabled buttons and fields must look disabled
    for role in (
        QPalette.ColorRole.WindowText,
        QPalette.ColorRole.Text,
        QPalette.ColorRole.ButtonText,
    ):
        pal.setColor(QPalette.ColorGroup.Disabled, role, dimmed)
    app.setPalette(pal)
    icon = resources_dir() / "icons" / "clp2p.png"
    if icon.is_file():
        app.setWindowIcon(QIcon(str(icon)))


def platform_ready() -> bool:
    """False, after one line saying what to install, when Qt's X11 plugin would not load
    (Qt would abort the process without saying what to do)."""
    if QApplication.instance() is not None:
        return True
    from .platform_check import problem

    missing = problem()
    if missing:
        print(missing, file=sys.stderr)
    return not missing


def main(argv: list[str] | None = None) -> int:
    import qasync

    from clp2p.workflows.service import EngineService

    from .document import Document
    from .settings import StudioSettings
    from .window import MainWindow

    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if not platform_ready():
        return 2
    app = QApplication.instance() or QApplication(sys.argv[:1])
    app.setApplicationName("clp2p Studio")
    app.setOrganizationName("clp2p")
    apply_theme(app)
    data_dir = Path(
        args.data_dir
        or QStandardPaths.writableLocation(QStandardPaths.StandardLocation.AppDataLocation)
    )
    data_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        filename=str(data_dir / "studio.log"),
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    loop = qasync.QEventLoop(app)
    asyncio.set_event_loop(loop)
    settings = StudioSettings()
    window = MainWindow(EngineService(), settings, data_dir)
    recovery = window.files.recovery
    if not args.screenshot and recovery.crashed_with_autosave():
        answer = QMessageBox.question(
            window, "clp2p Studio", "The last session did not end cleanly. Restore its autosave?"
        )
        if answer == QMessageBox.StandardButton.Yes:
            restored, problem = recovery.restore()
            if restored is not None:
                window.set_document(Document(*restored, unsaved=True))
            else:
                QMessageBox.warning(window, "clp2p Studio", problem)
        else:
            recovery.discard()
    if args.session and not window.files.open_path(args.session) and args.screenshot:
        print(f"clp2p-studio: error: {window.messages[-1]}", file=sys.stderr)
        return 2
    from dataclasses import replace

    spec = settings.model_spec
    if args.model or args.session:
        spec = replace(spec, model=args.model or window.doc.session.model)
    window.show()
    loaded = window.engine_jobs.load_model(spec)
    if args.screenshot:
        return loop.run_until_complete(_screenshot(window, loaded, args))
    window.files.start_autosave()
    with loop:
        loop.run_forever()
    return 0


async def _screenshot(window, loaded, args) -> int:
    try:
        await loaded
    except Exception as exc:  # the screenshot still shows the window
        print(f"clp2p-studio: model not loaded: {exc}", file=sys.stderr)
    if args.render:
        future = window.engine_jobs.render_node(window.current())
        try:
            await future
        except Exception as exc:
            print(f"clp2p-studio: render failed: {exc}", file=sys.stderr)
        await asyncio.sleep(0.1)
        window.heatmaps.select_first_word()
    await asyncio.sleep(0.2)
    QApplication.processEvents()
    ok = window.grab().save(args.screenshot)
    window.jobs.shutdown()
    window.files.recovery.clean_exit()
    print(f"wrote {args.screenshot}" if ok else f"could not write {args.screenshot}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
