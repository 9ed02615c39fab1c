"""The box-constrained L-BFGS on tiny problems with known answers, and its guard
against steps that run away."""

from __future__ import annotations

import math

import pytest
import torch

from stylecore import lbfgs
from stylecore.lbfgs import BoxLBFGS

# f(x) = ½ xᵀAx − bᵀx, A symmetric positive definite: minimum at A⁻¹b.
A = torch.tensor([[3.0, 0.5, 0.0], [0.5, 2.0, 0.3], [0.0, 0.3, 1.0]], dtype=torch.float64)
B = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
SOLUTION = torch.linalg.solve(A, B)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x @ A @ x - B @ x


def closure_for(x: torch.Tensor, f=quadratic, spikes: dict[int, float] | None = None, calls: list | None = None):
    """A closure evaluating f at x; at call numbers in `spikes` it reports that value instead
    (a step that ran away, as a noisy bf16 evaluation can), gradient unchanged."""
    calls = calls if calls is not None else []

    def closure():
        x.grad = None
        loss = f(x)
        loss.backward()
        calls.append(x.detach().clone())
        value = (spikes or {}).get(len(calls))
        return torch.tensor(value, dtype=x.dtype) if value is not None else loss.detach()

    return closure


def test_unbounded_converges_to_the_minimum():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5)
    closure = closure_for(x)
    for _ in range(30):
        opt.step(closure)
    assert torch.allclose(x.detach(), SOLUTION, atol=1e-6)
    assert opt.rejections == 0


def test_bounded_stays_in_the_box_and_reaches_the_constrained_minimum():
    lower, upper = torch.full((3,), -0.5, dtype=torch.float64), torch.full((3,), 0.5, dtype=torch.float64)
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, lower, upper, first_step=0.5)
    closure = closure_for(x)
    for _ in range(60):
        opt.step(closure)
        assert (x >= lower).all() and (x <= upper).all()
    # Against projected gradient descent run to convergence: projecting L-BFGS steps
    # is not an exact active-set method, so the value is compared, within 1%.
    ref = torch.zeros(3, dtype=torch.float64)
    for _ in range(5000):
        ref = (ref - 0.1 * (A @ ref - B)).clamp(-0.5, 0.5)
    assert opt.best[0] <= quadratic(ref).item() * 0.99  # both negative: within 1% of the optimum


@pytest.mark.parametrize("spike", [1e9, math.inf, math.nan], ids=["huge", "inf", "nan"])
def test_a_runaway_evaluation_is_rejected_and_the_run_goes_on_from_the_best(spike):
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5)
    calls: list[torch.Tensor] = []
    closure = closure_for(x, spikes={4: spike}, calls=calls)
    for _ in range(3):
        opt.step(closure)
    best_before = opt.best
    opt.step(closure)  # the 4th evaluation reports the spike
    assert opt.rejections == 1
    assert opt.best[0] == best_before[0] and torch.equal(opt.best[1], best_before[1])  # never the spike
    assert opt.prev is not None and torch.equal(opt.prev[0], best_before[1])  # the next step starts at the best
    if not math.isfinite(spike):
        assert not opt.pairs  # a non-finite value drops the history
    for _ in range(30):
        opt.step(closure)
    assert torch.allclose(opt.best[1], SOLUTION, atol=1e-6)


def test_two_rejections_in_a_row_drop_the_history_and_shorten_the_fresh_start():
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5)
    closure = closure_for(x, spikes={5: 1e9, 6: 1e9})
    for _ in range(5):
        opt.step(closure)
    assert opt.rejections == 1 and opt.pairs  # the first keeps the history
    before = opt.restart_step
    opt.step(closure)
    assert opt.rejections == 2 and not opt.pairs
    assert opt.restart_step == before / 2
    for _ in range(30):
        opt.step(closure)
    assert torch.allclose(opt.best[1], SOLUTION, atol=1e-6)


def test_a_modest_rise_is_accepted():
    """L-BFGS without line search often climbs a little on its way down: below
    (1 + rise) x best nothing is rejected."""
    y = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(y, None, None, first_step=0.5, rise=3.0)
    shifted = lambda v: quadratic(v) + 10.0  # noqa: E731  (positive everywhere)
    opt.step(closure_for(y, shifted))
    first = opt.best[0]
    opt.step(closure_for(y, shifted, spikes={1: first * 3.5}))
    assert opt.rejections == 0
    opt.step(closure_for(y, shifted, spikes={1: first * 4.5}))
    assert opt.rejections == 1


