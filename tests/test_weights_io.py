"""mimo_fast.weights_io: the one safetensors reader/writer behind the detectors', the
precoders' and the training checkpoints' weight files."""
import os

import pytest
import torch

from mimo_fast import weights_io
from mimo_fast.weights_io import WeightsError


def test_round_trip_text_and_json_fields(tmp_path):
    path = tmp_path / "sub" / "w.safetensors"                       # the folder is created
    w = torch.nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
    weights_io.write(path, {"w": w, "b": torch.arange(4.0)},
                     {"model": "toy", "config": {"b": [1, 2], "a": None}, "n": 4, "record": {}}, text=("model",))
    state, fields = weights_io.read(path, "model", "is not a toy file")
    assert torch.equal(state["w"], w.detach()) and state["w"].dtype == torch.float64 and not state["w"].requires_grad
    assert fields == {"model": "toy", "config": {"a": None, "b": [1, 2]}, "n": 4, "record": {}}
    _, raw = weights_io.read_raw(path)
    assert raw["mimo_fast.model"] == "toy" and raw["mimo_fast.config"] == '{"a": null, "b": [1, 2]}'
    assert sorted(os.listdir(path.parent)) == ["w.safetensors"]      # no temporary file left


def test_clear_errors_name_the_file_and_the_field(tmp_path):
    good = tmp_path / "g.safetensors"
    weights_io.write(good, {"w": torch.ones(2)}, {"other": "x"}, text=("other",))
    with pytest.raises(WeightsError, match=r"g.safetensors' is not a toy file"):
        weights_io.read(good, "model", "is not a toy file")
    with pytest.raises(WeightsError, match="no such file"):
        weights_io.read_raw(tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"junk")
    with pytest.raises(WeightsError, match="not a readable safetensors file"):
        weights_io.read_raw(tmp_path / "junk.safetensors")
    from safetensors.torch import save_file
    save_file({"w": torch.ones(1)}, str(tmp_path / "j.safetensors"),
              metadata={"mimo_fast.model": "toy", "mimo_fast.config": "{oops"})
    with pytest.raises(WeightsError, match=r"'mimo_fast.config' is not valid JSON"):
        weights_io.read(tmp_path / "j.safetensors", "model", "")
    save_file({"w": torch.ones(1)}, str(tmp_path / "l.safetensors"),
              metadata={"mimo_fast.model": "toy", "mimo_fast.record": "[1]"})
    with pytest.raises(WeightsError, match=r"'mimo_fast.record' must be a JSON object, got list"):
        weights_io.read(tmp_path / "l.safetensors", "model", "")
    save_file({"w": torch.tensor([0.0, float("inf")])}, str(tmp_path / "n.safetensors"))
    with pytest.raises(WeightsError, match=r"tensor 'w' has 1 non-finite value\(s\) \(first inf at index \(1,\)\)"):
        weights_io.read_raw(tmp_path / "n.safetensors")


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "w.safetensors"
    weights_io.write(path, {"w": torch.ones(2)}, {"model": "toy"}, text=("model",))
    before = path.read_bytes()

    def broken(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        weights_io.atomic_write(path, broken)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["w.safetensors"]


def test_detect_precode_and_train_share_it():
    from mimo_fast.detect.learned import weights as det
    from mimo_fast.precode import weights as pre
    from mimo_fast.train import checkpoint
    assert det.WeightsError is pre.WeightsError is WeightsError and issubclass(checkpoint.CheckpointError, WeightsError)
    assert det.atomic_write is weights_io.atomic_write and det.read_raw is weights_io.read_raw
    assert det.SHIPPED_DIR == pre.SHIPPED_DIR == weights_io.SHIPPED_DIR and (weights_io.SHIPPED_DIR / "README.md").is_file()
