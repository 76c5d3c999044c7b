"""Piecewise-constant stimuli with their change points, and additive membrane noise."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

__all__ = ["Stimulus", "MembraneNoise"]

#: Largest input rate a Stimulus accepts (Hz): twice the inverse of PD14's 2 ms refractory period.
MAX_INPUT_RATE = 1000.0


class Stimulus:
    """Piecewise-constant input rates u_k(t) (Hz) for a batch of trials.

    The rate of segment ``k`` holds on ``[times[k], times[k+1])`` (right-continuous);
    the last segment holds until the end of the simulation. The change points
    ``times[1:]`` are handed to the ODE solver so that no step straddles a jump.

    Parameters
    ----------
    times : sequence of float, shape (K,)
        Segment start times in s, strictly increasing, ``times[0] = 0``.
    rates : array-like, shape (K, n_inputs) or (B, K, n_inputs)
        Input rates in Hz; a 2-D array is shared by every trial.

    Examples
    --------
    >>> stim = Stimulus(times=[0.0, 0.5], rates=[[0, 0], [20, 0]])   # one trial, 2 inputs
    >>> stim.batch_size, stim.n_inputs
    (1, 2)
    """

    def __init__(self, times: Sequence[float] | torch.Tensor, rates, *,
                 dtype: torch.dtype | None = None, device: torch.device | str | None = None) -> None:
        if dtype is None:  # keep a floating tensor's precision (change points must not be rounded)
            dtype = rates.dtype if torch.is_tensor(rates) and rates.is_floating_point() else torch.float64
        times_t = torch.as_tensor(np.asarray(times, dtype=float) if not torch.is_tensor(times) else times,
                                  dtype=dtype, device=device).reshape(-1)
        try:
            rates_np = rates if torch.is_tensor(rates) else np.asarray(rates, dtype=float)
        except (ValueError, TypeError):
            raise ValueError("Stimulus rates must be a regular array of numbers (Hz) of shape (K, n_inputs) "
                             "or (B, K, n_inputs): every trial needs the same segments and every segment the "
                             "same number of input channels") from None
        rates_t = torch.as_tensor(rates_np, dtype=dtype, device=device)
        if times_t.numel() == 0:
            raise ValueError("Stimulus times are empty (0 segments); a stimulus needs at least one segment, starting "
                             "at 0 s: times=[0.0] with rates of shape (1, n_inputs)")
        if float(times_t[0]) != 0.0:
            raise ValueError(f"Stimulus times must start at 0 s, got {float(times_t[0])}; "
                             "prepend a segment with zero rates")
        if times_t.numel() > 1 and not bool(torch.all(times_t[1:] > times_t[:-1])):
            raise ValueError(f"Stimulus times must be strictly increasing, got {times_t.tolist()}")
        given = tuple(rates_t.shape)
        if rates_t.ndim == 2:
            rates_t = rates_t.unsqueeze(0)
        if rates_t.ndim == 3 and rates_t.shape[0] == 0:
            raise ValueError(f"Stimulus rates of shape {given} hold 0 trials; give at least one trial: rates of "
                             "shape (K, n_inputs) for one trial, or (B, K, n_inputs) with B >= 1")
        if rates_t.ndim == 3 and rates_t.shape[1] == 0:
            raise ValueError(f"Stimulus rates of shape {given} hold 0 segments; give one row of rates per segment "
                             f"({times_t.numel()}, one per entry of times)")
        if rates_t.ndim != 3 or rates_t.shape[1] != times_t.numel():
            raise ValueError(
                f"Stimulus rates must have shape (K, n_inputs) or (B, K, n_inputs) with K = "
                f"{times_t.numel()} segments, got {tuple(rates_t.shape)}")
        if not bool(torch.all(torch.isfinite(rates_t))):
            raise ValueError("Stimulus rates contain NaN or inf")
        if bool(torch.any(rates_t < 0)):
            raise ValueError("Stimulus rates are firing rates and must be >= 0 Hz")
        if rates_t.numel() and float(rates_t.max()) > MAX_INPUT_RATE:
            raise ValueError(f"Stimulus rate {float(rates_t.max()):g} Hz is above {MAX_INPUT_RATE:g} Hz: input rates "
                             "are firing rates of presynaptic neurons, which cannot fire faster than about 1/t_ref "
                             "(500 Hz for PD14's 2 ms); give rates in Hz")
        self.times = times_t
        self.rates = rates_t

    # -- constructors ---------------------------------------------------------
    @classmethod
    def constant(cls, rates, **kw) -> "Stimulus":
        """A stimulus that holds ``rates`` (shape (n_inputs,) or (B, n_inputs), Hz) throughout."""
        r = torch.as_tensor(np.asarray(rates, dtype=float)) if not torch.is_tensor(rates) else rates
        r = r.reshape(1, -1) if r.ndim == 1 else r
        return cls([0.0], r.unsqueeze(1), **kw)

    @classmethod
    def none(cls, batch_size: int = 1, n_inputs: int = 0, **kw) -> "Stimulus":
        """No input (all rates 0 Hz)."""
        return cls([0.0], torch.zeros(batch_size, 1, n_inputs), **kw)

    # -- properties -------------------------------------------------------------
    @property
    def batch_size(self) -> int:
        """Number of trials B."""
        return int(self.rates.shape[0])

    @property
    def n_inputs(self) -> int:
        """Number of input channels."""
        return int(self.rates.shape[2])

    @property
    def jump_times(self) -> torch.Tensor:
        """Change points (s), excluding t = 0."""
        return self.times[1:]

    def to(self, device=None, dtype=None) -> "Stimulus":
        """Copy on another device/dtype."""
        dtype = dtype or self.rates.dtype
        return Stimulus(self.times.to(device=device, dtype=dtype), self.rates.to(device=device, dtype=dtype),
                        dtype=dtype)

    def expand(self, batch_size: int) -> "Stimulus":
        """Broadcast a single-trial stimulus to ``batch_size`` trials."""
        if self.batch_size == batch_size:
            return self
        if self.batch_size != 1:
            raise ValueError(f"cannot expand a stimulus of {self.batch_size} trials to {batch_size}")
        return Stimulus(self.times, self.rates.expand(batch_size, -1, -1), dtype=self.rates.dtype)

    def check_fits(self, n_inputs: int, duration: float) -> None:
        """Refuse a stimulus that a run of ``duration`` s of a network reading ``n_inputs`` channels can't use.

        Raises
        ------
        ValueError
            Another number of input channels, or a change point at or after ``duration``
            (it could not take effect).
        """
        if self.n_inputs != n_inputs:
            raise ValueError(f"the stimulus has {self.n_inputs} input channels but the network reads "
                             f"{n_inputs} (one per Input projection channel)")
        late = self.jump_times[self.jump_times >= duration]
        if late.numel():
            raise ValueError(f"the stimulus changes at t = {float(late[0]):g} s, at or after the end of the run "
                             f"(duration = {duration:g} s), so that change cannot take effect; lengthen the "
                             "run (duration=...) or drop the change points from the stimulus times")

    def select(self, trials: Sequence[int]) -> "Stimulus":
        """The stimulus of some trials only (indices into the batch)."""
        idx = [int(k) for k in trials]
        if not idx:
            raise ValueError(f"select(trials): no trial given; pick at least one of the {self.batch_size} trials "
                             f"(0..{self.batch_size - 1})")
        bad = [k for k in idx if not 0 <= k < self.batch_size]
        if bad:
            raise IndexError(f"trial(s) {bad} out of range: this stimulus has {self.batch_size} trials "
                             f"(0..{self.batch_size - 1})")
        return Stimulus(self.times, self.rates[idx], dtype=self.rates.dtype)

    def sample(self, t: torch.Tensor) -> torch.Tensor:
        """Input rates at many times: shape (T, B, n_inputs)."""
        idx = torch.searchsorted(self.times, t.to(self.times), right=True) - 1
        return self.rates[:, idx].transpose(0, 1)

    def __repr__(self) -> str:
        return (f"Stimulus(batch_size={self.batch_size}, n_inputs={self.n_inputs}, "
                f"times={[round(x, 6) for x in self.times.tolist()]})")


@dataclass(frozen=True)
class MembraneNoise:
    """Additive white noise on every population's membrane state: the DMF as a stochastic ODE.

    ``dV = (...) dt + sigma * sqrt(2 / tau_m) dW``, so that a population's V without
    coupling fluctuates around its mean with standard deviation ``sigma`` (an
    Ornstein-Uhlenbeck process with time constant ``tau_m``). The Wiener increments
    are drawn once per interval of ``step`` seconds and held over it (a piecewise-constant
    noise current, which converges to the SDE as ``step -> 0``; Wong & Zakai 1965). With
    a fixed-step solver whose step equals ``step``, ``method="euler"`` is exactly the
    Euler-Maruyama scheme. One realisation is drawn per solve, so gradients flow through
    the solve for the noise that was sampled (``simulate(..., noise=, generator=)``).

    Parameters
    ----------
    sigma : float
        Standard deviation of the free membrane state (mV); 0 switches the noise off.
    step : float
        Interval (s) over which each Wiener increment is held (default 1 ms).
    """

    sigma: float
    step: float = 1e-3

    def __post_init__(self) -> None:
        if not (math.isfinite(self.sigma) and self.sigma >= 0):
            raise ValueError(f"MembraneNoise: sigma is a standard deviation in mV and must be >= 0, got {self.sigma}")
        if not (math.isfinite(self.step) and self.step > 0):
            raise ValueError(f"MembraneNoise: step must be a positive time in s, got {self.step}")

    def sample(self, stimulus: "Stimulus", duration: float, n_populations: int, tau_m: float,
               generator: torch.Generator | None = None) -> tuple["Stimulus", torch.Tensor]:
        """The stimulus on the noise grid and one noise realisation as a drive of dV/dt.

        Parameters
        ----------
        stimulus : Stimulus
            Input rates (B trials); its change points are kept.
        duration : float
            Simulated time (s).
        n_populations : int
            P, the populations that receive noise.
        tau_m : float
            Membrane time constant (s).
        generator : torch.Generator, optional
            Source of the increments (CPU); default torch's global generator.

        Returns
        -------
        (Stimulus, torch.Tensor)
            The same input on segments that start at every multiple of ``step`` and at
            every change point, and the noise (B, K, P) in mV/s of each of its K segments:
            ``sigma sqrt(2 / (tau_m h_k)) xi`` with ``xi ~ N(0, 1)`` and ``h_k`` the
            segment's length.
        """
        dtype, dev = stimulus.rates.dtype, stimulus.rates.device
        n = int(math.ceil(duration / self.step - 1e-9))
        grid = torch.arange(n, dtype=torch.float64) * self.step
        times = torch.cat([grid, stimulus.times.to("cpu", torch.float64)]).unique(sorted=True)
        times = times[times < duration].to(dtype)  # merge at the stimulus' precision (float32 rounds)
        keep = torch.ones_like(times, dtype=torch.bool)
        keep[1:] = times[1:] - times[:-1] > 1e-6 * min(self.step, duration)
        times = times[keep].to(torch.float64)
        h = torch.diff(torch.cat([times, torch.tensor([float(duration)], dtype=torch.float64)]))
        B = stimulus.batch_size
        xi = torch.randn(B, len(times), n_populations, generator=generator, dtype=torch.float64)
        drive = xi * (self.sigma * torch.sqrt(2.0 / (tau_m * h))).reshape(1, -1, 1)
        t = times.to(dev, dtype)
        rates = stimulus.sample(t).transpose(0, 1)
        return Stimulus(t, rates, dtype=dtype), drive.to(dev, dtype)
