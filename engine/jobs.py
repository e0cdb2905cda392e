"""The job runners: one function per job kind, joining the engine's loops to a reporter.

Each runner takes an experiment (`engine.params.ExperimentSpec`), the job's parameters
and a `JobReporter`: progress, metric points, activity-log lines, checkpoints and
scored architectures. The worker process (`smash_tui.runner`) implements the reporter
with the database; nothing here knows about SQL, terminals or processes. Every loop
polls `JobReporter.should_stop` between steps; a stopped loop has written its
checkpoint, and running the same job again resumes from it. The runners reach the
experiment's search space only through its kind (`engine.kinds.kind_of(spec.space)`):
architectures' costs, derived networks and the SMASH module all come from it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch

from engine.checkpoint import CheckpointError, save_weights
from engine.config import DataConfig, ScoreConfig
from engine.data import Dataset, device_images, load_dataset
from engine.device import autocast_context
from engine.distributed import SINGLE, World
from engine.errors import ConfigError, DatasetError
from engine.events import CheckpointSaved, TrainEval, TrainProgress
from engine.fanout import ChunkBoard, ChunkStopped, FannedOut, Landed, as_leader
from engine.kinds import Arch, DerivedModule, kind_of
from engine.params import (
    COMMIT_EVERY,
    ChunkParams,
    ExperimentSpec,
    RetrainParams,
    ScoreParams,
    SearchParams,
    TrainParams,
    check_batch,
    score_method,
)
from engine.retrain import RetrainEpoch, RetrainResult, retrain
from engine.score import (
    Score,
    Scorer,
    bn_recalibrated,
    recalibration_batches,
    scoring_batch_size,
    z_generator,
)
from engine.search import run_search
from engine.train import build_smash, load_smash, train_hypernet
from engine.truth import TruthConfig, TruthTable, load_truth

# Seconds after which buffered scores are handed over even if fewer than commit_every.
SCORE_FLUSH_S = 5.0


# Reporting -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScoredArchitecture:
    """A scored architecture with everything the browser shows about it."""

    spec: str  # the architecture as compact JSON
    hash: str  # its canonical hash
    params: int  # trainable parameters of the derived network
    flops: int  # forward FLOPs per image of the derived network
    depth: int  # layers on the longest path
    num_ops: int  # ops in the graph
    source: str  # how the search found it: random, perturb, markov, evolution, rescore
    error: float  # validation error with generated weights, percent
    loss: float  # mean validation loss
    images: int  # validation images it was measured on
    z_draws: int  # z draws averaged
    method: str  # how it was measured (see score_method)
    bench_acc: float | None = None  # the benchmark table's accuracy of it, when the experiment has one
    rungs: tuple[tuple[int, float, float], ...] | None = None  # a racing survivor's (images, wrong, loss) per rung


class JobReporter(Protocol):
    """Where a running job reports; the worker writes it all to the database."""

    def progress(self, fraction: float, text: str, eta_s: float | None = None) -> None:
        """Fraction done (0..1), a short status line and the estimated seconds left."""

    def metrics(self, step: int, values: Mapping[str, float]) -> None:
        """Points of the job's time series at one step (or epoch)."""

    def event(self, message: str, level: str = "info") -> None:
        """A line for the activity log."""

    def checkpoint(self, step: int, path: str, metrics: Mapping[str, float]) -> None:
        """A checkpoint file was written atomically."""

    def scored(self, results: Sequence[ScoredArchitecture]) -> None:
        """A batch of newly scored architectures, to be committed together."""

    def should_stop(self) -> bool:
        """True when the job must checkpoint and return (pause, cancel, shutdown)."""


def describe(
    arch: Arch,
    spec: ExperimentSpec,
    score: Score,
    source: str,
    config: ScoreConfig,
    truth: TruthTable | None = None,
    rungs: Mapping[int, tuple[float, float]] | None = None,
) -> ScoredArchitecture:
    """Size and cost (of the network the search scored), score and truth, ready to record."""
    cost = kind_of(spec.space).cost(arch, spec.num_classes, spec.in_channels, spec.image_size, space=spec.space)
    return ScoredArchitecture(
        spec=arch.to_json(),
        hash=arch.hash,
        params=cost.params,
        flops=cost.flops,
        depth=arch.depth,
        num_ops=arch.num_ops,
        source=source,
        error=score.error,
        loss=score.loss,
        images=score.images,
        z_draws=score.z_draws,
        method=score_method(score.method, config),
        bench_acc=None if truth is None else truth.accuracy(arch),
        rungs=None if rungs is None else tuple((images, wrong, loss) for images, (wrong, loss) in sorted(rungs.items())),
    )


