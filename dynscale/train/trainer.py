"""The one training loop. A :class:`Trainer` owns the model, optimizer, schedule, random
generators, epoch and step; a :class:`~dynscale.train.recipe.Recipe` supplies each step's
losses. ``state_dict()`` / ``load_state_dict()`` capture everything needed to resume exactly."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable

import torch
from torch import nn

from ..data import Dataset
from ..device import Execution, autocast, grad_scaler, place, resolve_device, to_device
from ..errors import TrainingDiverged, TrainingInterrupted
from ..parallel import all_reduce_sum, said_everywhere, world
from ..progress import progress_bar
from .config import TrainConfig, make_optimizer, make_schedule, training_subset
from .distributed import replicate
from .recipe import Recipe


class _Paused(Exception):
    """Raised inside the loop when ``fit(max_steps=...)`` has used its steps."""


class Trainer:
    """Trains ``model`` on ``data`` with a recipe.

    Args:
        model: the model (or the members' container, for recipes of several phases).
        data: the dataset; its train split (minus the held-out and beyond the limit) is used.
        config: shared settings; the trainer keeps its own copy and never changes the caller's.
        recipe: what each step computes.
        progress: show a per-step progress bar with the loss and examples per second; None
            shows it only on a terminal.
        checkpoint_every: call ``on_checkpoint`` every this many optimizer steps (of a phase).
        on_checkpoint: ``trainer -> None``, saves the state (see ``dynscale.train.fit_resumable``);
            it is also called before stopping on :meth:`request_stop`. Only rank 0 calls it.
        execution: the device (the model is moved there), mixed precision and memory format.

    Under ``torchrun`` (a process group set up by ``dynscale.train.distributed.setup``) each
    process trains a replica on its share of every global batch of ``config.batch_size``
    examples, and the gradients are averaged across the processes before each optimizer step.

    Attributes:
        state_location: where checkpoints go, for messages.
    """

    def __init__(self, model: nn.Module, data: Dataset, config: TrainConfig, recipe: Recipe,
                 progress: bool | None = None, checkpoint_every: int | None = None,
                 on_checkpoint: Callable[[Trainer], None] | None = None,
                 execution: Execution | None = None) -> None:
        self.execution = execution or Execution()
        self.device = resolve_device(self.execution.device)
        self.world = world()
        self.model = place(model, self.device, self.execution.channels_last)
        self.data = data
        self.config = copy.deepcopy(config)
        self.recipe = recipe
        self.progress = progress if self.world.main else False
        self.scaler = grad_scaler(self.device, self.execution.amp)
        self.subset = training_subset(data, self.config)
        self.phase_names = recipe.phases(model)
        self.history: list[dict] = []  # metrics of the finished phases
        self.seconds = 0.0
        self.throughput = [0, 0.0]  # (examples, seconds) of the optimizer steps alone, over every phase
        self._budget: int | None = None
        self.checkpoint_every = checkpoint_every
        self.on_checkpoint = on_checkpoint
        self.state_location: str | None = None
        self.last_checkpoint: tuple[int, int] | None = None  # (epoch, step) of the last saved state
        self.stop_requested = False  # asked in this process (a signal)
        self._agreed_stop = False  # asked in any process, agreed at the last step
        self.replica: nn.Module | None = None  # the module's DDP wrapper while a phase trains in several processes
        self._start_phase(0)

    def _start_phase(self, phase: int) -> None:
        # Every phase starts afresh from the seed, as separately trained networks would.
        self.phase = phase
        self.epoch = 0
        self.epoch_step = 0  # batches done in the current epoch
        self.step = 0  # optimizer steps done in the current phase
        self.epoch_loss = [0.0, 0]  # (sum of loss × examples, examples) in the current epoch
        self.last_loss: float | None = None  # the last finished epoch's mean loss
        self.data_rng = torch.Generator().manual_seed(self.config.seed)
        self.recipe_rng = torch.Generator().manual_seed(self.config.seed + 1)
        shard = (self.world.rank, self.world.size) if self.world.distributed else None
        if shard is not None:
            last = len(self.subset.train_y) % self.config.batch_size
            if 0 < last < self.world.size:  # a process would get no example of the last batch
                raise said_everywhere(f"the last batch of an epoch holds {last} example{'s' * (last > 1)}, fewer than "
                                      f"the {self.world.size} processes; change --batch-size or --train-limit so that "
                                      f"it holds none or at least {self.world.size}")
        self.loader = self.subset.loader("train", self.config.batch_size, shuffle=True, generator=self.data_rng,
                                         shard=shard)
        self.module = self.recipe.trainable(self.model, phase)
        self.epochs = self.recipe.phase_epochs(phase) or self.config.epochs
        self.optimizer = make_optimizer(self.recipe.parameters(self.model, phase), self.config)
        self.schedule = make_schedule(self.optimizer, self.config, self.epochs * len(self.loader))
        self._epoch_rng = self.data_rng.get_state()  # the order of the current epoch derives from it

    @property
    def stopping(self) -> bool:
        """Whether to save and stop after the current step: asked in this process, or (with
        several) in any of them, as agreed at the step's all-reduce so that all stop together."""
        return self._agreed_stop if self.world.distributed else self.stop_requested

    @property
    def steps_per_epoch(self) -> int:
        return len(self.loader)

    def fit(self, max_steps: int | None = None) -> dict | None:
        """Trains every remaining phase to the end.

        Args:
            max_steps: stop after this many more optimizer steps (to checkpoint or test a
                resume); training continues where it stopped with the next ``fit``.

        Returns:
            Metrics: the recipe's (test accuracy by default), the last epoch's mean training
            loss and the seconds taken; with several phases, also each phase's under ``phases``.
            None if ``max_steps`` stopped it before the end.

        Raises:
            TrainingDiverged: if a loss becomes NaN or infinite.
        """
        self._budget = max_steps
        while self.phase < len(self.phase_names):
            try:
                self._run_phase()
            except _Paused:
                return None
            if self.phase + 1 < len(self.phase_names):
                self._start_phase(self.phase + 1)
            else:
                self.phase += 1
        self.model.eval()
        last = self.history[-1]
        metrics = {k: v for k, v in last.items() if k != "phase"}
        metrics["train_seconds"] = round(sum(h["train_seconds"] for h in self.history), 3)
        if self.throughput[1] > 0:  # training alone: no evaluation, checkpoint or start-up
            metrics["examples_per_second"] = round(self.throughput[0] / self.throughput[1], 1)
        if len(self.history) > 1:
            metrics["phases"] = self.history
        return metrics

    def _run_phase(self) -> None:
        phase, epochs = self.phase, self.epochs
        start = time.perf_counter()
        after_step = [m for m in self.module.modules() if hasattr(m, "after_step")]
        name = self.phase_names[phase]
        bar = progress_bar(total=epochs * self.steps_per_epoch, initial=self.epoch * self.steps_per_epoch
                           + self.epoch_step, desc=name, unit="step", progress=self.progress)
        self.recipe.begin(self.model, phase)
        frozen: list[nn.Parameter] = []
        try:
            self.replica, frozen = self._replicate()
            while self.epoch < epochs:
                self.recipe.train_mode(self.model, phase)
                self.data_rng.set_state(self._epoch_rng)
                batches = iter(self.loader)
                for _ in range(self.epoch_step):  # resuming mid-epoch: skip the batches done
                    next(batches)
                tick, seen = time.perf_counter(), 0
                for x, y in batches:  # (B, C, H, W), (B,)
                    if self._budget is not None:
                        if self._budget <= 0:
                            raise _Paused
                        self._budget -= 1
                    started = time.perf_counter()
                    loss, examples = self._step(x, y, after_step)  # its loss.item() waits for a GPU
                    self.throughput[0] += examples
                    self.throughput[1] += time.perf_counter() - started
                    self.epoch_loss[0] += loss * examples
                    self.epoch_loss[1] += examples
                    seen += examples
                    bar.update()
                    every = self.checkpoint_every
                    if self.stopping or (every and self.on_checkpoint and self.step % every == 0):
                        self.checkpoint()
                    if self.stopping:
                        raise TrainingInterrupted(
                            f"training stopped at epoch {self.epoch + 1}, step {self.epoch_step}"
                            + (f"; its state is saved in {self.state_location}, continue with --resume"
                               if self.state_location else ""))
                    if bar.n % 10 == 0 or self.epoch_step == self.steps_per_epoch:
                        rate = seen / max(1e-9, time.perf_counter() - tick)
                        bar.set_postfix(epoch=self.epoch + 1, loss=f"{loss:.4f}", ex_s=f"{rate:.0f}", refresh=False)
                self.last_loss = self.epoch_loss[0] / max(1, self.epoch_loss[1])
                self.epoch += 1
                self.epoch_step = 0
                self.epoch_loss = [0.0, 0]
                self._epoch_rng = self.data_rng.get_state()
        finally:
            bar.close()
            self.replica = None
            for parameter in frozen:
                parameter.requires_grad_(True)
            self.recipe.end(self.model, phase)
        self.model.eval()
        self._check_weights()
        metrics = self.recipe.evaluate(self.model, self.data, phase)
        self.seconds += time.perf_counter() - start
        self.history.append({"phase": name, "train_loss": self.last_loss, **metrics,
                             "train_seconds": round(time.perf_counter() - start, 3)})

    def _replicate(self) -> tuple[nn.Module | None, list[nn.Parameter]]:
        """The phase's module wrapped for data-parallel training (None in one process), and
        the parameters frozen meanwhile: those the phase's optimizer does not step (DDP would
        otherwise wait for their gradients, and computing them is wasted work)."""
        if not self.world.distributed:
            return None, []
        stepped = {id(p) for group in self.optimizer.param_groups for p in group["params"]}
        frozen = [p for p in self.module.parameters() if p.requires_grad and id(p) not in stepped]
        for parameter in frozen:
            parameter.requires_grad_(False)
        return replicate(self.module, self.device, self.recipe.unused_parameters), frozen

    def _global_examples(self, local: int) -> int:
        """Examples in the current step's global batch (all processes' shares together)."""
        if not self.world.distributed:
            return local
        size = self.config.batch_size
        return min(size, len(self.subset.train_y) - self.epoch_step * size)

    def _step(self, x: torch.Tensor, y: torch.Tensor, after_step: list[nn.Module]) -> tuple[float, int]:
        x, y = to_device(x, self.device, self.execution.channels_last), to_device(y, self.device)
        examples = self._global_examples(len(y))
        # DDP averages the processes' gradients: weighing each share's mean loss by its size
        # makes that average the global batch's mean, even for unequal shares of a last batch.
        weight = len(y) * self.world.size / examples
        passes = self.recipe.passes(self.phase)
        losses = self.recipe.losses(self.replica or self.module, x, y, self.recipe_rng, self.phase)
        self.optimizer.zero_grad(set_to_none=True)
        total, done, bad = 0.0, 0, None
        while True:
            # Every backward but a step's last accumulates locally; the last one all-reduces
            # the sum (DDP decides at the forward, so the context spans forward and backward).
            last = self.replica is None or done + 1 >= passes
            with contextlib.nullcontext() if last else self.replica.no_sync():
                with autocast(self.device, self.execution.amp):
                    loss = next(losses, None)  # the recipe's forward runs here
                if loss is None:
                    break
                value = loss.item()
                if not math.isfinite(value):
                    if not self.world.distributed:
                        self._diverged(f"the training loss became {value}", self.epoch_step + 1)
                    bad = value  # every process stops together, after the all-reduce below
                scaled = loss * weight if weight != 1 else loss
                (self.scaler.scale(scaled) if self.scaler is not None else scaled).backward()
            total += value
            done += 1
        if self.replica is not None and done < passes:
            raise RuntimeError(f"the {self.recipe.name} recipe yielded {done} losses in a step but declares "
                               f"{passes} (Recipe.passes): its last gradients were never all-reduced")
        if self.world.distributed:  # one all-reduce: the global loss, a stop asked anywhere, a divergence
            shared = all_reduce_sum(torch.tensor([total * len(y), float(self.stop_requested), float(bad is not None)],
                                                 dtype=torch.float64))
            total = shared[0].item() / examples
            self._agreed_stop = shared[1].item() > 0
            if shared[2].item() > 0:
                self._diverged(f"the training loss became {bad if bad is not None else 'non-finite'} (in "
                               f"{'this' if bad is not None else 'another'} process)", self.epoch_step + 1)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.schedule.step()
        for module in after_step:  # e.g. binary layers clip their weights
            module.after_step()
        self.recipe.after_step(self.model, self.phase)
        self.step += 1
        self.epoch_step += 1
        return total, examples

    def _diverged(self, what: str, step: int) -> None:
        kept = ""
        if self.last_checkpoint is not None and self.state_location:
            kept = (f"; the last good state (epoch {self.last_checkpoint[0]}, step {self.last_checkpoint[1]}) is "
                    f"kept in {self.state_location}")
        raise TrainingDiverged(f"{what} at epoch {self.epoch + 1}, step {step} ({self.phase_names[self.phase]}); "
                               f"lower the learning rate (--lr, now {self.config.lr:g}){kept}")

    def _check_weights(self) -> None:
        for name, tensor in self.model.state_dict().items():
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                self._diverged(f"weight {name} became non-finite", self.epoch_step)

    def checkpoint(self) -> None:
        """Checks that every weight is finite, then calls ``on_checkpoint`` (if set).

        Raises:
            TrainingDiverged: if a weight is NaN or infinite (nothing is saved).
        """
        self._check_weights()
        if self.on_checkpoint is not None:
            if self.world.main:  # rank 0 alone writes; every replica holds the same state
                self.on_checkpoint(self)
            self.last_checkpoint = (self.epoch + 1, self.epoch_step)

    def request_stop(self) -> None:
        """Asks the loop to save its state and stop after the current step (signal-safe)."""
        self.stop_requested = True

    def state_dict(self) -> dict:
        """Everything needed to resume: model, optimizer, schedule, random generators, phase,
        epoch and step, the running epoch loss and the finished phases' metrics."""
        return {"phase": self.phase, "epoch": self.epoch, "epoch_step": self.epoch_step, "step": self.step,
                "epoch_loss": list(self.epoch_loss), "last_loss": self.last_loss, "seconds": self.seconds,
                "throughput": list(self.throughput),
                "history": copy.deepcopy(self.history),
                "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(), "data_rng": self._epoch_rng.clone(),
                "recipe_rng": self.recipe_rng.get_state(), "torch_rng": torch.get_rng_state(),
                "scaler": self.scaler.state_dict() if self.scaler is not None else None,
                "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None}

    def load_state_dict(self, state: dict) -> None:
        """Restores :meth:`state_dict`'s output (of a trainer with the same model, data, config
        and recipe)."""
        if state["phase"] != self.phase:
            self._start_phase(state["phase"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        self.epoch, self.epoch_step, self.step = state["epoch"], state["epoch_step"], state["step"]
        self.epoch_loss = list(state["epoch_loss"])
        self.last_loss = state["last_loss"]
        self.seconds = state["seconds"]
        self.throughput = list(state.get("throughput", [0, 0.0]))
        self.history = copy.deepcopy(state["history"])
        self._epoch_rng = state["data_rng"].clone()
        self.recipe_rng.set_state(state["recipe_rng"])
        torch.set_rng_state(state["torch_rng"])
        if state.get("scaler") and self.scaler is not None:
            self.scaler.load_state_dict(state["scaler"])
        if state.get("cuda_rng") is not None and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)


def train(model: nn.Module, data: Dataset, config: TrainConfig, recipe: Recipe,
          progress: bool | None = None, execution: Execution | None = None) -> dict:
    """Trains ``model`` with ``recipe`` (see :class:`Trainer`) and returns the final metrics; the
    recipe first checks the model and adds what it trains beyond it (:meth:`Recipe.prepare`)."""
    recipe.check(model)
    recipe.prepare(model)
    return Trainer(model, data, config, recipe, progress, execution=execution).fit()