def reported(x: torch.Tensor, values: list[float]):
    """A closure that reports values[i] at its i-th call, with the gradient of
    quadratic + 10 (positive, as the style objective is) at x."""
    return closure_for(x, lambda v: quadratic(v) + 10.0, spikes=dict(enumerate(values, start=1)))


STALL_CASES = {
    # 4 evaluations that improve the best by 2% (10 -> 9.8), rising twice: afresh after the 5th.
    "stalled, bouncing": ([10.0, 9.9, 10.2, 9.8, 9.85], 1),
    # Steady slow descent: no rise, so no fresh start however slow.
    "slow, steady": ([10.0, 9.99, 9.98, 9.97, 9.96, 9.95], 0),
    # Bouncing but getting somewhere: 10 -> 8 in 4 evaluations.
    "bouncing, improving": ([10.0, 12.0, 9.0, 11.0, 8.0], 0),
}


@pytest.mark.parametrize("values, fresh", STALL_CASES.values(), ids=STALL_CASES.keys())
def test_a_stalled_run_starts_afresh_from_its_best(values, fresh):
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5, stall=4, progress=0.05)
    closure = reported(x, values)
    for _ in values[:-1]:
        opt.step(closure)
    assert opt.fresh_starts == 0 and opt.pairs
    best_x = opt.best[1].clone()
    opt.step(closure)
    assert opt.fresh_starts == fresh and opt.rejections == 0
    if fresh:
        # The memory is dropped and the move is a plain gradient step from the best, as
        # long as a fresh start's (restart_step; doubled here, since the first, a gradient
        # step, improved).
        assert not opt.pairs
        move, grad = x.detach() - best_x, opt.best[2]
        assert float(move.abs().max()) == pytest.approx(opt.restart_step) == 1.0
        assert float(torch.dot(move, grad) / (move.norm() * grad.norm())) == pytest.approx(-1.0)


def test_a_run_that_stalls_on_a_new_best_starts_afresh_from_that_point():
    """The evaluation that completes a stall can itself be the best so far (the best
    crept down by 0.3% with a rise on the way): it is kept, and the fresh start is from it."""
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5, stall=4, progress=0.05)
    values = [100.0, 101.0, 99.9, 99.8, 99.7]
    closure = reported(x, values)
    for _ in values[:-1]:
        opt.step(closure)
    last = x.detach().clone()
    opt.step(closure)
    assert opt.fresh_starts == 1
    assert opt.best[0] == 99.7 and torch.equal(opt.best[1], last)


def test_a_part_that_is_not_finite_is_rejected_in_every_region():
    """One region's part not finite (its gradient then NaN everywhere): no region keeps
    the point, and every region goes back to its best."""
    x = torch.zeros(1, 1, 1, 2, requires_grad=True)
    opt = lbfgs.BlockLBFGS(x, None, None, torch.tensor([0, 1], dtype=torch.uint8), [0, 1], first_step=0.5)
    x.grad = torch.ones_like(x)
    opt.tell([1.0, 1.0])
    start = opt.best[1].clone()
    x.grad = torch.full_like(x, math.nan)
    opt.tell([0.5, math.inf])
    assert opt.rejections == 2 and torch.equal(opt.best[1], start)
    assert [judge.best for judge in opt.judges] == [1.0, 1.0]
    assert bool(torch.isfinite(x).all())


def test_stall_is_off_by_default():
    x = torch.ones(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5)
    closure = reported(x, STALL_CASES["stalled, bouncing"][0] * 2)
    for _ in range(10):
        opt.step(closure)
    assert opt.fresh_starts == 0 and opt.pairs


def test_gradient_steps_lengthen_while_they_improve_where_no_curvature_pair_is_kept():
    """Along a concave direction (negative curvature) no pair passes yᵀs > 0, so the
    optimizer takes gradient steps; each that improves doubles the next one's length
    instead of crawling at a fixed step."""
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    concave = lambda v: -(v ** 2).sum() - v.sum()  # noqa: E731  (gradient never zero near 0)
    lower, upper = torch.full((2,), -100.0, dtype=torch.float64), torch.full((2,), 100.0, dtype=torch.float64)
    opt = BoxLBFGS(x, lower, upper, first_step=0.01)
    closure = closure_for(x, concave)
    moves = []
    for _ in range(6):
        before = x.detach().clone()
        opt.step(closure)
        moves.append(float((x.detach() - before).abs().max()))
    assert not opt.pairs
    assert all(b == pytest.approx(2 * a) for a, b in zip(moves[1:], moves[2:]))  # 0.02, 0.04, 0.08, ...