class _ScoreBuffer:
    """Hands scored architectures to the reporter in small batches (a crash loses one batch)."""

    def __init__(self, reporter: JobReporter, every: int) -> None:
        self.reporter = reporter
        self.every = every
        self.items: list[ScoredArchitecture] = []
        self.last_flush = time.monotonic()

    def add(self, item: ScoredArchitecture) -> None:
        self.items.append(item)
        if len(self.items) >= self.every or time.monotonic() - self.last_flush >= SCORE_FLUSH_S:
            self.flush()

    def flush(self) -> None:
        if self.items:
            self.reporter.scored(self.items)
            self.items = []
        self.last_flush = time.monotonic()



# Data ----------------------------------------------------------------------------------------


_datasets: dict[DataConfig, Dataset] = {}


def get_dataset(config: DataConfig) -> Dataset:
    """The loaded data set; the last one is kept, since a worker's jobs usually share it.

    Raises:
        DatasetError: It cannot be loaded.
    """
    if config not in _datasets:
        dataset = load_dataset(config)
        _datasets.clear()
        _datasets[config] = dataset
    return _datasets[config]


def experiment_data(spec: ExperimentSpec) -> Dataset:
    """The experiment's data set, checked against the shape stored when it was created.

    Raises:
        DatasetError: It cannot be loaded, or it is not the data the experiment was
            made for (files replaced since: its scores would not be comparable).
    """
    data = get_dataset(spec.data)
    found = (len(data.train), len(data.val), data.num_classes, data.in_channels, data.image_size)
    stored = (spec.train_images, spec.val_images, spec.num_classes, spec.in_channels, spec.image_size)
    if any(want is not None and want != got for want, got in zip(stored, found)):
        raise DatasetError(
            f"data set {spec.data.dataset} has changed since the experiment was created: "
            f"(train, val, classes, channels, size) is {found}, was {stored}"
        )
    return data


# The jobs ------------------------------------------------------------------------------------


def run_train(
    spec: ExperimentSpec,
    params: TrainParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    checkpoint_path: Path,
    world: World = SINGLE,
) -> bool:
    """Train the experiment's HyperNet, resuming from ``checkpoint_path`` when it exists.

    With several ranks (`world`, `engine.distributed`) every rank calls this with the
    same job; rank 0's reporter writes, the others' may discard everything.

    Metrics: loss, accuracy, lr, images_per_s at each report; val_error, val_loss at
    each epoch end.

    Returns:
        True when training finished; False when it stopped on request (checkpointed).

    Raises:
        DatasetError, ConfigError, CheckpointError, TrainingDiverged: the run cannot go on.
    """
    data = experiment_data(spec)
    check_batch(params.train.batch_size, len(data.train), "HyperNet training")
    # The initial weights follow from the experiment's seed; the caller's RNG is left alone.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec.seed)
        net = build_smash(spec.space, spec.num_classes, spec.in_channels, spec.hypernet, device, spec.weights)

    def on_progress(event: TrainProgress) -> None:
        reporter.metrics(
            event.step,
            {
                "loss": event.loss,
                "accuracy": event.accuracy,
                "lr": event.lr,
                "images_per_s": event.images_per_s,
            },
        )
        reporter.progress(
            event.step / max(event.total_steps, 1),
            f"step {event.step}/{event.total_steps} · loss {event.loss:.3f} · acc {event.accuracy:.1f}%",
            event.eta_s,
        )

    def on_eval(event: TrainEval) -> None:
        reporter.metrics(event.step, {"val_error": event.error, "val_loss": event.loss})
        reporter.event(
            f"HyperNet epoch {event.epoch}, step {event.step}: validation error {event.error:.2f}% "
            f"(loss {event.loss:.3f}) over {event.architectures} random architectures"
        )

    def on_checkpoint(event: CheckpointSaved) -> None:
        reporter.checkpoint(event.step, event.path, event.metrics)

    outcome = train_hypernet(
        net,
        data,
        params.train,
        checkpoint_path=checkpoint_path,
        on_progress=on_progress,
        on_eval=on_eval,
        on_checkpoint=on_checkpoint,
        should_stop=reporter.should_stop,
        world=world,
    )
    if outcome.finished and outcome.checkpoint is None and world.is_main:
        raise CheckpointError(f"training finished without writing {checkpoint_path}")
    return outcome.finished


