"""The learning-rate schedule (warm-up, cosine, step) and the global batch indices of each step."""
from argparse import Namespace

import pytest

from fastreshuffle.training.data import StepBatchSampler
from fastreshuffle.training.loop import lr_at


def _args(**kw):
    a = dict(lr=1e-3, warmup=0, schedule="cosine", steps=100, min_lr=None, step_every=None, step_gamma=0.5)
    a.update(kw)
    return Namespace(**a)


def test_cosine_schedule_decays_from_lr_to_min_lr():
    """cosine starts at --lr, ends at --min-lr (lr/100 by default) and never rises."""
    args = _args()
    lrs = [lr_at(s, args) for s in range(args.steps + 1)]
    assert lrs[0] == pytest.approx(1e-3)
    assert lrs[args.steps // 2] == pytest.approx((1e-3 + 1e-5) / 2)
    assert lrs[-1] == pytest.approx(1e-5)
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_warmup_rises_linearly_to_lr_and_never_trains_at_zero():
    """warmup step s (0-based) runs at lr * (s + 1) / warmup: never 0, --lr at its last step."""
    args = _args(warmup=4)
    assert [lr_at(s, args) for s in range(4)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3])
    assert lr_at(4, args) == pytest.approx(1e-3)
    step = _args(schedule="step", step_every=10, warmup=0)
    assert [lr_at(s, step) for s in (0, 9, 10, 25)] == pytest.approx([1e-3, 1e-3, 5e-4, 2.5e-4])


def test_step_batches_are_disjoint_and_cover_the_global_batch():
    """the ranks' slices of one step are disjoint and together the step's global batch; steps
    never share an index."""
    gb, world = 8, 2
    seen = []
    for step in range(3):
        batch = []
        for rank in range(world):
            b = list(StepBatchSampler(step, step + 1, gb, rank, world))[0]
            assert len(b) == gb // world
            batch += b
        assert sorted(batch) == list(range(step * gb, (step + 1) * gb))
        seen += batch
    assert len(seen) == len(set(seen))
