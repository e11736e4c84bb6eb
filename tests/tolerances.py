"""Tolerances per dtype, and the two comparison rules every test uses.

``assert_close``: a value against an expected value computed in the same dtype (backend vs reference).
``assert_within_torch_error``: the low-precision rule of DESIGN.md §3 — a kernel's error against the fp64 truth
may be at most twice the error of plain PyTorch in the same dtype, plus a few ulps.
"""

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Tolerance:
    loss_rtol: float
    loss_atol: float
    grad_rtol: float
    grad_atol: float

    def get(self, kind):
        """(rtol, atol) for ``kind`` = "loss" or "grad"."""
        if kind == "loss":
            return self.loss_rtol, self.loss_atol
        if kind == "grad":
            return self.grad_rtol, self.grad_atol
        raise ValueError(f"kind must be 'loss' or 'grad', got {kind!r}")


TOLERANCES = {
    torch.float64: Tolerance(loss_rtol=1e-9, loss_atol=1e-11, grad_rtol=1e-7, grad_atol=1e-10),
    torch.float32: Tolerance(loss_rtol=2e-5, loss_atol=1e-6, grad_rtol=2e-4, grad_atol=2e-6),
    torch.float16: Tolerance(loss_rtol=1e-2, loss_atol=1e-3, grad_rtol=2e-2, grad_atol=1e-3),
    torch.bfloat16: Tolerance(loss_rtol=3e-2, loss_atol=1e-2, grad_rtol=6e-2, grad_atol=5e-3),
}

LOW_PRECISION = (torch.float16, torch.bfloat16)


def tolerance(dtype, kind="loss"):
    """(rtol, atol) for values of ``dtype``; ``kind`` is "loss" or "grad"."""
    if dtype not in TOLERANCES:
        raise KeyError(f"no tolerance for {dtype}; known: {', '.join(map(str, TOLERANCES))}")
    return TOLERANCES[dtype].get(kind)


def assert_close(actual, expected, dtype=None, kind="loss", msg=""):
    """``actual`` ≈ ``expected`` with the table's tolerance for ``dtype`` (default: ``expected.dtype``).

    The absolute tolerance is scaled by max(1, max |expected|): a gradient (or a per-anchor loss vector) is a sum
    of terms as large as its largest entries, so its small entries carry rounding errors of that size.
    Non-finite entries must sit at the same places with the same values (NaN matches NaN).
    """
    expected = torch.as_tensor(expected)
    rtol, atol = tolerance(expected.dtype if dtype is None else dtype, kind)
    atol = atol * _magnitude(expected)
    actual = torch.as_tensor(actual).to(device=expected.device, dtype=torch.float64)
    torch.testing.assert_close(
        actual,
        expected.double(),
        rtol=rtol,
        atol=atol,
        equal_nan=True,
        msg=(lambda generated: f"{msg}: {generated}") if msg else None,
    )


def max_error(actual, truth):
    """Largest absolute difference in float64 (inf when the non-finite patterns differ)."""
    actual, truth = torch.as_tensor(actual).double(), torch.as_tensor(truth).double().to(actual.device)
    same_nonfinite = torch.equal(torch.isfinite(actual), torch.isfinite(truth))
    if not same_nonfinite:
        return float("inf")
    finite = torch.isfinite(truth)
    if not bool(finite.any()):
        return 0.0
    return float((actual[finite] - truth[finite]).abs().max())


def assert_within_torch_error(actual, torch_same_dtype, truth, dtype=None, kind="loss", factor=2.0, msg="", ulps=None):
    """error(actual, truth) ≤ factor · error(torch_same_dtype, truth) + slack, errors as max abs differences.

    ``truth`` is the fp64 result on the same (rounded) inputs; ``torch_same_dtype`` is plain PyTorch run in the
    same dtype. The slack is ``ulps`` ulps of ``dtype`` at the truth's magnitude (the rounding of the result
    itself), or without ``ulps`` the table's atol scaled by max(1, magnitude).
    """
    dtype = torch.as_tensor(actual).dtype if dtype is None else dtype
    if ulps is None:
        slack = tolerance(dtype, kind)[1] * _magnitude(truth)
    else:
        slack = ulps * torch.finfo(dtype).eps * _magnitude(truth, floor=0.0)
    kernel_error = max_error(actual, truth)
    torch_error = max_error(torch_same_dtype, truth)
    bound = factor * torch_error + slack
    assert kernel_error <= bound, (
        f"{_prefixed(msg)}error vs fp64 truth {kernel_error:.3g} exceeds {factor}·{torch_error:.3g} (PyTorch in "
        f"{dtype}) + {slack:.3g}"
    )


def _magnitude(tensor, floor=1.0):
    """max(floor, largest finite |entry|)."""
    tensor = torch.as_tensor(tensor).double()
    finite = tensor[torch.isfinite(tensor)]
    return max(floor, float(finite.abs().max())) if finite.numel() else floor


def _prefixed(msg):
    return f"{msg}: " if msg else ""
