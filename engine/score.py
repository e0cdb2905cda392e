"""SMASH scores: validation error and loss of an architecture with generated weights.

Scoring runs the SMASH network in eval mode without gradients. Errors and losses are
summed on the device and copied to the host once per architecture. Options: several
`z` draws averaged (the original redrew z for every architecture and never averaged),
BatchNorm recalibration per architecture on a few training batches (the shared running
statistics belong to no architecture in particular), a validation subset, and racing:
successive halving over validation images that scores every candidate on a small
slice, keeps the best fraction, and extends the survivors, so that the top of the
ranking comes out as with full scoring at a fraction of the cost.

Scoring serves every space kind (`engine.kinds`): it only asks the SMASH module to
generate an architecture's weights, to run it, and for its `shared_norms()`, the
BatchNorms that BN recalibration re-estimates.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from engine.config import RaceConfig, ScoreConfig
from engine.data import DeviceImages
from engine.device import OUT_OF_MEMORY, autocast_context, host_sync_allowed, module_device
from engine.errors import DeviceMemoryError, first_line
from engine.kinds import Arch, SmashModule, Weights

# The smallest scoring batch: an out-of-memory at this size fails the scoring (the
# network itself, or BN recalibration's batches, do not fit; halving cannot help).
MIN_SCORING_BATCH = 8


@dataclass(frozen=True)
class Score:
    """One architecture's SMASH score."""

    error: float  # validation error in percent
    loss: float  # mean validation cross-entropy
    images: int  # validation images it was measured on
    z_draws: int  # z draws averaged
    method: str  # "full" (the whole scoring set) or "racing" (dropped after a partial slice)


def rank_key(score: Score) -> tuple[int, float, float]:
    """Sort key of a ranking: best first.

    A score measured on more images ranks first, then lower error, then lower loss.
    Without racing every score covers the same images and this is (error, loss). With
    racing it is successive halving's own ranking: a candidate dropped after a partial
    slice lost to the survivors on that slice, so its partial error (optimistic for a
    lucky slice, and measured on other images than the survivors' full scores) never
    outranks a survivor's.
    """
    return (-score.images, score.error, score.loss)


def scoring_order(images: int, seed: int) -> torch.Tensor:
    """The order in which a Scorer with this seed reads a validation split of `images` images.

    Scores on a subset (`ScoreConfig.images`) cover the first images of this order.
    """
    return torch.randperm(images, generator=torch.Generator().manual_seed(seed))


def arch_seed(seed: int, arch: Arch, draw: int) -> int:
    """A seed that depends only on the run seed, the architecture and the draw index."""
    digest = hashlib.sha256(f"{seed}:{arch.hash}:{draw}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def z_generator(seed: int, arch: Arch, draw: int) -> torch.Generator:
    """The CPU generator of one z draw of `arch`: scoring, BN recalibration and export share it.

    Always a CPU generator (see `engine.device.draw_z`): a score computed on a GPU, one
    computed on the CPU and the weights exported "as scored" see the same z values.
    """
    return torch.Generator().manual_seed(arch_seed(seed, arch, draw))


class RecalibrationBatches(Sequence[torch.Tensor]):
    """BN recalibration's training batches, made from the uint8 split when they are read.

    Only their positions are kept (on the device); each batch is gathered and
    normalised from the shared training split on every read, so recalibration holds no
    float copy of the training images.
    """

    def __init__(self, train: DeviceImages, positions: Sequence[torch.Tensor], channels_last: bool) -> None:
        self.train = train
        self.positions = list(positions)  # CPU int64, one tensor per batch
        self._on_device = [train.upload(p) for p in self.positions]
        self.channels_last = channels_last

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, index: int) -> torch.Tensor:  # type: ignore[override]
        x, _ = self.train.take(self.positions[index], self._on_device[index], channels_last=self.channels_last)
        return x


