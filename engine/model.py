"""The ONNX classifier and its contract: load, check, predict tumour probabilities."""

from __future__ import annotations

import hashlib
import logging
import os
import sys
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from engine.contract import ModelContract
from engine.errors import ContractError, ModelError, ModelNotFoundError, Remedy
from engine.preprocess import prepare

log = logging.getLogger(__name__)

MODEL_FILE = "model.onnx"
MODEL_ENV = "EQUITRIAGE_MODEL"


def assets_dirs() -> list[Path]:
    """Where shipped assets may live: the frozen bundle, the source tree, an installed prefix."""
    dirs: list[Path] = []
    frozen = getattr(sys, "_MEIPASS", None)
    if frozen:
        dirs.append(Path(frozen) / "assets")
    dirs.append(Path(__file__).resolve().parents[1] / "assets")
    dirs.append(Path(sys.prefix) / "share" / "equitriage" / "assets")
    return dirs


def default_model_path() -> Path:
    """The shipped model (``EQUITRIAGE_MODEL`` overrides); raise if none is shipped."""
    env = os.environ.get(MODEL_ENV)
    if env:
        return Path(env)
    for folder in assets_dirs():
        if (folder / MODEL_FILE).is_file():
            return folder / MODEL_FILE
    raise ModelNotFoundError("no model is shipped with this installation", Remedy.CHOOSE_MODEL)


def verify_shipped(path: Path, sha256: str) -> None:
    """Check the shipped model against the sha256 recorded beside it (required in a frozen bundle)."""
    record = path.with_name(path.name + ".sha256")
    if not record.is_file():
        if getattr(sys, "frozen", False):
            raise ModelError("the shipped model's checksum record is missing", Remedy.REINSTALL)
        return
    expected = record.read_text(encoding="ascii", errors="replace").split()
    if not expected or expected[0].lower() != sha256:
        raise ModelError(
            f"{path.name}: the shipped model file is damaged or was modified (sha256 mismatch)",
            Remedy.REINSTALL,
        )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Model:
    """A loaded classifier: ``predict`` maps RGB patches to tumour probabilities."""

    def __init__(self, session: object, contract: ModelContract, path: Path, sha256: str) -> None:
        self._session = session
        self.contract = contract
        self.path = path
        self.sha256 = sha256

    @property
    def version(self) -> str:
        return self.contract.model_version

    @classmethod
    def load(cls, path: str | Path | None = None, threads: int | None = None) -> Model:
        """Load an EquiTriage ONNX model (``None``: the shipped one) on ``threads`` (None: all cores)."""
        import onnxruntime as ort

        ort.disable_telemetry_events()  # an offline medical tool reports nothing anywhere
        p = Path(path) if path is not None else default_model_path()
        if not p.is_file():
            raise ModelNotFoundError(f"{p}: no model file there")
        try:
            sha256 = file_sha256(p)
        except OSError as exc:  # e.g. not readable by this user
            raise ModelError(f"{p}: cannot be read ({exc.strerror or exc})", Remedy.CHECK_MODEL_PATH) from exc
        if path is None:
            verify_shipped(p, sha256)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or (os.cpu_count() or 1)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            session = ort.InferenceSession(str(p), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises several unrelated types for bad files
            raise ModelError(f"{p.name}: not a valid ONNX model ({_first_line(exc)})") from exc
        contract = ModelContract.from_metadata(session.get_modelmeta().custom_metadata_map)
        _check_io(session, contract, p)
        log.info("loaded model %s (%s)", p, contract.model_version)
        return cls(session, contract, p, sha256)

    def predict(self, patches: NDArray[np.uint8], batch_size: int = 64) -> NDArray[np.float32]:
        """Tumour probability of each uint8 RGB patch (N x H x W x 3) -> float32 (N,)."""
        if patches.ndim != 4 or patches.shape[-1] != 3 or patches.dtype != np.uint8:
            raise ValueError(f"patches must be uint8 N x H x W x 3, got {patches.dtype} {patches.shape}")
        out = np.empty(len(patches), dtype=np.float32)
        for start in range(0, len(patches), batch_size):
            chunk = patches[start : start + batch_size]
            out[start : start + len(chunk)] = self.predict_prepared(prepare(chunk, self.contract))
        return out

    def predict_prepared(self, x: NDArray[np.float32]) -> NDArray[np.float32]:
        """Probabilities for an already prepared N x 3 x S x S input tensor."""
        c = self.contract
        (logits,) = self._session.run([c.output_name], {c.input_name: x})  # type: ignore[attr-defined]
        return self._probabilities(logits)

    def infer_prepared(
        self, x: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.float32] | None]:
        """Probabilities and, if the model exports them, its pooled features (N x F), in one run."""
        c = self.contract
        if c.features_name is None:
            return self.predict_prepared(x), None
        logits, features = self._session.run(  # type: ignore[attr-defined]
            [c.output_name, c.features_name], {c.input_name: x}
        )
        return self._probabilities(logits), np.asarray(features, dtype=np.float32)

    def _probabilities(self, logits: NDArray[np.float32]) -> NDArray[np.float32]:
        z = np.asarray(logits, dtype=np.float64)
        z -= z.max(axis=1, keepdims=True)
        expd = np.exp(z)
        probs: NDArray[np.float32] = (expd[:, self.contract.positive_index] / expd.sum(axis=1)).astype(
            np.float32
        )
        return probs


def _check_io(session: object, contract: ModelContract, path: Path) -> None:
    inputs = {i.name: i for i in session.get_inputs()}  # type: ignore[attr-defined]
    outputs = {o.name: o for o in session.get_outputs()}  # type: ignore[attr-defined]
    if contract.input_name not in inputs or contract.output_name not in outputs:
        raise ContractError(
            f"{path.name}: the contract names input {contract.input_name!r} and output "
            f"{contract.output_name!r}, the graph has {sorted(inputs)} -> {sorted(outputs)}"
        )
    if contract.features_name is not None and contract.features_name not in outputs:
        raise ContractError(
            f"{path.name}: the contract names a features output {contract.features_name!r}, "
            f"the graph has {sorted(outputs)}"
        )
    shape = inputs[contract.input_name].shape
    expected = [3, contract.input_size, contract.input_size]
    if len(shape) != 4 or [d if isinstance(d, int) else None for d in shape[1:]] != expected:
        raise ContractError(
            f"{path.name}: input shape {shape} does not match the contract's "
            f"N x {expected[0]} x {expected[1]} x {expected[2]}"
        )
    out_shape = outputs[contract.output_name].shape
    n_scores = out_shape[1] if len(out_shape) == 2 else None
    if len(out_shape) != 2 or (isinstance(n_scores, int) and n_scores != len(contract.classes)):
        raise ContractError(
            f"{path.name}: output shape {out_shape} does not give one score per class "
            f"{list(contract.classes)}"
        )


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__
