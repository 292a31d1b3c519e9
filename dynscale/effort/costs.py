"""Measured costs of each effort layer: its dense kernels, and each knob at several active
fractions, per batch size and thread count, on this machine; cached as JSON.

The tuner maximises the time saved as this table predicts it, not the MACs: a knob whose
decision and gather overheads outweigh what it skips at the active fraction it reaches on
held-out data is not chosen, and a layer's dense path runs on whichever dense kernel
(``F.conv2d`` or im2col and one matrix product) measured faster at that batch size.

The cache (``$DYNSCALE_CACHE/effort-costs.json``, else ``~/.cache/dynscale/``) holds one table
per machine fingerprint (CPU model and torch version); an entry is keyed by the layer's
signature (its shapes), the variant (a dense kernel, or a knob with its structural setting), the
batch size and the thread count. Everything read back is schema-checked: a damaged file is set
aside with a warning and measured again, never trusted; writes are atomic.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.benchmark import Timer

from ..data.download import cache_dir
from ..files import dumps_json, write_json
from ..progress import progress_bar
from ..runtime import cpu_model
from ..schema import Int, ListOf, MapOf, Num, Record, SchemaError, Str, check_fields, setting
from .kernels import KERNELS
from .layers import EffortConv2d, EffortLayer
from .settings import SDSS, SFMA, SPET, LayerEffort

FORMAT = "dynscale-effort-costs"
SCHEMA_VERSION = 1
FILENAME = "effort-costs.json"
FRACTIONS = (0.0, 0.125, 0.25, 0.5, 0.75, 1.0)  # active fractions each knob is timed at
# The structural settings of each knob the tuner uses (SPET: the fraction of input channels in
# the partial sum; SDSS: the grid's stride; SFMA: the tile's size), each timed separately.
VARIANTS = {"spet": (0.25, 0.5), "sdss": (2,), "sfma": (2, 4)}
LARGE_MAP = 8  # SFMA: 4×4 tiles on maps at least this large, 2×2 on smaller ones
MIN_RUN_TIME = 0.05  # seconds of blocked_autorange per probe: a table is ~40 probes per layer shape


def machine() -> str:
    """This machine's fingerprint: the CPU model and the torch version."""
    return f"{cpu_model()} | torch {torch.__version__}"


def cache_path() -> Path:
    """Where the table is kept: ``$DYNSCALE_CACHE/effort-costs.json``."""
    return cache_dir() / FILENAME


def signature(layer: EffortLayer, grid: int = 1) -> str:
    """What a layer's costs depend on: its kind, shapes and ReLU (``conv 16x28x28->16 k3x3 s1x1
    p1x1 d1x1 g1 relu``); with ``grid`` > 1, those of SDSS's grid convolution of that stride
    (the layer's stride times ``grid``).

    Raises:
        ValueError: for a layer that has not run yet (its input size is unknown).
    """
    if layer.input_size is None:
        raise ValueError("run the effort network once before measuring its costs (input sizes are unknown)")
    relu = " relu" if layer.relu else ""
    if isinstance(layer, EffortConv2d):
        c, h, w = layer.input_size
        stride = (layer.stride[0] * grid, layer.stride[1] * grid)
        pairs = " ".join(f"{t}{a}x{b}" for t, (a, b) in (("k", layer.weight.shape[2:]), ("s", stride),
                                                          ("p", layer.padding), ("d", layer.dilation)))
        return f"conv {c}x{h}x{w}->{layer.weight.shape[0]} {pairs} g{layer.groups}{relu}"
    return f"linear {layer.weight.shape[1]}->{layer.weight.shape[0]}{relu}"


def dense_variants(layer: EffortLayer) -> list[str]:
    """The dense kernels a layer can run on, as variant names (``dense/conv``, ``dense/gemm``)."""
    if isinstance(layer, EffortConv2d) and layer.groups == 1:
        return [f"dense/{k}" for k in KERNELS]
    return ["dense/conv" if isinstance(layer, EffortConv2d) else "dense/linear"]


def knob_variant(knob: str, effort: LayerEffort) -> str:
    """The variant name of a layer's knob: the knob and its structural setting (``sdss/2``)."""
    value = {"spet": lambda: effort.spet.fraction, "sdss": lambda: effort.sdss.stride,
             "sfma": lambda: effort.sfma.tile}[knob]()
    return f"{knob}/{value:g}"


