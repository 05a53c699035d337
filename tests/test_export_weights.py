"""tools.export_weights: fp16 export with metadata, and --average (parameter-wise mean of runs)."""
import pytest
import torch

from fastreshuffle.io.weights import read_weights, save_weights
from fastreshuffle.nn import ReshuffleNet, ReshuffleNetConfig
from tools import export_weights

TINY = ReshuffleNetConfig(growth=(4, 4, 4), layers=(4, 3, 1), bottleneck=2)


def _run(path, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    net = ReshuffleNet(cfg)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_()          # the last conv starts at zero: give every tensor distinct values
    save_weights(net, path)
    return net.state_dict()


def test_export_is_fp16_of_source_with_meta(tmp_path):
    src = _run(tmp_path / "a.safetensors")
    assert export_weights.main([str(tmp_path / "a.safetensors"), str(tmp_path / "out.safetensors"),
                                "--meta", "steps=12"]) == 0
    cfg, state, meta = read_weights(tmp_path / "out.safetensors")
    assert cfg == TINY and meta["steps"] == "12" and "averaged" not in meta
    for k, v in src.items():
        assert state[k].dtype == torch.float16
        assert torch.equal(state[k], v.half())


def test_average_is_fp16_of_the_float64_mean(tmp_path):
    files = [tmp_path / f"{n}.safetensors" for n in "abc"]
    states = [_run(f, seed=i) for i, f in enumerate(files)]
    out = tmp_path / "soup.safetensors"
    assert export_weights.main([str(files[0]), str(out), "--average", str(files[1]), str(files[2])]) == 0
    _, state, meta = read_weights(out)
    assert meta["averaged"].split() == [str(f) for f in files]
    for k in states[0]:
        want = ((states[0][k].double() + states[1][k].double() + states[2][k].double()) / 3).half()
        assert torch.equal(state[k], want), k
        assert not torch.equal(state[k], states[0][k].half()), k   # it is not just the first file


def test_average_refuses_other_config_and_overwrite(tmp_path, capsys):
    a, b = tmp_path / "a.safetensors", tmp_path / "b.safetensors"
    _run(a)
    _run(b, cfg=ReshuffleNetConfig(growth=(4, 4, 4), layers=(4, 3, 2), bottleneck=2))
    out = tmp_path / "out.safetensors"
    assert export_weights.main([str(a), str(out), "--average", str(b)]) == 2
    assert "one config" in capsys.readouterr().err and not out.exists()
    out.write_bytes(b"mine")
    assert export_weights.main([str(a), str(out)]) == 2
    assert out.read_bytes() == b"mine"


@pytest.mark.parametrize("tool", ["export_weights", "grow_weights"])
def test_tools_say_bad_inputs_in_one_line(tool, tmp_path, capsys):
    import importlib
    main = importlib.import_module(f"tools.{tool}").main
    extra = ["--preset", "paper"] if tool == "grow_weights" else []
    text = tmp_path / "notes.txt"
    text.write_text("not weights")
    for argv, said in (([str(tmp_path / "missing.safetensors")], "missing.safetensors"),
                       ([str(text)], "notes.txt")):
        assert main(argv + [str(tmp_path / "out.safetensors")] + extra) == 2, argv
        err = capsys.readouterr().err
        assert said in err and err.count("\n") == 1, err
    assert not (tmp_path / "out.safetensors").exists()


def test_export_keeps_the_source_metadata_under_meta(tmp_path):
    # a run's codec decides how restore guards a file: an export that dropped it changed a
    # high-quality HEIF by up to 25 levels where the run's own file left it unchanged
    _run(tmp_path / "a.safetensors")
    cfg, state, _ = read_weights(tmp_path / "a.safetensors")
    net = ReshuffleNet(cfg)
    net.load_state_dict(state)
    save_weights(net, tmp_path / "run.safetensors", metadata={"codec": "hevc", "step": "100", "quality": "8-30"})
    out = tmp_path / "out.safetensors"
    assert export_weights.main([str(tmp_path / "run.safetensors"), str(out), "--meta", "quality=8-60"]) == 0
    meta = read_weights(out)[2]
    assert (meta["codec"], meta["step"], meta["quality"]) == ("hevc", "100", "8-60")
    from fastreshuffle.inference.loading import model_codec
    assert model_codec(out) == "hevc"


@pytest.mark.parametrize("key", ["config", "format"])
def test_meta_cannot_replace_the_files_own_keys(key, tmp_path, capsys):
    _run(tmp_path / "a.safetensors")
    out = tmp_path / "out.safetensors"
    assert export_weights.main([str(tmp_path / "a.safetensors"), str(out), "--meta", f"{key}=oops"]) == 2
    err = capsys.readouterr().err
    assert key in err and err.count("\n") == 1 and not out.exists()
    with pytest.raises(ValueError, match=key):
        save_weights(ReshuffleNet(TINY), out, metadata={key: "x"})


def test_export_never_replaces_a_link_or_a_file_made_meanwhile(tmp_path, monkeypatch):
    _run(tmp_path / "a.safetensors")
    link = tmp_path / "link.safetensors"
    link.symlink_to(tmp_path / "elsewhere" / "mine.safetensors")      # dangling: still the user's
    assert export_weights.main([str(tmp_path / "a.safetensors"), str(link)]) == 2
    assert link.is_symlink()
    out = tmp_path / "race.safetensors"
    load = export_weights.load_model

    def slow_load(*a, **k):     # another program writes the output while the tool works
        m = load(*a, **k)
        out.write_text("written meanwhile")
        return m
    monkeypatch.setattr(export_weights, "load_model", slow_load)
    assert export_weights.main([str(tmp_path / "a.safetensors"), str(out)]) == 2
    assert out.read_text() == "written meanwhile"
