"""tools.preset_study's report: the gain at each CPU-time mark, '-' where a run did not get there."""
import pytest

from tools import preset_study

HEADER = "step,epoch_images,lr,loss,val_psnr,val_psnr_codec,val_gain,seconds,cpu_seconds,images_per_s\n"


def write_log(run, rows):
    run.mkdir(parents=True)
    lines = [HEADER] + [f"{s},0,0.0005,,30,29,{g},{c * 1.5},{c},\n" for s, c, g in rows]
    lines.insert(2, f"{rows[0][0] + 1},0,0.0005,0.03,,,,1,{rows[0][1] + 1},40\n")   # a training row
    (run / "log.csv").write_text("".join(lines))


def test_report_marks(tmp_path, capsys):
    write_log(tmp_path / "small", [(100, 600, 0.30), (200, 1200, 0.40), (300, 1790, 0.50), (400, 3000, 0.60)])
    write_log(tmp_path / "medium", [(50, 610, 0.20), (100, 1210, 0.35)])
    assert preset_study.main(["--out", str(tmp_path), "--report", "-", "--marks", "10", "20", "30", "50"]) == 0
    table = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if line.startswith("| ")}
    assert "| 10 min | 20 min | 30 min | 50 min |" in rows["preset"]
    # each cell: the last validation at or before the mark (2% slack), '-' past the run's end
    assert "| +0.300 | +0.400 | +0.500 | +0.600 | 400 |" in rows["small"]
    assert "| +0.200 | +0.350 | - | - | 100 |" in rows["medium"]
    assert "paper" not in rows


def test_report_default_marks_are_quarters_of_budget(tmp_path, capsys):
    write_log(tmp_path / "small", [(100, 450, 0.30), (200, 900, 0.40), (300, 1350, 0.50), (400, 1800, 0.60)])
    assert preset_study.main(["--out", str(tmp_path), "--report", "-", "--budget", "1800"]) == 0
    table = capsys.readouterr().out
    assert "| 7.5 min | 15 min | 22.5 min | 30 min |" in table
    assert "| +0.300 | +0.400 | +0.500 | +0.600 |" in table


def test_resume_that_restarted_the_cpu_count(tmp_path, capsys):
    """A run checkpointed before the cumulative count was kept restarts cpu_seconds at its resume:
    the report and spent() continue it (else the resumed part would be filed under the first
    minutes, and the tool would train the run again)."""
    run = tmp_path / "small"
    write_log(run, [(100, 900, 0.30), (200, 1800, 0.40)])
    with open(run / "log.csv", "a") as f:                     # resumed: the count starts again at 0
        f.write("300,0,0.0005,,30,29,0.5,10,900,\n400,0,0.0005,,30,29,0.6,20,1790,\n")
    (run / "state.json").write_text('{"cpu_seconds": 1790}')
    assert preset_study.cumulative_cpu([{"cpu_seconds": "5"}, {}, {"cpu_seconds": "9"}, {"cpu_seconds": "2"}]) \
        == [5.0, None, 9.0, 11.0]
    assert preset_study.spent(run) == 1800 + 1790
    assert preset_study.main(["--out", str(tmp_path), "--report", "-", "--marks", "15", "30", "45", "60"]) == 0
    assert "| +0.300 | +0.400 | +0.500 | +0.600 | 400 |" in capsys.readouterr().out


