"""Run logs of the image experiment: TensorBoard event files (tensorboardX, no TensorFlow) and a JSONL history.

Only the main process writes (:func:`sde_jax.parallel.is_main_process`); elsewhere the methods do nothing.
``DIR/metrics.jsonl`` holds one JSON object per line: ``{"step", "split": "train" | "eval", <metric>: value}``;
on resume the lines after the resumed step are dropped first (they are recomputed identically).
"""
from __future__ import annotations

import json
import os

import numpy as np

__all__ = ["RunLog", "JSONL_FILE", "TENSORBOARD_DIR", "read_jsonl"]

JSONL_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"


def read_jsonl(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


class RunLog:
    """TensorBoard + JSONL writer for one run (see the module docstring).

    Args:
      workdir: the run directory.
      resumed_step: the step the run resumes from (lines after it are dropped); 0 for a fresh run.
      enabled: write at all (the main process only).
    """

    def __init__(self, workdir: str, resumed_step: int, *, enabled: bool = True):
        self.enabled = enabled
        self.path = os.path.join(workdir, JSONL_FILE)
        self.last_train_step = int(resumed_step)
        self.writer = None
        if not enabled:
            return
        rows = [r for r in read_jsonl(self.path) if int(r["step"]) <= resumed_step]
        with open(self.path, "w") as f:
            f.writelines(json.dumps(r) + "\n" for r in rows)
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=os.path.join(workdir, TENSORBOARD_DIR))

    def _write(self, row: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")

    def history(self, history: dict, *, wall_offset: float = 0.0) -> None:
        """Log the windows of ``fit``'s history after the last logged step; ``wall_time`` (seconds since that
        ``fit`` call started) is shifted by ``wall_offset`` (when the call started, in the run's clock)."""
        if not self.enabled or not len(history.get("step", ())):
            return
        for i, step in enumerate(np.asarray(history["step"]).tolist()):
            if step <= self.last_train_step:
                continue
            row = {k: float(np.asarray(v)[i]) for k, v in history.items() if k != "step"}
            if "wall_time" in row:
                row["wall_time"] += wall_offset
            self.scalars(int(step), "train", row)
            self.last_train_step = int(step)

    def scalars(self, step: int, split: str, values: dict) -> None:
        if not self.enabled:
            return
        self._write({"step": int(step), "split": split, **{k: float(v) for k, v in values.items()}})
        for k, v in values.items():
            self.writer.add_scalar(f"{split}/{k}", float(v), int(step))

    def image(self, step: int, tag: str, grid: np.ndarray) -> None:
        if self.enabled:
            self.writer.add_image(tag, np.asarray(grid), int(step), dataformats="HWC")

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
