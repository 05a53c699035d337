"""Weights files: safetensors only, clear errors for truncated/tampered/mismatched/pickle files."""
from __future__ import annotations

import json
import pickle
import struct

import pytest
import torch

import fastreshuffle
from fastreshuffle import ReshuffleNet, ReshuffleNetConfig
from fastreshuffle.inference.loading import load_model
from fastreshuffle.io.weights import WeightsError, read_weights, save_weights


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return ReshuffleNet(ReshuffleNetConfig.preset("tiny")).eval()


@pytest.fixture()
def good(tmp_path, model):
    return save_weights(model, tmp_path / "tiny.safetensors", dtype=torch.float16)


def _header(path):
    data = path.read_bytes()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def _write_with_header(path, header, body):
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + body)


def test_roundtrip_fp16(good, model):
    cfg, state, meta = read_weights(good)
    assert cfg == model.config and meta["format"] == "fastreshuffle/1"
    assert all(v.dtype == torch.float16 for v in state.values())
    loaded = fastreshuffle.load_pretrained(good)
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        assert (loaded(x) - model(x)).abs().max().item() < 5e-3  # fp16 rounding of the weights


def test_the_same_weights_and_metadata_give_the_same_bytes(model, tmp_path):
    """safetensors orders the metadata by a randomly seeded hash map: without sorting, two saves
    of the same model differed in their header (a repeated training run could not be checked
    with a checksum)."""
    meta = {f"key{i}": str(i) for i in range(12)}
    blobs = set()
    for i in range(6):
        save_weights(model, tmp_path / f"w{i}.safetensors", metadata=meta)
        blobs.add((tmp_path / f"w{i}.safetensors").read_bytes())
    assert len(blobs) == 1
    cfg, state, got = read_weights(tmp_path / "w0.safetensors")
    assert cfg == model.config and {k: got[k] for k in meta} == meta
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("keep", [0, 7, 100, -50])
def test_truncated(good, tmp_path, keep):
    data = good.read_bytes()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(data[:keep] if keep >= 0 else data[:keep])
    with pytest.raises(WeightsError, match="bad.safetensors"):
        fastreshuffle.load_pretrained(bad)


def test_tampered_header_shape(good, tmp_path):
    header, body = _header(good)
    name = next(k for k in header if k != "__metadata__")
    header[name]["shape"] = [s + 1 for s in header[name]["shape"]]
    bad = tmp_path / "tampered.safetensors"
    _write_with_header(bad, header, body)
    with pytest.raises(WeightsError) as ei:
        fastreshuffle.load_pretrained(bad)
    assert "tampered.safetensors" in str(ei.value)


def test_tampered_values_nan(good, tmp_path):
    header, body = _header(good)
    name = next(k for k in header if k != "__metadata__")
    start, _ = header[name]["data_offsets"]
    body = bytearray(body)
    body[start:start + 2] = b"\x00\x7e"  # fp16 NaN
    bad = tmp_path / "nan.safetensors"
    _write_with_header(bad, header, bytes(body))
    with pytest.raises(WeightsError, match="NaN"):
        fastreshuffle.load_pretrained(bad)


def test_tampered_config_metadata(good, tmp_path):
    header, body = _header(good)
    header["__metadata__"]["config"] = '{"growth": [16, 8], "layers": [1]}'
    bad = tmp_path / "cfg.safetensors"
    _write_with_header(bad, header, body)
    with pytest.raises(WeightsError, match="config"):
        fastreshuffle.load_pretrained(bad)


@pytest.mark.parametrize("config, says", [
    ("[]", "JSON object"), ("null", "JSON object"), ('"tiny"', "JSON object"),
    ('{"growth": 16, "layers": [2, 3, 2]}', "growth must be a list"),
    ('{"growth": [16, 8, 4], "layers": [2, 3, 2], "bottleneck": 2.5}', "bottleneck: expected whole"),
    ('{"growth": [16, 8, 4], "layers": [2, 3, 2], "bottleneck": "2"}', "bottleneck: expected whole"),
    ('{"growth": [16, 8, 4], "layers": [2, 3, 2], "bottleneck": 2, "residual": "false"}', "residual"),
])
def test_malformed_config_metadata_is_named(good, tmp_path, config, says):
    """A config of the wrong JSON type, a fractional or string size, or "false" as a string (which
    once ran as residual=True) is refused with the reason, not a traceback or a silent change."""
    header, body = _header(good)
    header["__metadata__"]["config"] = config
    bad = tmp_path / "cfg.safetensors"
    _write_with_header(bad, header, body)
    with pytest.raises(WeightsError, match=f"bad model config.*{says}"):
        fastreshuffle.load_pretrained(bad)


@pytest.mark.parametrize("layers, says", [([2, 3, 2], "holds 29,856 weights.*needs"),
                                          ([10 ** 7] * 3, "has 30,000,000 dense layers, the file holds 30 tensors")])
def test_config_of_a_huge_network_is_refused_before_building(good, tmp_path, layers, says):
    """Wide layers: refused from the weight count (it once allocated 36 GB first); many layers:
    from the tensor count, before the weights are counted (a loop over 3 x 10^7 layers took 6 s)."""
    import time
    header, body = _header(good)
    header["__metadata__"]["config"] = json.dumps({"growth": [4000] * 3, "layers": layers,
                                                   "bottleneck": 64, "residual": True})
    bad = tmp_path / "huge.safetensors"
    _write_with_header(bad, header, body)
    t = time.perf_counter()
    with pytest.raises(WeightsError, match=says):
        fastreshuffle.load_pretrained(bad)
    assert time.perf_counter() - t < 2