_scorers: dict[tuple[object, ...], Scorer] = {}


def _scorer(
    spec: ExperimentSpec,
    config: ScoreConfig,
    device: torch.device,
    hypernet_path: Path,
    reporter: JobReporter | None = None,
    first_rung: int | None = None,
) -> Scorer:
    """The scorer of a checkpoint; the last one is kept, since a worker scores chunk after
    chunk of one search (the file's size and time tell a checkpoint written again).

    A kept scorer reports a halved batch to the job now using it, not to the one that made it.
    """

    def on_batch_halved(old: int, new: int, reason: str) -> None:
        if reporter is not None:
            reporter.event(f"scoring ran out of device memory at batch {old}, goes on at batch {new}: {reason}", "warning")

    try:
        stat = hypernet_path.stat()
        key: tuple[object, ...] = (
            str(hypernet_path), stat.st_mtime_ns, stat.st_size, spec.data, config, str(device), first_rung
        )
    except OSError:
        key = ()
    scorer = _scorers.get(key) if key else None
    if scorer is None:
        scorer = _build_scorer(spec, config, device, hypernet_path, first_rung)
        _scorers.clear()
        if key:
            _scorers[key] = scorer
    scorer.on_batch_halved = on_batch_halved
    return scorer


def _build_scorer(
    spec: ExperimentSpec, config: ScoreConfig, device: torch.device, hypernet_path: Path, first_rung: int | None
) -> Scorer:
    net, _ = load_smash(hypernet_path, device)
    data = experiment_data(spec)
    if len(data.val) == 0:
        raise ConfigError("the validation split is empty: there is nothing to score on")
    val = device_images(data.val, device, data.mean, data.std)
    train = (
        device_images(data.train, device, data.mean, data.std)  # the one training uploaded
        if config.bn_recalibration_batches
        else None
    )
    return Scorer(net, val, config, train=train, first_rung=first_rung)


_truth_tables: dict[tuple[object, ...], TruthTable] = {}


def _load_truth_once(config: TruthConfig) -> TruthTable:
    """The table, parsed once per worker process while its file is unchanged.

    Every chunk of a search reads it; parsing 15,625 rows per chunk would cost a
    chunk's share of seconds.
    """
    stat = Path(config.path).stat()
    key = (config, stat.st_mtime_ns, stat.st_size)
    if key not in _truth_tables:
        _truth_tables.clear()  # one table at a time: a worker serves one experiment after another
        _truth_tables[key] = load_truth(config)
    return _truth_tables[key]


def _truth(spec: ExperimentSpec, reporter: JobReporter, *, quiet: bool = False) -> TruthTable | None:
    """The experiment's benchmark table, read once per job (None without one)."""
    if spec.truth is None:
        return None
    table = _load_truth_once(spec.truth)
    if not quiet:  # a chunk is part of a search, which said it already
        reporter.event(f"benchmark truth: {spec.truth.label} ({len(table.by_class)} classes of cells)")
    return table


def run_search_job(
    spec: ExperimentSpec,
    params: SearchParams,
    reporter: JobReporter,
    *,
    board: ChunkBoard,
    checkpoint_id: int,
    device: torch.device,
    known: Mapping[str, Landed],
) -> bool:
    """Coordinate a search: run its strategy, every batch scored in chunks that any worker claims.

    Nothing is scored here: the chunks are (`run_chunk_job`), by this worker while it
    waits and by any other; see `engine.fanout`. The board reports the search's progress.

    Args:
        spec: The experiment.
        params: Strategy, budget, scoring and chunk size.
        reporter: Where the search reports (its should_stop ends the search).
        board: Where its chunks go.
        checkpoint_id: The HyperNet checkpoint every chunk scores against.
        device: This worker's device (it fixes the scoring batch of every chunk).
        known: Scores already recorded against that checkpoint, by hash: never rescored,
            so a restarted search replays its decisions and continues.

    Returns:
        True when the search ran to its end; False when it stopped on request.

    Raises:
        ChunkError: A chunk failed (e.g. a worker could not read the checkpoint).
    """
    _truth(spec, reporter)  # said once, by the search; its chunks read the table quietly
    scorer = FannedOut(
        params,
        board,
        checkpoint_id=checkpoint_id,
        batch_size=scoring_batch_size(params.score, device),
        known=known,
    )
    try:
        _, finished = run_search(
            spec.space,
            params.search,
            scorer,
            known={hash_: landed.score for hash_, landed in known.items()},
            should_stop=reporter.should_stop,
        )
    except ChunkStopped:
        return False
    return finished