def test_carried_curvature_makes_the_first_step_a_quasi_newton_step():
    """Pairs measured on the same quadratic elsewhere (as a coarser level's are) give the
    first step from a new start the curvature: it lands near the minimum, where a cold
    start's first step is a short gradient step."""
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    earlier = BoxLBFGS(x, None, None, first_step=0.5)
    closure = closure_for(x)
    for _ in range(6):
        earlier.step(closure)
    pairs = earlier.curvature()
    assert len(pairs) >= 3

    start = torch.tensor([2.0, 2.0, -2.0], dtype=torch.float64)
    errors = {}
    for name, carried in (("cold", []), ("carried", pairs)):
        y = start.clone().requires_grad_(True)
        opt = BoxLBFGS(y, None, None, first_step=0.5)
        opt.carry(carried)
        opt.step(closure_for(y))
        errors[name] = float((y.detach() - SOLUTION).norm())
    assert errors["carried"] < 0.05 * errors["cold"]


@pytest.mark.parametrize("max_rms, capped", [(None, False), (1e9, False), (0.1, True)],
                         ids=["no cap", "a cap that does not bind", "capped"])
def test_a_quasi_newton_step_is_no_longer_than_max_rms(max_rms, capped):
    """A pair (s, y = s/1000) claims curvature 1000 times too small: the inverse Hessian
    is then 1000·I and the step −1000·g, far outside any box. `max_rms` scales such a
    step down to that root-mean-square length, same direction; a shorter step is left
    exactly as it is."""
    start = torch.tensor([2.0, 2.0, -2.0], dtype=torch.float64)
    g = A @ start - B
    x = start.clone().requires_grad_(True)
    opt = BoxLBFGS(x, None, None, max_rms=max_rms)
    s = torch.tensor([0.1, -0.2, 0.3], dtype=torch.float64)
    opt.carry([(s, s / 1000)])
    opt.step(closure_for(x))
    step = x.detach() - start
    uncapped = -1000 * g
    if capped:
        assert torch.allclose(step, uncapped * 0.1 / (uncapped.norm() / math.sqrt(3)))
    else:
        assert torch.allclose(step, uncapped)


def test_carry_skips_pairs_without_positive_curvature_and_keeps_the_newest():
    x = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, history=2)
    e = torch.eye(2, dtype=torch.float64)
    bad = (e[0], -e[0])  # yᵀs < 0: would make the inverse Hessian indefinite
    opt.carry([(e[0], 2 * e[0]), (e[1], 3 * e[1]), bad, (e[0], 4 * e[0])])
    kept = [float(y @ s) for s, y in opt.curvature()]
    assert kept == [3.0, 4.0]  # the newest two good ones, oldest first


def test_pairs_kept_in_bf16_still_reach_the_minimum():
    """Tiled levels keep the curvature pairs in bf16 (half the memory): the memory is an
    approximation of the inverse Hessian either way, and the run still converges."""
    x = torch.zeros(3, dtype=torch.float32, requires_grad=True)
    a, b = A.float(), B.float()
    opt = BoxLBFGS(x, None, None, first_step=0.5, pair_dtype=torch.bfloat16)
    closure = closure_for(x, lambda v: 0.5 * v @ a @ v - b @ v)
    for _ in range(40):
        opt.step(closure)
    assert all(s.dtype == torch.bfloat16 and y.dtype == torch.bfloat16 for s, y in opt.curvature())
    assert torch.allclose(opt.best[1], SOLUTION.float(), atol=1e-3)


def test_the_best_point_shares_its_tensors_with_the_previous_one_when_they_are_the_same():
    """Memory at full resolution: an improving step keeps one copy of the point and its
    gradient, not two (the best is the previous point)."""
    x = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5)
    closure = closure_for(x)
    for _ in range(3):
        opt.step(closure)
    assert opt.best[1] is opt.prev[0] and opt.best[2] is opt.prev[1]


# One memory per block (regions): two independent quadratics whose scales differ
# 1000-fold, the first on elements 0..2, the second on 3..5.
SCALE = 1000.0