def test_config_takes_whole_numbers_of_any_kind():
    """numpy / torch integers and floats with no fraction (a float32 array's elements) are sizes;
    a fraction, a string or a bool is not."""
    import numpy as np
    want = ReshuffleNetConfig.preset("tiny")
    for growth in (np.array([16, 8, 4]), np.array([16, 8, 4], np.float32), torch.tensor([16, 8, 4]), [16.0, 8, 4]):
        assert ReshuffleNetConfig(growth, (2, 3, 2), np.float32(2), np.bool_(True)) == want
    for bad in ([16.5, 8, 4], ["16", 8, 4], [True, 8, 4]):
        with pytest.raises(TypeError, match="growth: expected whole numbers"):
            ReshuffleNetConfig(bad, (2, 3, 2), 2, True)


def test_fp8_weights_are_named(model, tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "fp8.safetensors"
    save_file({k: v.to(torch.float8_e4m3fn).contiguous() for k, v in model.state_dict().items()}, str(p),
              metadata={"format": "fastreshuffle/1", "config": model.config.to_json()})
    with pytest.raises(WeightsError, match="dtype torch.float8_e4m3fn; weights are float16"):
        fastreshuffle.load_pretrained(p)


def test_missing_config_metadata(model, tmp_path):
    from safetensors.torch import save_file
    p = tmp_path / "nometa.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(p))
    with pytest.raises(WeightsError, match="no model config"):
        fastreshuffle.load_pretrained(p)


def test_shape_mismatch_names_the_tensor(model, tmp_path):
    from safetensors.torch import save_file
    state = {k: v.clone().contiguous() for k, v in model.state_dict().items()}
    state["tail.weight"] = torch.zeros(3, 7, 5, 5)
    p = tmp_path / "shape.safetensors"
    save_file(state, str(p), metadata={"format": "fastreshuffle/1", "config": model.config.to_json()})
    with pytest.raises(WeightsError) as ei:
        fastreshuffle.load_pretrained(p)
    assert "'tail.weight'" in str(ei.value) and "(3, 7, 5, 5)" in str(ei.value)


def test_other_config_does_not_fit(good):
    with pytest.raises(WeightsError, match="do not match"):
        load_model(good, config=ReshuffleNetConfig.preset("small"))


class _Boom:
    """Unpickling this would create a marker file: proves nothing is ever unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("protocol", [0, 2, 4])
def test_pickle_is_refused_and_never_executed(model, tmp_path, protocol):
    marker = tmp_path / "UNPICKLED"
    p = tmp_path / "evil.safetensors"
    p.write_bytes(pickle.dumps({"state": _Boom(marker)}, protocol=protocol))
    with pytest.raises(WeightsError):
        fastreshuffle.load_pretrained(p)
    assert not marker.exists()


def test_header_length_starting_like_a_pickle_loads(model, tmp_path):
    """A safetensors file whose header length's first byte is 0x80 (a pickle's first byte) is
    still a safetensors file (it was refused as a pickle before)."""
    from safetensors.torch import save_file
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    p = tmp_path / "w.safetensors"
    for pad in range(0, 2048, 8):
        save_file(state, str(p), metadata={"format": "fastreshuffle/1", "config": model.config.to_json(),
                                           "pad": "x" * pad})
        if p.read_bytes()[0] == 0x80:
            break
    assert p.read_bytes()[0] == 0x80
    cfg, loaded, _ = read_weights(p)
    assert cfg == model.config and all(torch.equal(loaded[k], v) for k, v in state.items())


def test_torch_save_is_refused(model, tmp_path):
    p = tmp_path / "model.pt"
    torch.save(model.state_dict(), p)
    with pytest.raises(WeightsError, match="pickle"):
        fastreshuffle.load_pretrained(p)
    legacy = tmp_path / "legacy.pth"
    torch.save(model.state_dict(), legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(WeightsError, match="pickle"):
        fastreshuffle.load_pretrained(legacy)


@pytest.mark.skipif(not hasattr(__import__("os"), "mkfifo"), reason="no named pipes here")
def test_a_weights_path_that_is_no_regular_file_is_said_to_be_one(tmp_path):
    """From a review: --model /dev/zero or a FIFO named .safetensors said "not a shipped model name
    and no such file"; it is there, and not a regular file."""
    import os
    fifo = tmp_path / "pipe.safetensors"
    os.mkfifo(fifo)
    for p in (fifo, "/dev/zero") if os.path.exists("/dev/zero") else (fifo,):
        with pytest.raises(WeightsError, match=f"^{p} is not a regular file \\(a pipe, socket or device\\)"):
            fastreshuffle.load_pretrained(p)


def test_folder_and_missing(tmp_path):
    with pytest.raises(WeightsError, match="folder"):
        fastreshuffle.load_pretrained(tmp_path)
    with pytest.raises(WeightsError, match="unknown model"):
        fastreshuffle.load_pretrained(tmp_path / "missing.safetensors")
    with pytest.raises(WeightsError, match=r"installed: hevc, hevc-low, hevc-paper, jpeg, jpeg-high, jpeg-low, jpeg-mid, webp;"):
        fastreshuffle.load_pretrained("paper")              # every name a user can pass is listed