def run_chunk_job(
    spec: ExperimentSpec,
    params: ChunkParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    hypernet_path: Path,
    scored: set[str],
) -> bool:
    """Score one chunk of a search, reporting its scores in small batches.

    Racing, the candidates race against the chunk's leaders, and survivors are reported
    with their sums at every rung (later chunks race against them).

    Args:
        spec: The experiment.
        params: The chunk.
        reporter: Where results go.
        device: Where to score.
        hypernet_path: The chunk's checkpoint.
        scored: Hashes already scored against it (an earlier attempt of the chunk
            committed them): not scored again.

    Returns:
        True when the chunk is scored; False when it stopped on request.
    """
    kind = kind_of(spec.space)
    archs = [
        kind.parse(text, spec.space)
        for text, hash_ in zip(params.architectures, params.hashes)
        if hash_ not in scored
    ]
    if not archs:
        return True
    if reporter.should_stop():
        return False
    first_rung = params.race.first_images if params.racing else None  # as the search's own scorer cuts
    scorer = _scorer(spec, params.score, device, hypernet_path, reporter, first_rung)
    truth = _truth(spec, reporter, quiet=True)
    buffer = _ScoreBuffer(reporter, params.commit_every)
    done = 0

    def add(arch: Arch, score: Score, rungs: Mapping[int, tuple[float, float]] | None) -> None:
        nonlocal done
        buffer.add(describe(arch, spec, score, params.source, params.score, truth, rungs))
        done += 1
        reporter.progress(done / len(archs), f"{done}/{len(archs)} scored")

    try:
        return score_chunk(scorer, params, archs, add, reporter.should_stop)
    finally:
        buffer.flush()


def score_chunk(
    scorer: Scorer,
    params: ChunkParams,
    archs: Sequence[Arch],
    add: Callable[[Arch, Score, Mapping[int, tuple[float, float]] | None], None],
    should_stop: Callable[[], bool],
) -> bool:
    """Score a chunk's architectures: each full score, or one race against the chunk's leaders.

    `add` receives every score as it exists (a racing survivor with its sums at every
    rung, None otherwise). A race is not cut short: its candidates are compared on the
    same images to the end.

    Returns:
        True when all are scored; False when `should_stop` ended full scoring early.
    """
    if not params.racing:
        for arch in archs:
            if should_stop():
                return False
            add(arch, scorer.score(arch), None)
        return True

    def dropped(arch: Arch, score: Score) -> None:
        if score.method != "full":  # survivors are added below, with their rungs
            add(arch, score, None)

    leaders = [as_leader(record) for record in params.leaders]
    scores, survivors = scorer._race(archs, params.race, dropped, leaders)
    # `_race` returns the survivors in candidate order, the candidates it scored in full.
    full = [arch for arch, score in zip(archs, scores) if score.method == "full"]
    for arch, survivor in zip(full, survivors, strict=True):
        add(arch, survivor.score, survivor.rungs)
    return True


def run_score_job(
    spec: ExperimentSpec,
    params: ScoreParams,
    reporter: JobReporter,
    *,
    device: torch.device,
    hypernet_path: Path,
    architectures: Sequence[Arch],
) -> bool:
    """Score the given architectures (those not scored with this method yet).

    Returns:
        True when all were scored; False when it stopped on request.
    """
    scorer = _scorer(spec, params.score, device, hypernet_path, reporter)
    truth = _truth(spec, reporter)
    buffer = _ScoreBuffer(reporter, COMMIT_EVERY)
    try:
        for index, arch in enumerate(architectures):
            if reporter.should_stop():
                return False
            score = scorer.score(arch)
            buffer.add(describe(arch, spec, score, "rescore", params.score, truth))
            reporter.progress(
                (index + 1) / len(architectures),
                f"{index + 1}/{len(architectures)} scored",
            )
    finally:
        buffer.flush()
    return True