def separable(x: torch.Tensor) -> torch.Tensor:
    return quadratic(x[:3]) + SCALE * quadratic(x[3:])


def test_blocks_run_each_block_as_if_it_were_alone():
    """The first block's iterates are those of a plain run on its own quadratic: the
    second block's 1000-fold curvature neither shortens its steps nor bends them."""
    alone = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    plain = BoxLBFGS(alone, None, None, first_step=0.5)
    both = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    blocked = BoxLBFGS(both, None, None, first_step=0.5, blocks=torch.tensor([0, 0, 0, 1, 1, 1], dtype=torch.uint8))
    step_alone, step_both = closure_for(alone), closure_for(both, separable)
    for _ in range(8):
        plain.step(step_alone)
        blocked.step(step_both)
        assert torch.allclose(both.detach()[:3], alone.detach(), rtol=1e-9, atol=1e-12)
    assert blocked.rejections == 0


def test_one_shared_memory_is_what_blocks_are_for():
    """The same problem with one memory: the first block lags (the check above can fail)."""
    alone = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    plain = BoxLBFGS(alone, None, None, first_step=0.5)
    both = torch.zeros(6, dtype=torch.float64, requires_grad=True)
    shared = BoxLBFGS(both, None, None, first_step=0.5)
    step_alone, step_both = closure_for(alone), closure_for(both, separable)
    for _ in range(3):
        plain.step(step_alone)
        shared.step(step_both)
    assert not torch.allclose(both.detach()[:3], alone.detach(), rtol=1e-3)