def placeholder(knob: str, value: float) -> LayerEffort:
    """An acting setting of ``knob`` with structural setting ``value``, for timing (the decision
    is forced, so its thresholds do not matter)."""
    return {"spet": lambda: LayerEffort(spet=SPET(value, 0.0)), "sdss": lambda: LayerEffort(sdss=SDSS(int(value), 1.0)),
            "sfma": lambda: LayerEffort(sfma=SFMA(1.0, int(value)))}[knob]()


@dataclass(frozen=True)
class Probe:
    """One thing to time: a layer shape's variant at a batch size, thread count and (for a
    knob) active fraction."""

    signature: str
    variant: str
    batch: int
    threads: int
    fraction: float = 1.0

    @property
    def key(self) -> str:
        return entry_key(self.signature, self.variant, self.batch, self.threads)


def entry_key(signature: str, variant: str, batch: int, threads: int) -> str:
    """The table key of a (layer shape, variant, batch size, thread count)."""
    return f"{signature} | {variant} | batch {batch} | threads {threads}"


@dataclass
class Entry:
    """Seconds per call at each active fraction (one fraction, 1, for a dense kernel)."""

    fractions: list[float] = setting(check=ListOf(Num(0.0, 1.0), min_len=1, unique=True))
    seconds: list[float] = setting(check=ListOf(Num(0.0, low_open=True), min_len=1))


@dataclass
class CostFile:
    """The cache file."""

    format: str = setting(check=Str((FORMAT,)))
    schema_version: int = setting(check=Int(SCHEMA_VERSION, SCHEMA_VERSION))
    machines: dict = setting(check=MapOf(MapOf(Record(Entry))))


def check_document(doc: object, where: str) -> dict:
    """Checks a cost file's contents.

    Raises:
        SchemaError: naming what is wrong.
    """
    check_fields(CostFile, doc, where)
    for name, entries in doc["machines"].items():
        for key, entry in entries.items():
            fractions = entry["fractions"]
            if len(fractions) != len(entry["seconds"]) or fractions != sorted(fractions):
                raise SchemaError(f"{where}.machines.{name}.{key} needs as many seconds as fractions, in rising order")
    return doc


@dataclass
class CostTable:
    """Measured seconds per call, of this machine (other machines' entries are kept as read).

    Attributes:
        machine: this machine's fingerprint.
        entries: key (:func:`entry_key`) → :class:`Entry` as a dict.
        others: the other machines' entries, written back unchanged.
        path: the cache file, or None for a table only in memory (tests).
    """

    machine: str = field(default_factory=machine)
    entries: dict[str, dict] = field(default_factory=dict)
    others: dict[str, dict] = field(default_factory=dict)
    path: Path | None = None

    @classmethod
    def load(cls, path: str | Path | None = None) -> CostTable:
        """The table in the cache file (default :func:`cache_path`); empty when there is none.
        A file that fails the checks is not trusted: a warning says so, and the table starts
        empty (the next save replaces the file)."""
        path = Path(path) if path is not None else cache_path()
        table = cls(path=path)
        if not path.exists():
            return table
        try:
            doc = check_document(json.loads(path.read_text()), str(path))
        except (OSError, ValueError) as e:
            print(f"warning: ignoring the effort cost cache {path}, it is damaged ({e}); measuring again",
                  file=sys.stderr)
            return table
        table.entries = dict(doc["machines"].get(table.machine, {}))
        table.others = {m: e for m, e in doc["machines"].items() if m != table.machine}
        return table

    def save(self) -> None:
        """Writes the table to its file, atomically (nothing without a path)."""
        if self.path is None:
            return
        doc = {"format": FORMAT, "schema_version": SCHEMA_VERSION,
               "machines": {**self.others, self.machine: self.entries}}
        dumps_json(doc)  # refuses a non-finite number before anything is written
        write_json(self.path, doc)

    def put(self, probe: Probe, seconds: float) -> None:
        """Records one timing (its fraction inserted in order)."""
        entry = self.entries.setdefault(probe.key, {"fractions": [], "seconds": []})
        pairs = dict(zip(entry["fractions"], entry["seconds"], strict=True))
        pairs[float(probe.fraction)] = float(seconds)
        entry["fractions"], entry["seconds"] = sorted(pairs), [pairs[f] for f in sorted(pairs)]

    def has(self, probe: Probe) -> bool:
        entry = self.entries.get(probe.key)
        return entry is not None and float(probe.fraction) in entry["fractions"]

    def seconds(self, signature: str, variant: str, batch: int, threads: int, fraction: float = 1.0) -> float:
        """Seconds per call, linearly interpolated between the measured active fractions.

        Raises:
            KeyError: naming the entry when it was not measured.
        """
        key = entry_key(signature, variant, batch, threads)
        if key not in self.entries:
            raise KeyError(f"no measured cost for {key}")
        entry = self.entries[key]
        xs, ys = entry["fractions"], entry["seconds"]
        if len(xs) == 1 or fraction <= xs[0]:
            return ys[0]
        for (x0, y0), (x1, y1) in zip(zip(xs, ys, strict=True), zip(xs[1:], ys[1:], strict=True), strict=False):
            if fraction <= x1:
                return y0 + (y1 - y0) * (fraction - x0) / (x1 - x0)
        return ys[-1]


