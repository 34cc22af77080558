"""Ctrl-C and SIGTERM: deferred to a step boundary while training, and to the end of a split in the final evaluation.

Stopping mid-step would save weights already updated by a step whose counters
and RNG draws are not recorded, so the first signal only sets a flag
(`StopOnInterrupt`) and the run stops, saves (`stop_interrupted`) and says how
to resume at the next step boundary; a second signal stops at once.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn

from . import distributed as dist_utils
from .checkpoint import save_checkpoint
from .runtime import log
from .state import Progress, TrainingState, checkpoint_state, rng_state

SIGNALS = (signal.SIGINT, signal.SIGTERM)  # Ctrl-C, and a cluster's preemption or `kill`


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C honoured at a step boundary, where model, optimiser and RNGs agree (an exact resume point)."""


class _SignalHandler:
    """Handle Ctrl-C (SIGINT) and SIGTERM with `_handle` inside a `with` block (main thread only); the previous handlers
    after it."""

    def __enter__(self):
        self._previous: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous if previous is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame: object) -> None:
        raise KeyboardInterrupt


class StopOnInterrupt(_SignalHandler):
    """Defer Ctrl-C (SIGINT) and SIGTERM (e.g. a cluster's preemption) to the end of the current training step.

    Stopping mid-step would save weights already updated by a step whose
    counters and RNG draws are not recorded, so the first Ctrl-C only sets a
    flag; `requested()` reports it at the next step boundary (agreed by all
    processes under torchrun, which forwards SIGINT to every worker). A second
    Ctrl-C interrupts at once, without saving a mid-epoch checkpoint.
    """

    until = "the current step"  # where the first signal takes effect, as the message says

    def __init__(self) -> None:
        self.flag = False

    def _handle(self, signum: int, frame: object) -> None:
        if self.flag:
            raise KeyboardInterrupt
        self.flag = True
        if dist_utils.is_main():
            name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
            os.write(2, f"\n{name}: stopping after {self.until} (press Ctrl-C again to stop at once)\n".encode())

    def requested(self) -> bool:
        """Whether any process got Ctrl-C (a collective under torchrun: every process calls it)."""
        return dist_utils.any_process(self.flag)


class StopFinalEvaluation(StopOnInterrupt):
    """Ctrl-C or SIGTERM during the final evaluation: stop it and say how to finish the run.

    Training is over and saved (last.pt, best.pt); metrics.json and the report are written atomically, so an
    interrupted evaluation leaves none half-written, and `--resume` runs just the evaluation again. Exit 130.
    One process stops at once. Under torchrun the processes evaluate together, and one stopping alone would
    leave the others waiting on it, so the first signal sets a flag that `check()` (called by all between
    splits) turns into a stop of all of them; a second signal stops at once.
    """

    until = "the split being evaluated"

    def __init__(self, run_dir: Path) -> None:
        super().__init__()
        self.run_dir = run_dir

    def _handle(self, signum: int, frame: object) -> None:
        if dist_utils.world_size() == 1:
            raise KeyboardInterrupt
        super()._handle(signum, frame)

    def check(self) -> None:
        """Stop every process if any got the signal (a collective under torchrun: every process calls it)."""
        if self.requested():
            raise KeyboardInterrupt

    def __exit__(self, exc_type: type | None, exc: BaseException | None, tb: object) -> None:
        super().__exit__()
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            stop_before_final_evaluation(self.run_dir)


@contextlib.contextmanager
def uninterrupted() -> Iterator[None]:
    """Let nothing stop what runs inside half way (a checkpoint being written): Ctrl-C and SIGTERM that arrive are
    held, then handed to the handlers in force once it is done (a second Ctrl-C then stops at once, after the save)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {sig: signal.signal(sig, lambda signum, frame: held.append(signum)) for sig in SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
    for sig in held:
        signal.raise_signal(sig)


def stop_before_final_evaluation(run_dir: Path) -> NoReturn:
    log(
        "\nInterrupted during the final evaluation; training is finished and saved in weights/. "
        f"Finish the run (metrics.json, REPORT.md) with: googlenet train --resume {run_dir}"
    )
    raise SystemExit(130) from None


def stop_interrupted(
    exc: KeyboardInterrupt, run_dir: Path, t: TrainingState, progress: Progress, epoch: int
) -> NoReturn:
    """Ctrl-C: save the step boundary it stopped at (every process's state), say how to resume, exit 130."""
    last = run_dir / "weights" / "last.pt"
    command = f"googlenet train --resume {run_dir}" + (
        " (under the same torchrun command)" if dist_utils.world_size() > 1 else ""
    )
    step = progress.epoch_state.step
    if isinstance(exc, TrainingInterrupted):
        if step:  # mid-epoch: save the exact state of this step boundary, every process's
            per_rank = dist_utils.all_gather_object(
                (rng_state(t.augment_rng, t.device), dict(progress.epoch_state.__dict__))
            )
            if dist_utils.is_main():
                with uninterrupted():
                    save_checkpoint(last, checkpoint_state(t, progress, epoch, per_rank))
            dist_utils.barrier()  # torchrun stops the others once one exits: wait for the save
        where = f"epoch {epoch + 1}, step {step}" if step else f"end of epoch {len(progress.results)}"
        log(f"\nInterrupted; progress saved ({where}). Resume with: {command}")
    elif last.is_file():
        log(f"\nInterrupted mid-step; the previous checkpoint, weights/last.pt, is kept. Resume with: {command}")
    else:
        log("\nInterrupted before the first checkpoint; nothing to resume: start the run again")
    raise SystemExit(130) from None
