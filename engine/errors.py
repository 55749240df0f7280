"""The one exception tree of EquiTriage: what went wrong, and separately what the user can do.

An error carries ``problem`` (what went wrong, for any front end) and ``remedy`` (a
:class:`Remedy`). Each front end words the remedy its own way (the CLI names its flags, the app
its menus) with :meth:`EquiTriageError.message`; ``str(exc)`` uses the neutral wording below.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import ClassVar


class Remedy(Enum):
    """What the user can do about an error, for a front end to put in its own words."""

    CHECK_PATH = "check_path"
    USE_SLIDE_FILE = "use_slide_file"
    USE_FOLDER = "use_folder"
    USE_SUPPORTED_FORMAT = "use_supported_format"
    CONVERT_TO_PYRAMID = "convert_to_pyramid"
    RESCAN_SLIDE = "rescan_slide"
    SET_MPP = "set_mpp"
    CHECK_MPP = "check_mpp"
    CHOOSE_MODEL = "choose_model"
    CHECK_MODEL_PATH = "check_model_path"
    REEXPORT_MODEL = "reexport_model"
    REINSTALL = "reinstall"
    CHOOSE_OUTPUT_DIR = "choose_output_dir"
    ANALYSE_AGAIN = "analyse_again"
    WAIT_FOR_OTHER_RUN = "wait_for_other_run"
    FREE_DISK_SPACE = "free_disk_space"
    INSTALL_CLUSTER = "install_cluster"
    CHECK_SCHEDULER = "check_scheduler"
    SECURE_SCHEDULER = "secure_scheduler"
    MATCH_WORKERS = "match_workers"
    SHARE_FOLDERS = "share_folders"


NEUTRAL_REMEDIES: Mapping[Remedy, str] = {
    Remedy.CHECK_PATH: "check the path",
    Remedy.USE_SLIDE_FILE: "give a slide file, or analyse the folder as a batch",
    Remedy.USE_FOLDER: "give a folder, or analyse the file on its own",
    Remedy.USE_SUPPORTED_FORMAT: (
        "use Aperio .svs, Hamamatsu, Leica .scn, MIRAX .mrxs, Philips/generic tiled TIFF, Ventana, "
        "DICOM, or PNG/JPEG/TIFF images"
    ),
    Remedy.CONVERT_TO_PYRAMID: "convert it to a pyramidal TIFF",
    Remedy.RESCAN_SLIDE: "re-export or re-scan it",
    Remedy.SET_MPP: "give its µm/px (e.g. 0.25 for a 40x scan, 0.5 for 20x)",
    Remedy.CHECK_MPP: "check its µm/px",
    Remedy.CHOOSE_MODEL: "choose an EquiTriage ONNX model",
    Remedy.CHECK_MODEL_PATH: "check the model path",
    Remedy.REEXPORT_MODEL: (
        "re-export it (`python -m training export`) or use a model made for this EquiTriage version"
    ),
    Remedy.REINSTALL: "reinstall EquiTriage",
    Remedy.CHOOSE_OUTPUT_DIR: "choose an output folder you can write to",
    Remedy.ANALYSE_AGAIN: "analyse the slide again",
    Remedy.WAIT_FOR_OTHER_RUN: "wait for the other run to finish, or choose another output folder",
    Remedy.FREE_DISK_SPACE: "free disk space (or choose another output folder) and run again",
    Remedy.INSTALL_CLUSTER: "install the cluster extra (in the source folder: pip install -e '.[cluster]')",
    Remedy.CHECK_SCHEDULER: "check the scheduler's address and that it is running",
    Remedy.SECURE_SCHEDULER: (
        "use a tls:// scheduler with certificates, or allow plain TCP on a network you trust"
    ),
    Remedy.MATCH_WORKERS: "install the same EquiTriage version and model on every worker",
    Remedy.SHARE_FOLDERS: "put slides, model and output on a filesystem every worker sees, at the same path",
}


def phrase(problem: str, remedy: Remedy | None, remedies: Mapping[Remedy, str] | None = None) -> str:
    """One line: ``problem; remedy``, the remedy worded from ``remedies`` or else neutrally."""
    if remedy is None:
        return problem
    advice = (remedies or {}).get(remedy) or NEUTRAL_REMEDIES[remedy]
    return f"{problem}; {advice}"


class EquiTriageError(Exception):
    """Base of every error the engine raises on purpose; its message is shown to the user."""

    default_remedy: ClassVar[Remedy | None] = None

    def __init__(self, problem: str, remedy: Remedy | None = None) -> None:
        super().__init__(problem)
        self.problem = problem
        self.remedy = remedy if remedy is not None else self.default_remedy

    def message(self, remedies: Mapping[Remedy, str] | None = None) -> str:
        """The one-line message with the remedy in a front end's words (``remedies``)."""
        return phrase(self.problem, self.remedy, remedies)

    def __str__(self) -> str:
        return self.message()

    def __reduce__(self) -> tuple[type[EquiTriageError], tuple[str, Remedy | None]]:
        return type(self), (self.problem, self.remedy)


class SlideError(EquiTriageError):
    """A slide could not be opened or read."""


class SlideNotFoundError(SlideError):
    """The slide path does not exist or is not a file."""

    default_remedy = Remedy.CHECK_PATH


class UnsupportedSlideError(SlideError):
    """No reader recognises the file."""

    default_remedy = Remedy.USE_SUPPORTED_FORMAT


class SlideReadError(SlideError):
    """The file opened but its pixels or properties could not be read."""

    default_remedy = Remedy.RESCAN_SLIDE


class MissingMppError(SlideError):
    """The slide does not say how many µm one pixel covers."""

    default_remedy = Remedy.SET_MPP


class SlideTooSmallError(SlideError):
    """The slide is smaller than one model patch."""

    default_remedy = Remedy.CHECK_MPP


class SlideTooCoarseError(SlideError):
    """The slide's µm/px is so much coarser than the model's that its tiles would be enlarged
    beyond recognition (usually a wrong µm/px: a magnification typed as µm/px)."""

    default_remedy = Remedy.CHECK_MPP


class ModelError(EquiTriageError):
    """The model file is missing, unreadable or carries no valid contract."""

    default_remedy = Remedy.REEXPORT_MODEL


class ModelNotFoundError(ModelError):
    """No model at the given path, or none shipped."""

    default_remedy = Remedy.CHECK_MODEL_PATH


class ContractError(ModelError):
    """The model's metadata has no valid EquiTriage contract."""


class OutputError(EquiTriageError):
    """Results could not be written."""

    default_remedy = Remedy.CHOOSE_OUTPUT_DIR


class ResultLockedError(OutputError):
    """Another running process is writing this result folder (``engine.identity.ResultLock``)."""

    default_remedy = Remedy.WAIT_FOR_OTHER_RUN


class ResultsError(EquiTriageError):
    """A result folder exists but its files cannot be read back."""

    default_remedy = Remedy.ANALYSE_AGAIN


class ClusterError(EquiTriageError):
    """A Dask cluster could not be used: not installed, unreachable, insecure or mismatched."""

    default_remedy = Remedy.CHECK_SCHEDULER


class WorkerMismatchError(ClusterError):
    """A worker runs another engine version or another model than the client."""

    default_remedy = Remedy.MATCH_WORKERS


class CancelledError(EquiTriageError):
    """The user cancelled the analysis."""
