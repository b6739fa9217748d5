"""The plug-in point for analytics that need trained weights: an ONNX model run with onnxruntime.

Mask wearing, vendor counting or crime detection need weights this project does not ship.
An operator drops a model file on the agent and names it in the camera's
``analytics.onnx_model``; every second of a sample one frame goes through it:

- input: the model's first input, ``[1, 3, H, W]`` float32 RGB scaled to 0-1 (H and W
  from the model; a dynamic size gets 224 x 224);
- output: the first output, one score per label (``[1, N]``); labels come from
  ``analytics.onnx_labels`` or the model's ``labels`` metadata (comma separated), else
  ``class_<i>``.

The top score and its label are published as ``model_score`` and ``model_label``. The
frame stays on the agent. onnxruntime is imported only when a camera names a model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

DEFAULT_SIDE = 224


class OnnxPluginError(Exception):
    """A plug-in model cannot be loaded or does not have the expected shape."""


@dataclass(frozen=True, slots=True)
class Prediction:
    """The model's top label and score for one frame."""

    label: str
    score: float


class OnnxPlugin:
    """One loaded ONNX model; ``predict`` runs a BGR frame through it."""

    def __init__(self, path: str | Path, labels: tuple[str, ...] = ()) -> None:
        try:
            import onnxruntime  # type: ignore[import-untyped]
        except ImportError as err:  # the cctv extra pins it; a bare install may lack it
            raise OnnxPluginError(
                "onnxruntime is not installed (pip install kotahub[cctv])"
            ) from err
        options = onnxruntime.SessionOptions()
        # One thread: the agent shares its cores out between streams itself.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            self.session = onnxruntime.InferenceSession(
                str(path), sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as err:  # onnxruntime raises its own types per failure
            raise OnnxPluginError(f"cannot load ONNX model {path}: {err}") from err
        first = self.session.get_inputs()[0]
        shape = list(first.shape)
        if len(shape) != 4 or shape[1] not in (3, "3"):
            raise OnnxPluginError(f"{path}: input {first.name} is {shape}, expected [1, 3, H, W]")
        self.input_name = first.name
        self.height = shape[2] if isinstance(shape[2], int) else DEFAULT_SIDE
        self.width = shape[3] if isinstance(shape[3], int) else DEFAULT_SIDE
        meta = self.session.get_modelmeta().custom_metadata_map or {}
        self.labels = labels or tuple(
            label.strip() for label in meta.get("labels", "").split(",") if label.strip()
        )

    def predict(self, frame: npt.NDArray[Any]) -> Prediction:
        """The top label and score of one BGR frame."""
        rgb = cv2.cvtColor(
            cv2.resize(frame, (self.width, self.height), interpolation=cv2.INTER_AREA),
            cv2.COLOR_BGR2RGB,
        )
        tensor = (rgb.astype(np.float32) / 255.0).transpose(2, 0, 1)[np.newaxis]
        try:
            scores = np.ravel(self.session.run(None, {self.input_name: tensor})[0])
        except Exception as err:  # onnxruntime's own exception types, per failure
            raise OnnxPluginError(f"the model failed on a frame: {err}") from err
        if scores.size == 0 or not np.all(np.isfinite(scores)):
            raise OnnxPluginError("the model returned no finite scores")
        best = int(np.argmax(scores))
        label = self.labels[best] if best < len(self.labels) else f"class_{best}"
        return Prediction(label=label, score=float(scores[best]))