def timed(run: Callable[[], object], threads: int) -> float:
    """Seconds per call of ``run`` (``blocked_autorange``'s median).

    With one thread the clock is this process's CPU time, which equals the wall-clock of
    single-threaded work on a quiet machine and, unlike it, is not inflated when other
    processes share the cores (the table decides between kernels, so a preemption in one probe
    must not decide); with several threads it is the wall-clock.
    """
    clock = time.process_time if threads == 1 else time.perf_counter
    timer = Timer(stmt="run()", globals={"run": run}, num_threads=threads, timer=clock)
    return timer.blocked_autorange(min_run_time=MIN_RUN_TIME).median


Clock = Callable[[Probe, Callable[[], object]], float]


def _forced(layer: EffortLayer, knob: str, x: torch.Tensor, fraction: float,
            generator: torch.Generator) -> torch.Tensor:
    """A decision of ``fraction`` of the knob's units, for timing: the same number of units per
    example at random places (SPET: the same filters for the whole batch, so that the union the
    batch computes is that fraction).

    Returns:
        ``(B, U)`` bool, as the knob's ``force`` takes it.
    """
    with torch.no_grad():
        units = layer.run_knob(x[:1], knob).active.shape[1]
    keep = round(fraction * units)
    rows = 1 if knob == "spet" else len(x)
    order = torch.rand(rows, units, generator=generator).argsort(1)
    mask = torch.zeros(rows, units, dtype=torch.bool)
    mask.scatter_(1, order[:, :keep], True)
    return mask.expand(len(x), units).clone()


def variants(layer: EffortLayer, knob: str) -> tuple[float, ...]:
    """The structural settings of ``knob`` the tuner tries on ``layer`` (none where it cannot
    take the knob); SFMA's tile follows the map's size."""
    values = VARIANTS[knob]
    if knob == "sfma" and layer.input_size is not None and len(layer.input_size) == 3:
        small = min(layer.input_size[1:]) < LARGE_MAP
        values = tuple(v for v in values if (v == min(values)) == small)
    return tuple(v for v in values if _takes(layer, placeholder(knob, v)))


def grids(layer: EffortLayer, knobs: Sequence[str]) -> list[int]:
    """The grids whose dense convolution a layer runs: 1 (itself), and SDSS's strides where it
    takes SDSS."""
    return [1] + (list(variants(layer, "sdss")) if "sdss" in knobs else [])


def _takes(layer: EffortLayer, effort: LayerEffort) -> bool:
    try:
        layer.check(effort, "")
    except ValueError:
        return False
    return True


def _probes(layer: EffortLayer, knobs: Sequence[str], batch: int, threads: int) -> list[Probe]:
    """What to time for one layer at one batch size: its dense kernels (for itself and for
    each SDSS grid), then each knob it can take at each structural setting and active fraction."""
    probes = [Probe(signature(layer, g), variant, batch, threads)
              for g in grids(layer, knobs) for variant in dense_variants(layer)]
    for knob in knobs:
        for value in variants(layer, knob):
            variant = knob_variant(knob, placeholder(knob, value))
            probes += [Probe(signature(layer), variant, batch, threads, f) for f in FRACTIONS]
    return probes


