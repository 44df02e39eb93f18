"""The onnxruntime session: provider selection, the model's own input/output spec, warm-up."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from service import fleet, gpu
from service.contract import DIGIT_SCORE, PIXEL_MAX, PROBABILITIES, Meta

log = logging.getLogger(__name__)

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
# cuDNN's heuristic conv-algorithm choice: a new batch shape costs no exhaustive benchmark run.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}
# onnxruntime's logger severities (0 verbose .. 4 fatal).
ORT_WARNING, ORT_FATAL = 2, 4

# onnxruntime type strings -> (KServe V2 datatype, numpy dtype).
_TYPES = {
    "tensor(float)": ("FP32", np.float32),
    "tensor(double)": ("FP64", np.float64),
    "tensor(float16)": ("FP16", np.float16),
    "tensor(uint8)": ("UINT8", np.uint8),
    "tensor(int8)": ("INT8", np.int8),
    "tensor(int32)": ("INT32", np.int32),
    "tensor(int64)": ("INT64", np.int64),
}


class ModelLoadError(RuntimeError):
    """The model cannot be served as configured (missing file, wrong spec, provider not active)."""


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the model declares it; -1 marks the dynamic batch dimension."""

    name: str
    datatype: str
    dtype: np.dtype
    shape: tuple[int, ...]

    @classmethod
    def from_node(cls, node: Any) -> TensorSpec:
        if node.type not in _TYPES:
            raise ModelLoadError(f"tensor {node.name!r} has unsupported type {node.type}")
        datatype, dtype = _TYPES[node.type]
        shape = tuple(dim if isinstance(dim, int) and dim > 0 else -1 for dim in node.shape)
        return cls(node.name, datatype, np.dtype(dtype), shape)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}


def cuda_problem(available: list[str]) -> str | None:
    """Why CUDA cannot run the model here, found without asking onnxruntime to load it (which prints its
    loader errors on a host without a GPU), or None."""
    if CUDA not in available:
        return "this onnxruntime build has no CUDA provider"
    return gpu.problem()


def requested_providers(preference: str, problem: str | None) -> list[Any]:
    """Providers to ask onnxruntime for: `auto` tries CUDA unless `problem` (cuda_problem) rules it out,
    `cuda` always does; CPU always backs up."""
    if preference == "cpu" or (preference == "auto" and problem is not None):
        return [CPU]
    return [(CUDA, CUDA_OPTIONS), CPU]


def check_active(preference: str, active: list[str], problem: str | None) -> None:
    """onnxruntime silently falls back to CPU when CUDA fails to load; a demand for CUDA must not."""
    if preference == "cuda" and CUDA not in active:
        found = f": {problem}" if problem else ""
        raise ModelLoadError(
            "MNIST_PROVIDERS=cuda but the CUDA execution provider is not active "
            f"(onnxruntime runs on {active}){found}; check the GPU, driver, CUDA and cuDNN libraries, "
            "or use MNIST_PROVIDERS=auto to allow CPU"
        )


@contextlib.contextmanager
def _loader_output_held() -> Iterator[io.StringIO]:
    """What onnxruntime says while it tries to load CUDA, held back: preload_dlls prints each library it
    cannot load, and the default logger writes the provider's failure to stderr."""
    printed = io.StringIO()
    ort.set_default_logger_severity(ORT_FATAL)
    try:
        with contextlib.redirect_stdout(printed):
            yield printed
    finally:
        ort.set_default_logger_severity(ORT_WARNING)  # onnxruntime's default (it offers no getter)


def open_session(data: bytes, options: ort.SessionOptions, preference: str) -> Any:
    """The onnxruntime session. `auto` tries CUDA only where the driver sees a GPU, and then quietly: if it
    does not load, one line says so (explain_cpu). `cuda` lets onnxruntime's loader errors through: they
    say exactly which library is missing."""
    problem = cuda_problem(ort.get_available_providers()) if preference != "cpu" else None
    requested = requested_providers(preference, problem)
    if requested[0] == CPU:
        if problem is not None:
            explain_cpu(problem, gpu_unused=False)
        return ort.InferenceSession(data, options, providers=requested)
    # CUDA and cuDNN from the nvidia-* wheels (the `cuda` extra) are not on the loader's path.
    preload = getattr(ort, "preload_dlls", lambda: None)
    if preference == "cuda":
        preload()
        session = ort.InferenceSession(data, options, providers=requested)
        check_active(preference, session.get_providers(), problem)
        return session
    with _loader_output_held() as printed:
        preload()
        session = ort.InferenceSession(data, options, providers=requested)
    if CUDA not in session.get_providers():
        failed = [line for line in printed.getvalue().splitlines() if line.startswith("Failed to load")]
        more = f"; {len(failed) - 1} more" if len(failed) > 1 else ""
        detail = f" ({failed[0]}{more})" if failed else ""
        reason = (
            f"the driver sees a GPU but onnxruntime's CUDA provider did not load{detail}; "
            "MNIST_PROVIDERS=cuda shows onnxruntime's own loader errors"
        )
        explain_cpu(reason, gpu_unused=True)
    return session


@cache
def explain_cpu(reason: str, *, gpu_unused: bool) -> None:
    """Say once per process (reloads do not repeat it) why `auto` runs on CPU: a warning if a GPU is left
    unused, else at info level. In a worker of mnist-serve only at debug level: the CLI said it already,
    checking the model before it started the workers."""
    level = logging.WARNING if gpu_unused else logging.INFO
    log.log(
        logging.DEBUG if fleet.supervised() else level,
        "onnxruntime runs on CPU, not CUDA: %s",
        reason,
        extra={"event": "provider_fallback", "reason": reason},
    )