def recalibration_batches(train: DeviceImages, config: ScoreConfig) -> RecalibrationBatches:
    """The training batches BN recalibration runs on: fixed by `config.seed`, no augmentation.

    The first `bn_recalibration_batches` whole batches of a shuffled pass over `train`
    (the order a seeded `DeviceImages.batches` draws), read from the shared split.
    """
    count = min(config.bn_recalibration_batches, len(train) // config.bn_batch_size)
    order = torch.randperm(len(train), generator=torch.Generator().manual_seed(config.seed)) if count else None
    size = config.bn_batch_size
    positions = [] if order is None else [order[i * size : (i + 1) * size] for i in range(count)]
    return RecalibrationBatches(train, positions, config.channels_last)


@contextlib.contextmanager
def bn_recalibrated(
    net: SmashModule,
    arch: Arch,
    weights: Weights,
    batches: Sequence[torch.Tensor],
    cache: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None,
    key: tuple[str, int] = ("", 0),
) -> Iterator[None]:
    """The running statistics of the net's shared BatchNorms (`shared_norms()`) re-estimated
    for `arch` on `batches`, restored afterwards.

    No batches: the shared statistics stay. A `cache` keeps each `key`'s statistics
    so that a later call reuses them instead of recalibrating again.
    """
    if not batches:
        yield
        return
    norms = net.shared_norms()
    saved = [(n.running_mean.clone(), n.running_var.clone(), n.momentum) for n in norms]  # type: ignore[union-attr]
    try:
        cached = cache.get(key) if cache is not None else None
        if cached is not None:
            for n, (mean, var) in zip(norms, cached):
                n.running_mean.copy_(mean)  # type: ignore[union-attr]
                n.running_var.copy_(var)  # type: ignore[union-attr]
        else:
            for n in norms:
                n.reset_running_stats()
            net.train()
            for i, x in enumerate(batches):
                for n in norms:
                    n.momentum = 1.0 / (i + 1)  # running stats become the plain mean over batches
                net(x, arch, weights)
            if cache is not None:
                cache[key] = [(n.running_mean.clone(), n.running_var.clone()) for n in norms]  # type: ignore[union-attr]
        yield
    finally:
        for n, (mean, var, momentum) in zip(norms, saved):
            n.running_mean.copy_(mean)  # type: ignore[union-attr]
            n.running_var.copy_(var)  # type: ignore[union-attr]
            n.momentum = momentum



def scoring_batch_size(config: ScoreConfig, device: torch.device) -> int:
    """Images per forward pass of a Scorer with this config on this device.

    200 on a CPU, where smaller activations stay in cache; 1000 on CUDA. A search fixes
    every chunk's batch with it, so that any worker scores as the search would.
    """
    return config.batch_size or (1000 if device.type == "cuda" else 200)

class Scorer:
    """Scores architectures of one SMASH network on one validation split.

    The scoring set is the validation split in a fixed random order (`scoring_order`),
    read from the shared uint8 split and normalised batch by batch: the scorer holds no
    float copy of it. Batches never cross a rung end (`rung_ends`), in full scoring as
    in racing, so a race's survivors see exactly full scoring's batches.

    Args:
        net: the trained SMASH network (its training mode is restored after scoring).
        val: validation images, on the network's device.
        config: scoring options.
        train: training images, needed only for BN recalibration.
        first_rung: images of racing's first rung (None: 1/32 of the scoring set); the
            rung ends double from there (see `rung_ends`).
        on_batch_halved: told (old batch, new batch, reason) when the device ran out of
            memory and the scoring batch was halved.
    """

    # Read by racing; class attributes so that a scorer made without __init__ has them.
    first_rung: int | None = None
    on_batch_halved: Callable[[int, int, str], None] | None = None

    def __init__(
        self,
        net: SmashModule,
        val: DeviceImages,
        config: ScoreConfig = ScoreConfig(),
        train: DeviceImages | None = None,
        *,
        first_rung: int | None = None,
        on_batch_halved: Callable[[int, int, str], None] | None = None,
    ) -> None:
        if len(val) == 0:
            raise ValueError("cannot score on an empty validation split")
        if config.bn_recalibration_batches and train is None:
            raise ValueError("BN recalibration needs the training images")
        if first_rung is not None and first_rung < 1:
            raise ValueError(f"first_rung must be at least 1, got {first_rung}")
        self.net = net
        self.config = config
        self.device = module_device(net)
        self.batch_size = scoring_batch_size(config, self.device)
        self.num_images = min(config.images or len(val), len(val))
        self.first_rung = first_rung
        self.on_batch_halved = on_batch_halved
        # The scoring set: the validation images in a fixed random order, cut to
        # `num_images`. Splits often come sorted by class (ImageFolder always is), and a
        # prefix of a sorted split is one or two classes: a subset, or racing's first
        # rungs, would rank architectures by how they do on those classes alone.
        self.val = val
        self.order = scoring_order(len(val), config.seed)[: self.num_images]  # CPU positions
        self._order_on_device = val.upload(self.order)
        self.labels = val.labels_at(self._order_on_device)  # int64, in scoring order
        self.recalibration = recalibration_batches(train, config) if train is not None else []
        self._bn_cache: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._weight_cache: dict[tuple[Arch, int], Weights] | None = None

    def rung_ends(self) -> list[int]:
        """Where racing's rungs end: the first rung, doubling, then the whole scoring set.

        Independent of the batch size: on CUDA (batch 1000) a 5,000-image split races
        from 156 images, as on the CPU. Full scoring cuts its batches at these ends too,
        so a race's survivors sum exactly full scoring's batches in the same order. An
        end closer to the last one than a first rung is dropped (no rung of 8 images).
        """
        n = self.num_images
        first = min(self.first_rung or max(1, n // 32), n)
        ends = []
        end = first
        while end < n:
            ends.append(end)
            end *= 2
        if len(ends) > 1 and n - ends[-1] < first:
            ends.pop()
        return [*ends, n]

    # One architecture --------------------------------------------------------------------

    def score(self, arch: Arch) -> Score:
        """Full score of `arch` on the scoring set."""
        sums = self._sums(arch, 0, self.num_images)
        return self._to_score(sums, self.num_images, "full")

    def score_many(
        self, archs: Sequence[Arch], on_result: Callable[[Arch, Score], None] | None = None
    ) -> list[Score]:
        """Full scores, streamed through `on_result` as they come."""
        scores = []
        for arch in archs:
            score = self.score(arch)
            if on_result is not None:
                on_result(arch, score)
            scores.append(score)
        return scores

    def race(
        self,
        archs: Sequence[Arch],
        race: RaceConfig = RaceConfig(),
        on_result: Callable[[Arch, Score], None] | None = None,
        leaders: Sequence[Leader] = (),
    ) -> list[Score]:
        """Successive halving: score all on a slice, keep the best, extend the survivors.

        Every candidate gets a score: survivors on the whole scoring set (method
        "full", identical to `score`), the rest on the slice they were dropped after
        (method "racing"). Dropped candidates are reported as soon as they drop.

        `leaders` are survivors of earlier races of the same search (see `Racer`).
        They are ranked with the candidates at every rung, on the same images, so a
        candidate clearly worse than the k-th best of the whole search drops early
        even when it would be in the top k of its own batch.
        """
        return self._race(archs, race, on_result, leaders)[0]

    def _race(
        self,
        archs: Sequence[Arch],
        race: RaceConfig,
        on_result: Callable[[Arch, Score], None] | None,
        leaders: Sequence[Leader],
    ) -> tuple[list[Score], list[Leader]]:
        """`race`, plus the survivors as leaders for later races."""
        n = len(archs)
        if n == 0:
            return [], []
        # Rungs end on the scorer's rung ends, where full scoring cuts its batches too, so a
        # survivor sums exactly full scoring's batches and its score is bit-identical to
        # `score` (another cut may pick another kernel and flip a borderline image). A
        # race's own first_images is rounded up to the next of those ends.
        ends = self.rung_ends()
        first = race.first_images or ends[0]
        targets = ends[next((i for i, end in enumerate(ends) if end >= first), len(ends) - 1) :]
        min_survivors = race.min_survivors if race.min_survivors is not None else race.top_k + 2
        sums = [self._zero_sums() for _ in range(n)]
        batch_of = [self.batch_size] * n  # the batch size each candidate's sums were made with
        rungs: list[dict[int, tuple[float, float]]] = [{} for _ in range(n)]
        alive = list(range(n))
        results: dict[int, Score] = {}
        # Recalibrated BN statistics and generated weights of the candidates still in
        # the race, reused by later rungs instead of being computed again (they would
        # come out the same): a candidate that survives three rungs is generated once.
        weight_cache: dict[tuple[Arch, int], Weights] = {}

        def report(i: int, images: int, method: str) -> None:
            results[i] = self._to_score(sums[i], images, method)
            for draw in range(self.config.z_draws):
                weight_cache.pop((archs[i], draw), None)  # a dropped candidate's weights go
            if on_result is not None:
                on_result(archs[i], results[i])

        def extend(i: int, done: int, target: int) -> None:
            # After an out-of-memory halved the batch, a candidate's earlier sums are made
            # again at the new size: a survivor's score must be what `score` now gives.
            if batch_of[i] != self.batch_size:
                sums[i].zero_()
                done = 0
            self._sums(archs[i], done, target, into=sums[i])
            batch_of[i] = self.batch_size

        self._bn_cache, self._weight_cache = {}, weight_cache
        try:
            done = 0
            for target in targets:
                if not alive:
                    break
                for i in alive:
                    extend(i, done, target)
                done = target
                if done >= self.num_images:
                    while any(batch_of[i] != self.batch_size for i in alive):  # halved by a later candidate
                        for i in alive:
                            if batch_of[i] != self.batch_size:
                                extend(i, done, done)
                    break
                with host_sync_allowed(self.device):
                    totals = torch.stack([sums[i].sum(0) for i in alive]).tolist()  # one copy per rung
                for i, (wrong, loss) in zip(alive, totals):
                    rungs[i][done] = (wrong, loss)
                bar = [leader.rungs[done] for leader in leaders]  # same scorer, same rung cuts
                if len(alive) + len(bar) > race.top_k:
                    kept = self._survivors(alive, totals, bar, race, min_survivors, done)
                    for i in alive:
                        if i not in kept:
                            report(i, done, "racing")
                    alive = [i for i in alive if i in kept]
        finally:
            self._bn_cache, self._weight_cache = None, None
        for i in alive:
            report(i, self.num_images, "full")
        return [results[i] for i in range(n)], [Leader(results[i], rungs[i]) for i in alive]

    # Internals ---------------------------------------------------------------------------

    def _survivors(
        self,
        alive: list[int],
        totals: list[list[float]],
        leaders: list[tuple[float, float]],
        race: RaceConfig,
        min_survivors: int,
        images: int,
    ) -> set[int]:
        """The candidates that stay in the race after a rung on `images` images.

        Candidates and leaders (their (wrong, loss) sums on the same images) are ranked
        together. The best `keep` fraction (at least `min_survivors`) stays, and so does
        anyone statistically tied with the k-th best: errors measured on `images` images
        have a binomial standard error, and dropping a candidate within `margin_z`
        combined standard errors of the k-th best could drop a true top-k member.
        The floor hedges a k-th best that is itself a candidate measured on a slice;
        when the k-th best is a leader (a known survivor), only the top k and the
        candidates tied with it stay, so a lone Markov proposal can drop early too.
        """
        n = images * self.config.z_draws
        # (wrong, loss, candidate index or -1 for a leader, clipped rate, its variance);
        # a leader ranks before a candidate with the same sums.
        entries = []
        for i, (wrong, loss) in [*((-1, t) for t in leaders), *zip(alive, totals)]:
            p = min(max(wrong / n, 0.5 / n), 1 - 0.5 / n)  # no zero variance at 0 or n wrong
            entries.append((wrong, loss, i, p, p * (1 - p) / n))
        entries.sort(key=lambda e: e[:3])
        keep = max(min_survivors, math.ceil(len(entries) * race.keep))
        if race.margin_z > 0 and len(entries) > race.top_k:
            *_, bar_index, bar, bar_var = entries[race.top_k - 1]
            keep = max(keep, race.top_k) if bar_index >= 0 else race.top_k
            for position, (*_, index, p, var) in enumerate(entries):
                if index >= 0 and position >= keep and p - bar <= race.margin_z * math.sqrt(var + bar_var):
                    keep = position + 1
        return {index for _, _, index, _, _ in entries[:keep] if index >= 0}

    def _to_score(self, sums: torch.Tensor, images: int, method: str) -> Score:
        with host_sync_allowed(self.device):
            wrong, loss = sums.reshape(-1, 2).sum(0).tolist()  # the one host copy per architecture
        draws = self.config.z_draws
        return Score(
            error=100.0 * wrong / (images * draws),
            loss=loss / (images * draws),
            images=images,
            z_draws=draws,
            method=method,
        )

    def _zero_sums(self) -> torch.Tensor:
        """(wrong, loss) per z draw, all zero, on the device."""
        return torch.zeros(self.config.z_draws, 2, device=self.device)

    def _sums(
        self, arch: Arch, start: int, stop: int, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(wrong, loss) per z draw over images [start, stop), added batch by batch to `into`.

        `into` holds the sums over [0, start) (a race's earlier rungs). Float sums depend
        on their order: a race adds each rung's batches to the running sums one by one,
        exactly as full scoring adds them, so a survivor's score is bit-identical to
        `score` (a rung summed on its own and then added would not be).

        When the device runs out of memory the scoring batch is halved and the whole
        architecture's sums are made again at the new size (from image 0, so that they
        stay what `score` gives); at `MIN_SCORING_BATCH` the scoring fails.

        Raises:
            DeviceMemoryError: out of device memory even at the smallest batch.
        """
        totals = self._zero_sums() if into is None else into
        while True:
            batch = self.batch_size
            try:
                return self._add_sums(arch, start, stop, totals)
            except OUT_OF_MEMORY as exc:
                reason = first_line(exc, 200)
            # Outside the except clause: the failed attempt's tensors went with its traceback.
            self._halve_batch(batch, reason)
            totals.zero_()
            start = 0 if into is not None else start

    def _halve_batch(self, batch: int, reason: str) -> None:
        """Halves the scoring batch after an out-of-memory at `batch`, or fails at the floor."""
        if batch <= MIN_SCORING_BATCH:
            raise DeviceMemoryError(
                f"scoring ran out of {self.device.type.upper()} memory even at batch {batch}, "
                f"the smallest it tries: {reason}"
            )
        self.batch_size = max(MIN_SCORING_BATCH, batch // 2)
        if self.device.type == "cuda":
            with host_sync_allowed(self.device):  # deliberate: once per out-of-memory
                torch.cuda.empty_cache()  # the failed batch's cached blocks back to the driver
        if self.on_batch_halved is not None:
            self.on_batch_halved(batch, self.batch_size, reason)

    @torch.no_grad()
    def _add_sums(self, arch: Arch, start: int, stop: int, totals: torch.Tensor) -> torch.Tensor:
        """Adds (wrong, loss) per z draw over images [start, stop) to `totals`, batch by batch."""
        net = self.net
        was_training = net.training
        try:
            for draw in range(self.config.z_draws):
                with autocast_context(self.device, self.config.bf16):
                    weights = self._weights(arch, draw)
                    with self.recalibrated(arch, weights, draw):
                        net.eval()
                        for x, y in self._slices(start, stop):
                            logits = net(x, arch, weights).float()
                            totals[draw, 0] += (logits.argmax(1) != y).sum()
                            totals[draw, 1] += F.cross_entropy(logits, y, reduction="sum")
        finally:
            net.train(was_training)
        return totals

    def _weights(self, arch: Arch, draw: int) -> Weights:
        """Generated weights of one z draw; during a race, generated once per candidate."""
        cache = self._weight_cache  # a dict only while racing
        weights = cache.get((arch, draw)) if cache is not None else None
        if weights is None:
            weights = self.net.generate(arch, generator=z_generator(self.config.seed, arch, draw))
            if cache is not None:
                cache[(arch, draw)] = weights
        return weights

    def _slices(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Normalised batches of the scoring set over [start, stop), never across a rung end.

        Each stretch between two rung ends is read in batches from its start, so the
        images [start, stop) of a race's rung come in exactly the batches full scoring
        reads them in.
        """
        cuts = [start, *(end for end in self.rung_ends() if start < end < stop), stop]
        for begin, end in zip(cuts, cuts[1:]):
            for first in range(begin, end, self.batch_size):
                last = min(first + self.batch_size, end)
                x, y = self.val.take(
                    self.order[first:last], self._order_on_device[first:last], channels_last=self.config.channels_last
                )
                yield x, y

    @contextlib.contextmanager
    def recalibrated(self, arch: Arch, weights: Weights, draw: int) -> Iterator[None]:
        """BN running statistics re-estimated for `arch` (see `bn_recalibrated`).

        During a race the statistics of each (architecture, draw) are kept, so later
        rungs reuse them instead of recalibrating again (they would come out the same).
        """
        with bn_recalibrated(self.net, arch, weights, self.recalibration, self._bn_cache, (arch.hash, draw)):
            yield


@dataclass(frozen=True)
class Leader:
    """A survivor of an earlier race: its full score and its sums at every rung it passed.

    Later races of the same scorer cut their rungs at the same image counts, so a
    leader is compared with their candidates on the same images: a slice that is hard
    for every architecture raises the leader's error with theirs.
    """

    score: Score  # the full score
    rungs: Mapping[int, tuple[float, float]]  # images -> (wrong, loss) summed over the first `images` images


class Racer:
    """Racing across a whole search: each batch races against the best survivors so far.

    A search scores candidates in batches. Raced alone, every batch would keep its own
    top k, and later batches would spend most of their images on candidates that the
    search's top k already beats. A Racer hands the k best survivors of its earlier
    races (its leaders) to every race, so such candidates drop after the first rungs.
    A resumed search starts with no leaders: the recorded scores hold no rung sums.

    Args:
        scorer: the scorer of the search.
        race: racing settings.
    """

    def __init__(self, scorer: Scorer, race: RaceConfig = RaceConfig()) -> None:
        self.scorer = scorer
        self.race = race
        self.leaders: list[Leader] = []

    def __call__(self, archs: Sequence[Arch]) -> list[Score]:
        scores, survivors = self.scorer._race(archs, self.race, None, self.leaders)
        ranked = sorted([*self.leaders, *survivors], key=lambda leader: rank_key(leader.score))
        self.leaders = ranked[: self.race.top_k]
        return scores