def measure(layers: dict[str, EffortLayer], knobs: Sequence[str], batches: Sequence[int], threads: int,
            table: CostTable | None = None, clock: Clock | None = None, progress: bool | None = None) -> CostTable:
    """Fills the table with what is missing for these layers, and saves it.

    Each layer shape is timed once (VGG's repeated shapes share entries), on random inputs of
    its shape (a knob's decision is forced to each active fraction, so the values do not
    matter), the dense kernels first: a knob's own convolutions run on the dense kernel that
    won at that batch size, as they will at run time.

    Args:
        layers: the effort layers by name (each has run once: its input size is known).
        knobs: the knobs to time.
        batches: batch sizes.
        threads: intra-op threads (``torch.set_num_threads`` while timing).
        table: the table to fill (default: the cache file's).
        clock: ``(probe, run) -> seconds per call``; default :func:`timed` (tests pass a
            clock that computes the time from the probe).
        progress: show a progress bar; None shows it only on a terminal.

    Returns:
        The table; the layers' dense kernels are set from it (:func:`set_kernels`).
    """
    table = table if table is not None else CostTable.load()
    clock = clock or (lambda probe, run: timed(run, threads))
    shapes = {signature(layer): layer for layer in layers.values()}
    work = [(layer, batch, [p for p in _probes(layer, knobs, batch, threads) if not table.has(p)])
            for layer in shapes.values() for batch in batches]
    work = [w for w in work if w[2]]
    if work:
        bar = progress_bar(total=sum(len(w[2]) for w in work), progress=progress, desc="measuring effort costs",
                           unit="probe")
        previous = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            for layer, batch, probes in work:
                _measure_layer(layer, knobs, batch, threads, probes, table, clock, bar)
        finally:
            torch.set_num_threads(previous)
            bar.close()
        table.save()
    set_kernels(layers, table, knobs, batches, threads)
    return table


@torch.no_grad()
def _measure_layer(layer: EffortLayer, knobs: Sequence[str], batch: int, threads: int, probes: list[Probe],
                   table: CostTable, clock: Clock, bar) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, *layer.input_size, generator=generator)
    saved_effort, saved_kernels = layer.effort, dict(layer.kernels)
    try:
        layer.effort = LayerEffort()
        for grid in grids(layer, knobs):
            sig = signature(layer, grid)
            for probe in (p for p in probes if p.signature == sig and p.variant.startswith("dense/")):
                kernel = probe.variant.split("/")[1]
                table.put(probe, clock(probe, lambda kernel=kernel, grid=grid: layer.dense(x, kernel, grid)))
                bar.update()
            if isinstance(layer, EffortConv2d):  # a knob's own convolutions run on the kernel that won
                layer.kernels[batch, grid] = best_dense(table, sig, dense_variants(layer), batch, threads)[6:]
        for probe in (p for p in probes if not p.variant.startswith("dense/")):
            knob, value = probe.variant.split("/")
            layer.effort = placeholder(knob, float(value))
            force = _forced(layer, knob, x, probe.fraction, generator)
            table.put(probe, clock(probe, lambda knob=knob, force=force: layer.run_knob(x, knob, force)))
            bar.update()
    finally:
        layer.effort, layer.kernels = saved_effort, saved_kernels


def best_dense(table: CostTable, sig: str, variants: Sequence[str], batch: int, threads: int) -> str:
    """The dense variant with the least measured time."""
    return min(variants, key=lambda v: table.seconds(sig, v, batch, threads))


def set_kernels(layers: dict[str, EffortLayer], table: CostTable, knobs: Sequence[str], batches: Sequence[int],
                threads: int) -> None:
    """Sets each convolution's dense kernels (its own, and its SDSS grids') per batch size to
    those measured fastest."""
    for layer in layers.values():
        if not isinstance(layer, EffortConv2d):
            continue
        variants = dense_variants(layer)
        layer.set_kernels({(b, g): best_dense(table, signature(layer, g), variants, b, threads)[6:]
                           for b in batches for g in grids(layer, knobs)})


def layer_seconds(table: CostTable, layer: EffortLayer, effort: LayerEffort, batch: int, threads: int,
                  fraction: float = 1.0) -> float:
    """Predicted seconds per batch of one layer: its fastest dense kernel without a knob, else
    its knob at the active ``fraction``.

    Raises:
        KeyError: when the table lacks the entry (measure first).
    """
    sig = signature(layer)
    if effort.knob is None:
        return min(table.seconds(sig, v, batch, threads) for v in dense_variants(layer))
    return table.seconds(sig, knob_variant(effort.knob, effort), batch, threads, fraction)
