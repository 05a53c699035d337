"""Print the README "Shipped models" rows and the test pins from one ``fastreshuffle eval --json`` file.

    python -m tools.readme_pins EVAL.json jpeg|hevc|hevc-paper

Prints three blocks to paste: the README table rows, the ``README_FIGURES`` entry and the
``MEASURED`` entry of ``tests/inference/test_shipped_models.py`` (same run, two roundings).
Nothing is written; the figures come only from the JSON file given.
"""
import argparse
import json
from pathlib import Path

BOLD = {"jpeg": {10, 30, 50}, "hevc": set()}
LABEL = {"jpeg": "q{}", "hevc": "quality {}"}
CODEC = {"jpeg": "jpeg", "hevc": "hevc", "hevc-paper": "hevc"}   # README's pinned models -> their codec


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("json", type=Path)
    p.add_argument("model", choices=sorted(CODEC))
    args = p.parse_args(argv)
    codec = CODEC[args.model]
    results = json.loads(args.json.read_text())["results"]
    rows, pins, fine = [], [], []
    for r in results:
        q = r["quality"]
        gain = f"+{r['gain_mean']:.2f}"
        if q in BOLD[codec]:
            gain = f"**{gain}**"
        passed = " (passed through)" if r["psnr_restored"] == r["psnr_codec"] else ""
        rows.append(f"| {LABEL[codec].format(q)} | {r['bpp']:.3f} | {r['psnr_codec']:.2f} / "
                    f"{r['psnr_codec_mean']:.2f} | {r['psnr_restored']:.2f} / {r['psnr_restored_mean']:.2f} "
                    f"| {gain} / +{r['gain_worst']:.2f} dB{passed} |")
        pins.append(f"{q}: ({r['bpp']:.3f}, {r['psnr_codec']:.2f}, {r['psnr_codec_mean']:.2f}, "
                    f"{r['psnr_restored']:.2f}, {r['psnr_restored_mean']:.2f}, {r['gain_mean']:.2f}, "
                    f"{r['gain_worst']:.2f})")
        fine.append(f"{q}: ({r['bpp']:.5f}, {r['psnr_codec']:.4f}, {r['psnr_codec_mean']:.4f}, "
                    f"{r['psnr_restored']:.4f}, {r['psnr_restored_mean']:.4f}, {r['gain_worst']:.4f})")
    print("\n".join(rows))
    for block in (pins, fine):   # indented as in the test file's dicts, ready to paste
        print(f'    "{args.model}": {{' + (",\n" + " " * (len(args.model) + 9)).join(block) + "},")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
