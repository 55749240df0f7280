"""Entry point: ``equitriage [SLIDE]`` / ``python -m gui [SLIDE]``, and ``--screenshot OUT.png``.

Startup errors and uncaught exceptions are shown in a dialog and written to a log file, so a
frozen app with no console never dies silently.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def app_dir() -> Path:
    """The app's own folder for its log, beside where Qt keeps its settings on each platform."""
    if sys.platform == "win32":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Preferences"
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "EquiTriage"


LOG_FILE = app_dir() / "equitriage.log"


def headless_platform(env: Mapping[str, str], platform: str = sys.platform) -> str | None:
    """The Qt platform for an unattended ``--screenshot``: "offscreen" when there is no display
    to open a window on (Linux without DISPLAY or WAYLAND_DISPLAY) and none was chosen; None to
    let Qt choose (it would otherwise abort with a misleading xcb message)."""
    if env.get("QT_QPA_PLATFORM") or not platform.startswith("linux"):
        return None
    if env.get("DISPLAY") or env.get("WAYLAND_DISPLAY"):
        return None
    return "offscreen"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="equitriage", description="EquiTriage desktop app")
    p.add_argument("slide", nargs="?", type=Path, help="slide (or folder of slides) to open")
    p.add_argument("--screenshot", type=Path, metavar="OUT.png", help="save the window and exit")
    p.add_argument("--analyse", "--analyze", action="store_true", help="analyse before the screenshot")
    p.add_argument("--model", type=Path, help="EquiTriage ONNX model (default: settings / shipped)")
    p.add_argument("--output", type=Path, help="results folder (default: settings)")
    p.add_argument("--mpp", type=float, help="µm/px for a slide that does not record it")
    p.add_argument("--size", default="1500x950", help="window size for --screenshot (WxH)")
    p.add_argument("--tab", choices=("slide", "folder", "info"), default="slide", help="tab to show")
    p.add_argument("--verbose", "-v", action="store_true", help="debug logging")
    return p


def setup_logging(verbose: bool) -> None:
    """Log to a file (and to stderr when there is one); leave an existing setup alone."""
    if logging.getLogger().handlers:
        return
    handlers: list[logging.Handler] = []
    with contextlib.suppress(OSError):
        LOG_FILE.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(LOG_FILE, encoding="utf-8"))
    if sys.stderr is not None:  # a windowed frozen app has no stderr
        handlers.append(logging.StreamHandler())
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=handlers,
    )


def show_fatal(title: str, text: str, details: str = "") -> None:
    """A critical dialog, whatever state Qt is in; falls back to the log."""
    log.error("%s: %s\n%s", title, text, details)
    try:
        from PySide6.QtWidgets import QApplication, QMessageBox

        _app = QApplication.instance() or QApplication(sys.argv[:1])
        box = QMessageBox(QMessageBox.Icon.Critical, title, text)
        if details:
            box.setDetailedText(details)
        box.setInformativeText(f"Details are in {LOG_FILE}")
        box.exec()
        del _app
    except Exception:  # no Qt at all: the log is all we have
        log.exception("cannot show the error dialog")


def install_excepthook() -> None:
    """Uncaught exceptions in slots become a dialog instead of a silent crash."""

    def hook(kind: type[BaseException], exc: BaseException, tb: TracebackType | None) -> None:
        details = "".join(traceback.format_exception(kind, exc, tb))
        log.error("uncaught exception\n%s", details)
        from PySide6.QtWidgets import QApplication, QMessageBox

        if QApplication.instance() is not None:
            box = QMessageBox(
                QMessageBox.Icon.Critical,
                "Unexpected error",
                f"Something went wrong: {exc}\nThe app keeps running; details are in {LOG_FILE}.",
            )
            box.setDetailedText(details)
            box.exec()

    sys.excepthook = hook


def wait_until(done: Callable[[], bool], timeout_s: float) -> bool:
    """Run the event loop until ``done()`` or the timeout (checked every 10 ms)."""
    from PySide6.QtCore import QEventLoop, QTimer

    deadline = time.monotonic() + timeout_s
    loop = QEventLoop()
    check = QTimer()
    check.setInterval(10)

    def maybe_quit() -> None:
        if done() or time.monotonic() > deadline:
            loop.quit()

    check.timeout.connect(maybe_quit)
    check.start()
    loop.exec()
    check.stop()
    return done()


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging(args.verbose)
    if args.screenshot:
        platform = headless_platform(os.environ)
        if platform:
            log.info("no display: rendering the screenshot with Qt's %s platform", platform)
            os.environ["QT_QPA_PLATFORM"] = platform
    try:
        from PySide6.QtWidgets import QApplication

        from gui import qt_guard
        from gui.main_window import MainWindow
        from gui.settings import load_settings

        app = QApplication.instance() or QApplication([sys.argv[0]])
        qt_guard.check()
        app.setApplicationName("EquiTriage")
        app.setOrganizationName("EquiTriage")
        w, h = (int(v) for v in args.size.lower().split("x"))
        settings = load_settings()
        not_saved: dict[str, object] = {}
        if args.model:
            not_saved["model_path"] = settings.model_path
            settings.model_path = str(args.model.resolve())
        if args.output:
            not_saved["output_dir"] = settings.output_dir
            settings.output_dir = str(args.output.resolve())
        window = MainWindow(settings, not_saved)
        if args.screenshot:
            window.persist = False
            window.resize(w, h)
        window.show()
        if args.mpp:
            mpp: float = args.mpp
            window.ask_mpp = lambda _name: mpp  # type: ignore[method-assign, assignment]
        if args.slide:
            window.open_path(args.slide)
    except Exception as exc:
        if args.screenshot:  # unattended: no dialog to wait on, the log and stderr say it
            log.error("EquiTriage cannot start: %s\n%s", exc, traceback.format_exc())
        else:
            show_fatal("EquiTriage cannot start", str(exc), traceback.format_exc())
        return 3
    if args.screenshot:
        return screenshot(window, args.screenshot, args.analyse, args.tab, args.slide is not None)
    install_excepthook()
    return int(app.exec())


def screenshot(window: object, out: Path, analyse: bool, tab: str, has_slide: bool = True) -> int:
    """Wait for the slide or folder (and the analysis), save the window as PNG, exit."""
    from gui.main_window import MainWindow

    assert isinstance(window, MainWindow)
    if has_slide:
        wait_until(
            lambda: window.opened is not None or bool(window.folder.state.rows) or bool(window.errors),
            60,
        )
    if analyse and window.folder.state.rows and window.opened is None:
        window.folder.start()
        wait_until(lambda: window.folder.running, 60)
        wait_until(lambda: not window.folder.running, 1800)
    elif analyse and window.opened is not None:
        wait_until(lambda: window.model is not None or bool(window.model_error), 60)
        window.analyse()
        wait_until(lambda: not window.analysis.running and window.analysis.saved is not None, 1800)
        wait_until(lambda: not window.analysis.regions_pending, 60)
        if window.overlay.regions:
            window.go_to_region(0)
    if tab == "info":
        window.side_tabs.setCurrentWidget(window.info_panel)
    if tab == "folder" or (window.folder.state.rows and window.opened is None):
        window.tabs.setCurrentWidget(window.batch_view)
    wait_until(lambda: window.is_idle() and window.viewer._target_zoom is None, 60)
    wait_until(lambda: False, 0.3)
    ok = window.grab().save(str(out))
    window.close()
    if not ok:
        log.error("cannot write %s", out)
        return 1
    log.info("screenshot saved to %s", out)
    return 0
