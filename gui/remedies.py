"""The engine's remedies in the app's words: its menus and dialogs instead of command-line flags."""

from __future__ import annotations

from engine.batch import SlideOutcome
from engine.errors import EquiTriageError, Remedy

SETTINGS = "File ▸ Settings"

# Remedies not named here keep the engine's neutral wording.
APP_REMEDIES: dict[Remedy, str] = {
    Remedy.USE_SLIDE_FILE: "open a slide file, or a folder with File ▸ Triage a folder",
    Remedy.USE_FOLDER: "open it with File ▸ Open slide",
    Remedy.SET_MPP: "open it on its own (double-click) to enter its µm/px and analyse it",
    Remedy.CHOOSE_MODEL: f"choose an EquiTriage ONNX model in {SETTINGS}",
    Remedy.CHECK_MODEL_PATH: f"check the model file in {SETTINGS}",
    Remedy.REEXPORT_MODEL: f"choose a model made for this EquiTriage version in {SETTINGS}",
    Remedy.REINSTALL: f"reinstall EquiTriage, or choose another model in {SETTINGS}",
    Remedy.CHOOSE_OUTPUT_DIR: f"choose a results folder you can write to in {SETTINGS}",
    Remedy.ANALYSE_AGAIN: "analyse the slide again (Analysis ▸ Analyse slide)",
}


def app_message(exc: BaseException) -> str:
    """One line for the user: an engine error with the app's remedy, or a generic line otherwise."""
    if isinstance(exc, EquiTriageError):
        return exc.message(APP_REMEDIES)
    return f"unexpected error ({type(exc).__name__}: {exc}); see the log for details"


def outcome_message(outcome: SlideOutcome) -> str:
    """Why a slide of a folder triage failed, and what to do in the app."""
    return outcome.message(APP_REMEDIES)
