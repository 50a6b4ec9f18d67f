import math

import pytest

from ulmfit.train.schedules import Schedule, one_cycle_lr, one_cycle_mom, stlr


def test_stlr_shape_matches_ulmfit_eq3():
    total, lr_max, ratio = 1000, 0.01, 32.0
    cut = math.floor(total * 0.1)
    lrs = [stlr(t, total, lr_max) for t in range(total + 1)]
    assert lrs[0] == pytest.approx(lr_max / ratio)
    assert lrs[cut] == pytest.approx(lr_max)
    assert max(lrs) == pytest.approx(lr_max)
    assert lrs.index(max(lrs)) == cut
    assert lrs[total] == pytest.approx(lr_max / ratio)
    # linear pieces: constant increments on each side of the cut
    up = [b - a for a, b in zip(lrs[:cut], lrs[1 : cut + 1])]
    down = [b - a for a, b in zip(lrs[cut:total], lrs[cut + 1 :])]
    assert all(d == pytest.approx(up[0]) for d in up) and up[0] > 0
    assert all(d == pytest.approx(down[0]) for d in down) and down[0] < 0
    # the decay is 9x slower than the warm-up with cut_frac = 0.1
    assert up[0] / -down[0] == pytest.approx(9.0)


def test_stlr_hand_value_and_tiny_runs():
    # t=50 of 1000: p = 0.5, lr = 0.01 * (1 + 0.5*31) / 32
    assert stlr(50, 1000, 0.01) == pytest.approx(0.01 * 16.5 / 32)
    # fewer steps than 1/cut_frac: cut is one step, values stay in range
    vals = [stlr(t, 5, 1.0) for t in range(6)]
    assert vals[1] == pytest.approx(1.0)
    assert all(1 / 32 - 1e-12 <= v <= 1.0 for v in vals)
    with pytest.raises(ValueError):
        stlr(0, 10, 1.0, cut_frac=0.0)


def test_one_cycle_lr_start_peak_end():
    total, lr_max = 400, 1e-2
    assert one_cycle_lr(0, total, lr_max) == pytest.approx(lr_max / 25)
    assert one_cycle_lr(100, total, lr_max) == pytest.approx(lr_max)  # pct_start 0.25
    assert one_cycle_lr(total, total, lr_max) == pytest.approx(lr_max / 1e5)
    lrs = [one_cycle_lr(t, total, lr_max) for t in range(total + 1)]
    assert lrs.index(max(lrs)) == 100
    assert all(a <= b for a, b in zip(lrs[:100], lrs[1:101]))
    assert all(a >= b for a, b in zip(lrs[100:], lrs[101:]))
    # cosine midpoint of the warm-up
    assert one_cycle_lr(50, total, lr_max) == pytest.approx((lr_max / 25 + lr_max) / 2)


def test_one_cycle_momentum_is_inverse_to_lr():
    total = 400
    assert one_cycle_mom(0, total) == pytest.approx(0.8)
    assert one_cycle_mom(100, total) == pytest.approx(0.7)
    assert one_cycle_mom(total, total) == pytest.approx(0.8)
    lrs = [one_cycle_lr(t, total, 1.0) for t in range(total + 1)]
    moms = [one_cycle_mom(t, total) for t in range(total + 1)]
    for t in range(total):
        dl, dm = lrs[t + 1] - lrs[t], moms[t + 1] - moms[t]
        assert dl * dm <= 1e-15  # never move in the same direction


def test_schedule_multipliers_and_momentum():
    s = Schedule("stlr", lr_max=0.01, total_steps=100)
    assert s.lr_mult(10) == pytest.approx(1.0)
    assert s.lr_mult(0) == pytest.approx(1 / 32)
    assert s.lr(10) == pytest.approx(0.01)
    assert s.momentum(5) is None
    oc = Schedule("one_cycle", lr_max=0.004, total_steps=100)
    assert oc.lr_mult(0) == pytest.approx(1 / 25)
    assert oc.lr(25) == pytest.approx(0.004)
    assert oc.momentum(25) == pytest.approx(0.7)
    c = Schedule("constant", lr_max=0.1, total_steps=10)
    assert c.lr_mult(3) == 1.0 and c.momentum(3) is None


def test_schedule_unknown_kind_names_allowed():
    with pytest.raises(ValueError, match="one_cycle.*stlr.*constant"):
        Schedule("cosine", total_steps=10)
