"""--export: the run's model served without project code, as a SavedModel or as ONNX."""
import numpy as np
import pytest

from helpers import call_main, says


@pytest.mark.parametrize("name", ["unet", "unet_fused"])  # unet_fused: bilinear upsampling
def test_onnx_export_of_the_unet_runs_in_onnxruntime_as_keras_does(name, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")  # requirements-onnx.txt; CI installs it
    import model
    net = model.build_model(name, 11, 16, 16)
    rng = np.random.default_rng(3)
    for weight in net.weights:  # batch-norm statistics away from 0 and 1 too
        weight.assign(weight.numpy() + 0.05 * rng.standard_normal(weight.shape).astype("float32"))
    net.save(tmp_path / "model.keras")
    status, out, err = call_main(capsys, "--export", tmp_path / "served", "--format", "onnx",
                                 "--checkpoint", tmp_path / "model.keras")
    assert status == 0, err
    assert "onnxruntime.InferenceSession" in out
    session = ort.InferenceSession(str(tmp_path / "served" / "model.onnx"))
    images = np.random.default_rng(2).uniform(-1, 1, (5, 16, 16, 3)).astype(np.float32)
    served = session.run(None, {session.get_inputs()[0].name: images})[0]
    keras_logits = net(images, training=False).numpy()
    np.testing.assert_allclose(served, keras_logits, atol=1e-4)


def test_onnx_export_of_a_model_whose_ops_do_not_convert_is_one_sentence(tmp_path, capsys):
    import model
    from helpers import TINY
    net = model.build_model("gunet", 2, 16, 16)
    net.save(tmp_path / "model.keras")
    status, _, err = call_main(capsys, "--export", tmp_path / "served", "--format", "onnx",
                               "--checkpoint", tmp_path / "model.keras")
    assert status == 2 and says(err, "gunet", "SparseMatrixMatMul", "ONNX")
    assert not (tmp_path / "served").exists()
    status, _, err = call_main(capsys, *TINY, "--format", "onnx")
    assert status == 2 and says(err, "--format", "--export")
