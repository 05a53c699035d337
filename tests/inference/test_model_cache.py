"""The model cache (reloads a changed file, holds at most four) and the codec a weights file records."""
import os

import torch


def _weights(path, seed):
    from fastreshuffle import PRESETS, ReshuffleNet
    from fastreshuffle.io.weights import save_weights
    torch.manual_seed(seed)
    return save_weights(ReshuffleNet(PRESETS["tiny"]), path, overwrite=True)


def test_cached_model_is_reloaded_when_its_file_changes(tmp_path):
    """get_model caches by path, but a weights file replaced in place (a new checkpoint) is
    loaded again, not served from the cache."""
    from fastreshuffle.inference.loading import get_model
    p = tmp_path / "w.safetensors"
    _weights(p, 0)
    a = get_model(str(p), "cpu")
    assert get_model(str(p), "cpu") is a                      # cached while unchanged
    st = p.stat()
    _weights(p, 1)
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10 ** 9))   # a later time stamp, whatever the clock
    b = get_model(str(p), "cpu")
    assert b is not a
    sa, sb = a.state_dict(), b.state_dict()
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_a_weights_file_loaded_by_path_knows_its_codec(tmp_path):
    """a weights file (a training run's best.safetensors) says the codec it was trained for;
    loaded by path, the model carries it, so that restore() guards it as that codec (an HEVC file
    loaded by path was taken for a network of unknown codec)."""
    from fastreshuffle import PRESETS, ReshuffleNet
    from fastreshuffle.inference.loading import load_model, model_codec
    from fastreshuffle.io.weights import save_weights
    for codec, meta in (("hevc", {"codec": "hevc"}), ("jpeg", {"command": "fastreshuffle train --codec jpeg:444"})):
        p = save_weights(ReshuffleNet(PRESETS["tiny"]), tmp_path / f"{codec}.safetensors", metadata=meta)
        assert model_codec(str(p)) == codec
        assert load_model(p, "cpu").codec == codec
        assert model_codec(load_model(str(p), "cpu")) == codec


def test_the_model_cache_holds_at_most_cache_max_models(tmp_path):
    """a process restoring with many weights files keeps no more than CACHE_MAX loaded networks,
    and every shipped model at once (the JPEG model's four bands, the HEVC model's two)."""
    from fastreshuffle.inference import loading
    loading._CACHE.clear()
    for i in range(loading.CACHE_MAX + 2):
        loading.get_model(str(_weights(tmp_path / f"w{i}.safetensors", i)), "cpu")
        assert len(loading._CACHE) <= loading.CACHE_MAX
    loading._CACHE.clear()
    shipped = loading.available_models()
    assert len(shipped) <= loading.CACHE_MAX
    first = [loading.get_model(m, "cpu") for m in shipped]
    assert all(loading.get_model(m, "cpu") is n for m, n in zip(shipped, first))   # none loaded again
