"""The model cache (reloads a changed file, keeps the CACHE_MAX used last) and the codec a weights file records."""
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
    and every shipped model at once in both precisions (the JPEG model's four bands, the HEVC
    model's two, hevc-paper; bf16 and fp32: a service restoring in both once reloaded on every call)."""
    from fastreshuffle.inference import loading
    loading._CACHE.clear()
    for i in range(loading.CACHE_MAX + 2):
        loading.get_model(str(_weights(tmp_path / f"w{i}.safetensors", i)), "cpu")
        assert len(loading._CACHE) <= loading.CACHE_MAX
    loading._CACHE.clear()
    shipped = loading.available_models()
    assert len(shipped) <= loading.CACHE_MAX
    assert 2 * len(shipped) <= loading.CACHE_MAX
    both = [(m, p) for m in shipped for p in ("fp32", "bf16")]
    first = [loading.get_model(m, "cpu", precision=p) for m, p in both]
    for _ in range(2):
        assert all(loading.get_model(m, "cpu", precision=p) is n for (m, p), n in zip(both, first))   # none loaded again
    loading._CACHE.clear()


def test_the_model_cache_drops_the_model_used_longest_ago(tmp_path):
    """full, the cache drops the network used longest ago, not all of them (dropping all made a
    service that used one more network than the bound reload on every call)."""
    from fastreshuffle.inference import loading
    loading._CACHE.clear()
    files = [str(_weights(tmp_path / f"w{i}.safetensors", i)) for i in range(loading.CACHE_MAX + 1)]
    models = [loading.get_model(f, "cpu") for f in files[:-1]]
    assert loading.get_model(files[0], "cpu") is models[0]          # the first, used again: now the newest
    loading.get_model(files[-1], "cpu")                               # one more: the second goes
    assert len(loading._CACHE) == loading.CACHE_MAX
    assert loading.get_model(files[0], "cpu") is models[0]
    assert all(loading.get_model(f, "cpu") is m for f, m in zip(files[2:-1], models[2:]))
    assert loading.get_model(files[1], "cpu") is not models[1]       # loaded again
    loading._CACHE.clear()