def test_a_single_block_is_the_plain_method():
    x, y = (torch.zeros(3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    plain = BoxLBFGS(x, None, None, first_step=0.5)
    one_block = BoxLBFGS(y, None, None, first_step=0.5, blocks=torch.zeros(3, dtype=torch.uint8))
    step_x, step_y = closure_for(x), closure_for(y)
    for _ in range(10):
        plain.step(step_x)
        one_block.step(step_y)
        assert torch.allclose(x.detach(), y.detach(), rtol=1e-12, atol=1e-14)


def test_blocks_label_pixels_across_channels():
    """x (1, 2, 1, 3): a label per pixel applies to both channels; the block of pixel 0
    converges to its own solution, as the plain run on it alone does."""
    target = torch.tensor([1.0, 2.0, 3.0, -1.0, -2.0, -3.0], dtype=torch.float64)
    weights = torch.tensor([1.0, SCALE, SCALE, 1.0, SCALE, SCALE], dtype=torch.float64)
    x = torch.zeros(1, 2, 1, 3, dtype=torch.float64, requires_grad=True)
    opt = BoxLBFGS(x, None, None, first_step=0.5, blocks=torch.tensor([0, 1, 1], dtype=torch.uint8))
    closure = closure_for(x, lambda v: 0.5 * (weights * (v.reshape(-1) - target) ** 2).sum())
    for _ in range(10):
        opt.step(closure)
    assert torch.allclose(x.detach().reshape(-1), target, atol=1e-8)


@pytest.mark.parametrize("kept", [True, False], ids=["one-hot kept", "one-hot per piece"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32 pairs", "bf16 pairs"])
def test_block_products_are_the_sums_over_each_blocks_pixels(monkeypatch, kept, dtype):
    """Known answers for every block operation, in several pieces (CHUNK made small):
    dot is the per-block sum, addcmul_ and mul_ apply each block's coefficient."""
    monkeypatch.setattr(lbfgs, "CHUNK", 10)  # 3 channels: pieces of 3 pixels
    monkeypatch.setattr(lbfgs._Blocks, "ONEHOT_BYTES", 1 << 20 if kept else 0)
    labels = torch.tensor([0, 2, 1, 1, 0, 2, 2, 0, 1, 0, 1], dtype=torch.uint8)  # 11 pixels, 4 pieces
    channels = 3
    ops = lbfgs._Blocks(labels, channels * labels.numel())
    assert (ops.kept is not None) == kept
    a = torch.arange(33, dtype=torch.float32).to(dtype)
    b = torch.linspace(-1, 1, 33).to(dtype)
    per_pixel = (a.float() * b.float()).view(channels, -1).sum(0)
    expected = torch.stack([per_pixel[labels == k].sum() for k in range(3)])
    assert torch.allclose(ops.dot(a, b), expected, rtol=1e-6, atol=1e-5)
    coef = torch.tensor([2.0, -1.0, 0.5])
    q = torch.ones(33)
    ops.addcmul_(q, b, coef, value=-1)
    assert torch.allclose(q, 1 - coef[labels.long()].repeat(channels) * b.float(), atol=1e-6)
    ops.mul_(q, coef)
    assert torch.allclose(q, (1 - coef[labels.long()].repeat(channels) * b.float()) * coef[labels.long()].repeat(channels), atol=1e-6)
    top = ops.absmax(b.float())
    expected_top = torch.stack([b.float().abs().view(channels, -1).amax(0)[labels == k].max() for k in range(3)])
    assert torch.equal(top, expected_top)


# --- one judge per group of blocks (BlockLBFGS) -----------------------------------------------


def _wavy_run(optimizer: str, scale: float, steps: int = 60) -> tuple[list[torch.Tensor], object]:
    """A box-bounded, non-convex objective of an (1, 3, 8, 8) image that is a sum of two
    terms, one of the left 4 columns' pixels, one of the right ones' (times `scale`): the
    left half's iterates at every step, and the optimizer. The rise limit is low so that
    the run rejects points and starts afresh (both counted by the caller)."""
    gen = torch.Generator().manual_seed(0)
    target, start = torch.rand(1, 3, 8, 8, generator=gen), torch.rand(1, 3, 8, 8, generator=gen)
    labels = torch.zeros(8, 8, dtype=torch.uint8)
    labels[:, 4:] = 1
    right = labels.float()
    x = start.clone().requires_grad_(True)
    options = dict(history=100, stall=4, progress=0.05, max_rms=0.3, rise=0.2)
    box = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    opt = (lbfgs.BlockLBFGS(x, *box, labels.reshape(-1), [0, 1], **options) if optimizer == "judged"
           else BoxLBFGS(x, *box, blocks=labels.reshape(-1), **options))
    left_half = []
    for _ in range(steps):
        x.grad = None
        with torch.enable_grad():
            d, wave = (x - target) ** 2, 0.2 * torch.sin(9 * x)
            left, right_term = ((d + wave) * (1 - right)).pow(2).sum(), scale * ((d - wave) * right).pow(2).sum()
            (left + right_term).backward()
        left, right_term = float(left.detach()), float(right_term.detach())
        opt.tell([left, right_term] if optimizer == "judged" else left + right_term)
        left_half.append(x.detach()[..., :4].clone())
    return left_half, opt


def test_judged_blocks_move_as_their_terms_alone():
    """Each group's judge reads only its term: the left half's iterates do not change,
    bit for bit, when the right half's term is 10⁴ times larger (through rejections and
    fresh starts of both; with a history long enough that no pair is evicted, since the
    memory's pairs are shared)."""
    small, opt_small = _wavy_run("judged", 1.0)
    large, opt_large = _wavy_run("judged", 1e4)
    assert opt_small.rejections > 0 and opt_small.fresh_starts > 0  # the rules were exercised
    assert all(torch.equal(a, b) for a, b in zip(small, large))


def test_one_judge_is_what_judged_blocks_are_for():
    """The same with one judge (memories per block, the total judged): the right half's
    scale changes the left half's path (the check above can fail)."""
    small, _ = _wavy_run("one judge", 1.0)
    large, _ = _wavy_run("one judge", 1e4)
    assert not all(torch.equal(a, b) for a, b in zip(small, large))


def test_judged_blocks_deliver_each_groups_best():
    """The delivered image holds, in each group's pixels, that group's best point; its
    value is the sum of the groups' bests."""
    _, opt = _wavy_run("judged", 1.0, steps=30)
    assert opt.best[0] == pytest.approx(sum(judge.best for judge in opt.judges))
    assert all(judge.best is not None and math.isfinite(judge.best) for judge in opt.judges)


def test_copy_where_copies_the_flagged_blocks_only():
    labels = torch.tensor([0, 2, 1, 1, 0, 2], dtype=torch.uint8)
    ops = lbfgs._Blocks(labels, 2 * labels.numel())
    dst, src = torch.zeros(12), torch.arange(12, dtype=torch.float32)
    ops.copy_where(dst, src, torch.tensor([0.0, 1.0, 1.0]))
    chosen = (labels != 0).repeat(2)
    assert torch.equal(dst, torch.where(chosen, src, torch.zeros(12)))
