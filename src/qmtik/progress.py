"""What training shows: a progress bar within each epoch on a terminal, a line per epoch."""

from __future__ import annotations

import sys
import time


def format_epoch(record: dict, epochs: int, task: str) -> str:
    """One line per epoch: loss, training and validation figures, the arithmetic and the time."""
    metric = "acc" if task == "classification" else "mse"
    fmt = (lambda v: f"{100 * v:6.2f}%") if task == "classification" else (lambda v: f"{v:.4g}")
    parts = [
        f"epoch {record['epoch']:>{len(str(epochs))}}/{epochs}",
        f"loss {record['loss']:.4f}",
        f"train {metric} {fmt(record['train_metric'])}",
    ]
    if record.get("val_metric") is not None:
        parts.append(f"val {metric} {fmt(record['val_metric'])}")
    parts.append("int8" if record["quantized"] else "float")
    parts.append(f"{record['seconds']:.2f} s")
    return "  ".join(parts)


class Reporter:
    """Prints epoch lines to stream (stdout); draws a bar within the epoch on bar_stream (stderr)
    when that is a terminal."""

    def __init__(self, stream=None, quiet: bool = False, task: str = "classification", bar_stream=None):
        self.stream = stream if stream is not None else sys.stdout
        self.bar_stream = bar_stream if bar_stream is not None else sys.stderr
        self.quiet, self.task = quiet, task
        self.bar = not quiet and hasattr(self.bar_stream, "isatty") and self.bar_stream.isatty()
        self._last = 0.0

    def start_epoch(self, epoch: int, epochs: int, steps: int) -> None:
        self.epoch, self.epochs, self.steps = epoch, epochs, steps

    def step(self, done: int) -> None:
        now = time.monotonic()
        if not self.bar or (now - self._last < 0.1 and done < self.steps):
            return
        self._last = now
        width = 30
        filled = width * done // self.steps
        self.bar_stream.write(
            f"\repoch {self.epoch}/{self.epochs} [{'#' * filled}{'.' * (width - filled)}] {done}/{self.steps}"
        )
        self.bar_stream.flush()

    def end_epoch(self, record: dict) -> None:
        if self.quiet:
            return
        if self.bar:
            self.bar_stream.write("\r\033[K")
            self.bar_stream.flush()
        self.stream.write(format_epoch(record, self.epochs, self.task) + "\n")
        self.stream.flush()

    def message(self, text: str) -> None:
        if not self.quiet:
            self.stream.write(text + "\n")
            self.stream.flush()


class Silent(Reporter):
    """Shows nothing (the API's default)."""

    def __init__(self):
        super().__init__(quiet=True)