def read_card(path: Path, sha256: str) -> dict[str, Any]:
    """The model card beside the model, if it describes these bytes (a card left from another model is
    ignored); a card that is not a JSON object is a load error, not a traceback."""
    if not path.is_file():
        return {}
    try:
        card = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"model card {path} is not readable JSON: {exc}") from None
    if not isinstance(card, dict):
        raise ModelLoadError(f"model card {path} must be a JSON object")
    if card.get("onnx_sha256", sha256) != sha256:
        log.warning("ignoring %s: it describes another model file (onnx_sha256 differs)", path)
        return {}
    return card


class ModelRuntime:
    """One onnxruntime session plus what clients may know about the model."""

    def __init__(self, path: Path, providers: str = "auto", intra_op_threads: int = 1) -> None:
        # Read once: the hash and the session describe the same bytes even if the file is being replaced.
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ModelLoadError(f"model file not found: {path} (set MNIST_MODEL_PATH)") from None
        except OSError as exc:
            raise ModelLoadError(f"cannot read model file {path}: {exc.strerror}") from None
        options = ort.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        # Spinning intra-op threads would steal the cores the HTTP event loops need.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = open_session(data, options, providers)
        except ModelLoadError:
            raise
        except Exception as exc:  # onnxruntime raises its own untyped errors for unreadable models
            raise ModelLoadError(f"cannot load {path}: {exc}") from exc
        self.providers: list[str] = self.session.get_providers()
        self.path = path
        self.inputs = [TensorSpec.from_node(node) for node in self.session.get_inputs()]
        self.outputs = [TensorSpec.from_node(node) for node in self.session.get_outputs()]
        if len(self.inputs) != 1 or self.inputs[0].shape[0] != -1 or -1 in self.inputs[0].shape[1:]:
            raise ModelLoadError(f"expected one input with only a dynamic batch dimension, got {self.inputs}")
        shapes = {spec.name: spec.shape for spec in self.outputs}  # the batch dimension: warm-up checks it
        if shapes.get(PROBABILITIES, ())[1:] != (10,):
            raise ModelLoadError(f"model needs a {PROBABILITIES!r} output shaped [N, 10]: {self.outputs}")
        if len(shapes.get(DIGIT_SCORE, (-1,))) != 1:
            raise ModelLoadError(f"the {DIGIT_SCORE!r} output must be shaped [N]: {self.outputs}")

        self.metadata: dict[str, str] = self.session.get_modelmeta().custom_metadata_map
        self.name = self.metadata.get(Meta.NAME, path.stem)
        self.version = self.metadata.get(Meta.VERSION, "0")
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.card = read_card(path.with_suffix(".json"), self.sha256)
        log.info(
            "loaded %s %s from %s on %s (%d intra-op threads)",
            self.name,
            self.version,
            path,
            self.providers,
            intra_op_threads,
            extra={
                "event": "model_loaded",
                "model": self.name,
                "version": self.version,
                "providers": self.providers,
            },
        )

    @property
    def input(self) -> TensorSpec:
        return self.inputs[0]

    @property
    def provider(self) -> str:
        """The provider that runs the graph (the first active one)."""
        return self.providers[0]

    @property
    def item_shape(self) -> tuple[int, ...]:
        """Shape of one example, e.g. (1, 28, 28)."""
        return self.input.shape[1:]

    @property
    def image_shape(self) -> tuple[int, int]:
        """(height, width) of one image: the last two input dimensions."""
        return self.item_shape[-2:]

    def from_pixels(self, images: np.ndarray) -> np.ndarray:
        """uint8 images [n, ...] of h*w values each (0..255, MNIST convention) -> model input
        [n, *item_shape] in [0, 1]."""
        return np.divide(images, PIXEL_MAX, dtype=self.input.dtype).reshape(len(images), *self.item_shape)

    def run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Outputs by name for a batch shaped like the model input."""
        values = self.session.run(None, {self.input.name: x})
        return {spec.name: value for spec, value in zip(self.outputs, values, strict=True)}

    def warm_up(self, max_batch_size: int, min_seconds: float) -> None:
        """Run every batch shape 1..max_batch_size once, so no request pays for a first run; repeat the
        round until `min_seconds` have passed (MNIST_WARMUP_MIN_S)."""
        started = time.monotonic()
        while True:
            for size in range(1, max_batch_size + 1):
                self.run(np.zeros((size, *self.item_shape), dtype=self.input.dtype))
            if time.monotonic() - started >= min_seconds:
                return

    @property
    def scores_digits(self) -> bool:
        return any(spec.name == DIGIT_SCORE for spec in self.outputs)

    def describe(self) -> dict[str, Any]:
        """Public metadata for /v1/models/<name>."""
        return {
            "name": self.name,
            "version": self.version,
            "sha256": self.sha256,
            "test_accuracy": self.card.get("test_accuracy", _number(self.metadata.get(Meta.TEST_ACCURACY))),
            "providers": self.providers,
            "inputs": [spec.as_dict() for spec in self.inputs],
            "outputs": [spec.as_dict() for spec in self.outputs],
        }


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text is not None else None
    except ValueError:
        return None