def run_retrain_job(
    spec: ExperimentSpec,
    params: RetrainParams,
    arch: Arch,
    reporter: JobReporter,
    *,
    device: torch.device,
    checkpoint_path: Path,
    weights_path: Path,
) -> RetrainResult | None:
    """Retrain an architecture from scratch, resuming from ``checkpoint_path`` when it exists.

    Metrics per epoch: train_loss, train_acc, val_acc, lr, images_per_s. The final
    weights go to ``weights_path`` as a plain ``state_dict``.

    Returns:
        The result, or None when the run stopped on request (checkpointed).

    Raises:
        DatasetError, RetrainError, CheckpointError: the run cannot go on.
    """
    data = experiment_data(spec)

    def on_epoch(event: RetrainEpoch) -> None:
        values = {
            "train_loss": event.train_loss,
            "train_acc": event.train_acc,
            "lr": event.lr,
            "images_per_s": event.images_per_s,
        }
        if event.val_acc is not None:
            values["val_acc"] = event.val_acc
        reporter.metrics(event.epoch, values)
        if event.epoch % params.retrain.checkpoint_every_epochs == 0 or event.epoch == event.epochs:
            reporter.checkpoint(event.epoch, str(checkpoint_path), values)
        val = f" · val {event.val_acc:.1f}%" if event.val_acc is not None else ""
        reporter.progress(
            event.epoch / event.epochs,
            f"epoch {event.epoch}/{event.epochs} · loss {event.train_loss:.3f}{val}",
            event.eta_s,
        )

    result = retrain(
        arch,
        data,
        params.retrain,
        device=device,
        on_epoch=on_epoch,
        checkpoint_path=checkpoint_path,
        should_stop=reporter.should_stop,
        num_classes=spec.num_classes,
        in_channels=spec.in_channels,
        kind=kind_of(spec.space),
        space=spec.space,  # the network the search scored is the one retrained
    )
    if result is None:
        return None
    assert result.model is not None
    save_weights(result.model, weights_path)
    return result


def smash_initialised_model(
    spec: ExperimentSpec,
    arch: Arch,
    hypernet_path: Path,
    *,
    score: ScoreConfig = ScoreConfig(bn_recalibration_batches=0),
    data: Dataset | None = None,
) -> DerivedModule:
    """The derived network of ``arch`` carrying the weights SMASH generates for it.

    The checkpoint's space kind builds the derived network, sized like the SMASH network
    (`space=` of `SpaceKind.build_model`) so that its weights fit.

    The 1x1 weights come from the HyperNet with the first z draw that scoring with
    ``score`` uses; the rest are the shared weights' slices, and the BatchNorm
    statistics are the ones that scoring used: re-estimated on ``data``'s training
    images when ``score`` recalibrates them, else the shared ones. Not trained on its
    own: this is what the SMASH score measured.

    Raises:
        CheckpointError: The HyperNet checkpoint is missing, corrupt or of another space.
        ValueError: ``score`` recalibrates BatchNorm and no ``data`` was given.
    """
    net, _ = load_smash(hypernet_path, "cpu")
    if (net.num_classes, net.in_channels) != (spec.num_classes, spec.in_channels):
        raise CheckpointError(f"checkpoint {hypernet_path} was trained for another data set")
    if score.bn_recalibration_batches and data is None:
        raise ValueError("BatchNorm recalibration needs the data set")
    cpu = torch.device("cpu")
    model = kind_of(net.space).build_model(arch, spec.num_classes, spec.in_channels, net.space)
    # Generated and recalibrated exactly as scoring does it (same z from the same CPU
    # generator on every device, same autocast, same batches).
    with torch.no_grad(), autocast_context(cpu, score.bf16):
        weights = net.generate(arch, generator=z_generator(score.seed, arch, 0))
        if not score.bn_recalibration_batches:
            return model.load_from_smash(net, weights).eval()
        assert data is not None
        train = device_images(data.train, cpu, data.mean, data.std)
        with bn_recalibrated(net, arch, weights, recalibration_batches(train, score)):
            return model.load_from_smash(net, weights).eval()


__all__ = [
    "JobReporter",
    "ScoredArchitecture",
    "describe",
    "get_dataset",
    "experiment_data",
    "run_chunk_job",
    "score_chunk",
    "run_retrain_job",
    "run_score_job",
    "run_search_job",
    "run_train",
    "smash_initialised_model",
]
