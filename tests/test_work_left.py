"""The tokens left of a replica's samples: Kaplan-Meier on finished lengths, running samples censored, the rest at cap."""

from __future__ import annotations

import numpy as np
import pytest

from actors.work_left import Lengths


def test_before_any_sample_finishes_each_is_expected_to_reach_its_cap():
    lengths = Lengths()
    assert lengths.left([(50, 512), (0, 256)]) == (462 + 256, 512)


def test_running_samples_past_every_finished_length_are_expected_at_their_cap():
    lengths = Lengths()
    for _ in range(10):
        lengths.add(100)
    assert lengths.left([(50, 512)] * 5) == (5 * 50, 100)  # every sample so far ended at 100
    left, fresh = lengths.left([(150, 512)] * 5)  # 5 of 15 samples passed 100: a third of the mass is unplaced
    assert left == pytest.approx(5 * (512 - 150))
    assert fresh == pytest.approx(100 * 2 / 3 + 512 / 3)


def test_on_a_long_tail_run_the_estimate_errs_long_by_a_bounded_factor_and_only_shrinks():
    """A continuously batched engine (256 a step, oldest first) on 600 samples of long-tailed lengths."""
    rng = np.random.default_rng(0)
    cap, batch = 512, 256
    total = np.minimum(rng.lognormal(np.log(250), 0.35, 600).astype(int) + 1, cap)
    made, lengths, step = np.zeros(len(total), int), Lengths(), 0
    estimates, counted = [], []  # (estimated tokens left, true tokens left); samples left at samples per token so far
    generated = 0
    while (made < total).any():
        running = np.flatnonzero(made < total)[:batch]
        made[running] += 1
        step, generated = step + 1, generated + len(running)
        for i in running[made[running] == total[running]]:
            lengths.add(int(total[i]))
        done = int((made == total).sum())
        if step % 25 == 0 and 0 < done < len(total):
            alive = np.flatnonzero(made < total)
            left, fresh = lengths.left([(int(made[i]), cap) for i in alive[:batch]])
            estimates.append((left + fresh * max(0, len(alive) - batch), int((total - made).sum())))
            counted.append(((len(total) - done) / (done / generated), int((total - made).sum())))
    assert len(estimates) >= 10
    assert all(estimate >= 0.95 * true for estimate, true in estimates)  # errs long, never much short
    assert all(b <= a for (a, _), (b, _) in zip(estimates, estimates[1:]))  # and only shrinks
    early = [e / t for e, t in estimates if t > 0.5 * total.sum()]  # while over half the work is left
    assert early and max(early) < 2.5  # at most 2.5x long from the first finished sample on
    assert counted[0][0] / counted[0][1] > 10  # samples left at samples per token: over 10x long at first