def test_train_command(tmp_path, monkeypatch):
    """What the tool runs: the shared recipe, the CPU budget left (a resumed run gets only the
    rest), the validation cadence spread over the whole budget, and checkpoints when asked."""
    cmds = []
    monkeypatch.setattr(preset_study.subprocess, "run", lambda cmd, check: cmds.append(cmd))
    assert preset_study.main(["--out", str(tmp_path), "--budget", "1000", "--presets", "small",
                              "--validations", "20", "--checkpoint-every", "300"]) == 0
    write_log(tmp_path / "medium", [(100, 400, 0.3)])
    (tmp_path / "medium" / "state.json").write_text('{"cpu_seconds": 400}')
    (tmp_path / "medium" / "state.safetensors").write_bytes(b"")   # a checkpoint's file: the run resumes
    assert preset_study.main(["--out", str(tmp_path), "--budget", "1000", "--presets", "medium"]) == 0
    small, medium = cmds

    def arg(cmd, flag):
        return cmd[cmd.index(flag) + 1] if flag in cmd else None

    assert small[small.index("--preset") + 1] == "small" and "--resume" not in small
    assert arg(small, "--time-budget") == "1000" and arg(small, "--checkpoint-every") == "300"
    assert arg(small, "--val-every") == str(preset_study.val_every("small", 1000, 20)) == "100"
    assert all(x in small for x in preset_study.RECIPE)
    # spent: the log's latest count (write_log's training row, at 401 s) beats state.json's 400
    assert "--resume" in medium and arg(medium, "--time-budget") == "599"
    assert arg(medium, "--checkpoint-every") is None
    assert arg(medium, "--val-every") == str(preset_study.val_every("medium", 1000))
    # a deviation from the recipe, for a preset that diverges at its settings: its own --lr, a clip
    assert preset_study.main(["--out", str(tmp_path / "dev"), "--budget", "1000", "--presets", "paper",
                              "--lr", "2.5e-4", "--grad-clip", "0.5"]) == 0
    dev = cmds.pop()
    assert arg(dev, "--lr") == "0.00025" and dev.count("--lr") == 1 and arg(dev, "--grad-clip") == "0.5"
    assert "--grad-clip" not in small and arg(small, "--lr") == "5e-4"
    # a finished run is not trained again
    (tmp_path / "medium" / "state.json").write_text('{"cpu_seconds": 995}')
    assert preset_study.main(["--out", str(tmp_path), "--budget", "1000", "--presets", "medium"]) == 0
    assert len(cmds) == 2


def test_bad_arguments(tmp_path):
    for bad in (["--validations", "0"], ["--budget", "0"], ["--report", "-", "--window", "0"], ["--lr", "0"],
                ["--grad-clip", "-1"], ["--lr", "nan"]):
        with pytest.raises(SystemExit) as e:
            preset_study.main(["--out", str(tmp_path), *bad])
        assert e.value.code == 2


def test_window_means(tmp_path, capsys):
    write_log(tmp_path / "small", [(100, 300, 0.30), (200, 600, 0.40), (300, 1000, 0.50), (400, 1700, 0.70)])
    assert preset_study.main(["--out", str(tmp_path), "--report", "-", "--window", "10", "--marks", "30"]) == 0
    table = capsys.readouterr().out
    assert "| preset | 0-10 min | 10-20 min | 20-30 min |" in table
    assert "| small | +0.350 (2) | +0.500 (1) | +0.700 (1) |" in table


def test_report_file_is_never_clobbered_and_needs_runs(tmp_path, capsys):
    """The docstring's example once wrote the report over docs/preset_study.md, the hand-written
    study, leaving a 6-line empty table (exit 0, no runs at all under --out)."""
    doc = tmp_path / "study.md"
    doc.write_text("the study\n")
    assert preset_study.main(["--out", str(tmp_path / "runs"), "--report", str(doc)]) == 2
    assert "no run under" in capsys.readouterr().err and doc.read_text() == "the study\n"
    write_log(tmp_path / "runs" / "small", [(100, 450, 0.30)])
    assert preset_study.main(["--out", str(tmp_path / "runs"), "--report", str(doc)]) == 2
    assert "--overwrite" in capsys.readouterr().err and doc.read_text() == "the study\n"
    assert preset_study.main(["--out", str(tmp_path / "runs"), "--report", str(doc), "--overwrite"]) == 0
    assert "| small |" in doc.read_text()


def test_report_options_without_report_and_a_failed_run(tmp_path, monkeypatch, capsys):
    with pytest.raises(SystemExit) as e:          # would have started the hours-long study
        preset_study.main(["--out", str(tmp_path), "--window", "30"])
    assert e.value.code == 2

    def failing(cmd, check):
        raise preset_study.subprocess.CalledProcessError(2, cmd)
    monkeypatch.setattr(preset_study.subprocess, "run", failing)
    assert preset_study.main(["--out", str(tmp_path), "--budget", "100", "--presets", "small"]) == 2
    err = capsys.readouterr().err
    assert "the small run stopped with status 2" in err and "Traceback" not in err
