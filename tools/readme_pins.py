"""Print the README "Shipped models" rows and the test pins from one ``fastreshuffle eval --json`` file.

    python -m tools.readme_pins EVAL.json jpeg|hevc|hevc-paper|webp

Prints three blocks to paste: the README table rows, the ``README_FIGURES`` entry and the
``MEASURED`` entry of ``tests/inference/test_shipped_models.py`` (same run, two roundings).
Nothing is written; the figures come only from the JSON file given, which must be what the pins
stand for: all 24 Kodak24 images, that model, guarded, float32, no self-ensemble, its codec
(anything else is refused in one line, exit status 2).
"""
import argparse
import json
import sys
from pathlib import Path

BOLD = {"jpeg": {10, 30, 50}, "hevc": set(), "webp": set()}
LABEL = {"jpeg": "q{}", "hevc": "quality {}", "webp": "quality {}"}
CODEC = {"jpeg": "jpeg", "hevc": "hevc", "hevc-paper": "hevc", "webp": "webp"}   # README's pinned models -> their codec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("model", choices=sorted(CODEC))
    args = p.parse_args(argv)
    codec = CODEC[args.model]
    try:
        results = _checked(json.loads(args.json.read_text()), args.model)
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"readme_pins: error: {args.json}: {e!s}" if not isinstance(e, KeyError) else
              f"readme_pins: error: {args.json}: no {e} in it (not a fastreshuffle eval --json file?)", file=sys.stderr)
        return 2
    rows, pins, fine = [], [], []
    for r in results:
        q = r["quality"]
        gain = f"{r['gain_mean']:+.2f}"
        if q in BOLD[codec]:
            gain = f"**{gain}**"
        passed = " (passed through)" if r["psnr_restored"] == r["psnr_codec"] else ""
        rows.append(f"| {LABEL[codec].format(q)} | {r['bpp']:.3f} | {r['psnr_codec']:.2f} / "
                    f"{r['psnr_codec_mean']:.2f} | {r['psnr_restored']:.2f} / {r['psnr_restored_mean']:.2f} "
                    f"| {gain} / {r['gain_worst']:+.2f} dB{passed} |")
        pins.append(f"{q}: ({r['bpp']:.3f}, {r['psnr_codec']:.2f}, {r['psnr_codec_mean']:.2f}, "
                    f"{r['psnr_restored']:.2f}, {r['psnr_restored_mean']:.2f}, {r['gain_mean']:.2f}, "
                    f"{r['gain_worst']:.2f})")
        fine.append(f"{q}: ({r['bpp']:.5f}, {r['psnr_codec']:.4f}, {r['psnr_codec_mean']:.4f}, "
                    f"{r['psnr_restored']:.4f}, {r['psnr_restored_mean']:.4f}, {r['gain_worst']:.4f})")
    print("\n".join(rows))
    for block in (pins, fine):   # indented as in the test file's dicts, ready to paste
        print(f'    "{args.model}": {{' + (",\n" + " " * (len(args.model) + 9)).join(block) + "},")
    return 0


def _checked(doc: dict, model: str) -> list:
    """The results of an eval JSON that measured what the pins stand for (ValueError naming what
    differs)."""
    m = doc["model"]
    want = {"images": (doc["images"], 24), "model": (m["model"], model), "guard": (m["guard"], True),
            "dtype": (m["dtype"], "float32"), "self_ensemble": (m["self_ensemble"], False)}
    bad = [f"{k} {got!r} (the pins need {need!r})" for k, (got, need) in want.items() if got != need]
    codecs = sorted({r["codec"] for r in doc["results"]} - {CODEC[model]})
    if codecs:
        bad.append(f"codec {', '.join(codecs)} (the pins need {CODEC[model]})")
    if bad:
        raise ValueError("; ".join(bad))
    if not doc["results"]:
        raise ValueError("no results")
    return doc["results"]


if __name__ == "__main__":
    raise SystemExit(main())
