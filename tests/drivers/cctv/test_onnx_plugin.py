"""The ONNX plug-in point with a real (tiny) model built here with the onnx package."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from drivers.cctv import FAMILY, generated_scenes
from drivers.cctv.camera_driver import AnalyticsConfig, SampleAnalytics, create_camera
from drivers.cctv.onnx_plugin import OnnxPlugin, OnnxPluginError
from drivers.framework import DeviceSpec, DriverConfigError, DriverError

LABELS = "red,green,blue"


def colour_model(path: Path, side: int = 32) -> Path:
    """A real ONNX graph: mean of each RGB channel, softmax over the three: 'which colour'."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, side, side])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    ten = helper.make_tensor("ten", TensorProto.FLOAT, [], [10.0])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["means"], keepdims=0),
            helper.make_node("Mul", ["means", "ten"], ["sharp"]),
            helper.make_node("Softmax", ["sharp"], ["scores"], axis=1),
        ],
        "colour",
        [image],
        [scores],
        initializer=[axes, ten],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    helper.set_model_props(model, {"labels": LABELS})
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_model_labels_a_frame_by_its_colour(tmp_path: Path) -> None:
    plugin = OnnxPlugin(colour_model(tmp_path / "colour.onnx"))
    assert plugin.labels == ("red", "green", "blue")
    blue_bgr = np.zeros((90, 160, 3), np.uint8)
    blue_bgr[:, :, 0] = 255
    prediction = plugin.predict(blue_bgr)
    assert prediction.label == "blue"
    assert prediction.score > 0.9


def test_plugin_runs_inside_a_sample(tmp_path: Path) -> None:
    model = colour_model(tmp_path / "colour.onnx")
    config = AnalyticsConfig(onnx_model=str(model))
    analytics = SampleAnalytics("cam-o", config, None, plugin=OnnxPlugin(model))
    for index, frame in enumerate(generated_scenes.moving_shapes(12)):
        analytics.on_frame(frame, index / 10)
    metrics = analytics.metrics()
    assert metrics["model_label"] in ("red", "green", "blue")
    assert 0.33 < float(metrics["model_score"]) <= 1.0
    assert set(metrics) <= set(FAMILY.device_type("rt_camera").metrics)


def test_missing_or_wrong_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OnnxPluginError, match="cannot load ONNX model"):
        OnnxPlugin(tmp_path / "absent.onnx")
    spec = DeviceSpec(
        device_id="cam-bad",
        device_type="rt_camera",
        protocol="onvif",
        address="127.0.0.1:80",
        driver_config={"analytics": {"onnx_model": str(tmp_path / "absent.onnx")}},
    )
    with pytest.raises(DriverConfigError, match=r"cam-bad: analytics\.onnx_model: no file"):
        FAMILY.validate(spec)
    (tmp_path / "broken.onnx").write_bytes(b"not a model")
    broken = DeviceSpec(
        device_id="cam-bad",
        device_type="rt_camera",
        protocol="onvif",
        address="127.0.0.1:80",
        driver_config={"analytics": {"onnx_model": str(tmp_path / "broken.onnx")}},
    )
    with pytest.raises(DriverError, match="cam-bad: cannot load ONNX model"):
        create_camera(broken, FAMILY.validate(broken))


def nan_model(path: Path, side: int = 16) -> Path:
    """A real model whose scores are NaN (log of a negative mean): a broken plug-in."""
    image = helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, side, side])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 3])
    axes = helper.make_tensor("axes", TensorProto.INT64, [2], [2, 3])
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["image", "axes"], ["means"], keepdims=0),
            helper.make_node("Neg", ["means"], ["negative"]),
            helper.make_node("Log", ["negative"], ["scores"]),
        ],
        "broken",
        [image],
        [scores],
        initializer=[axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    onnx.save(model, str(path))
    return path


def test_a_plugin_that_fails_on_frames_costs_only_its_own_metrics(tmp_path: Path) -> None:
    plugin = OnnxPlugin(nan_model(tmp_path / "nan.onnx"))
    with pytest.raises(OnnxPluginError, match="no finite scores"):
        plugin.predict(generated_scenes.moving_shapes(1)[0])
    config = AnalyticsConfig(people=True)
    analytics = SampleAnalytics("cam-n", config, None, plugin=plugin)
    for index, frame in enumerate(generated_scenes.walking_people(3, 2)):
        analytics.on_frame(frame, index / 10)
    metrics = analytics.metrics()
    assert "model_score" not in metrics
    assert abs(int(metrics["people_count"]) - 2) <= 1
