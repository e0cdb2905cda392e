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
from engine.device import autocast_context, host_sync_allowed, module_device
from engine.kinds import Arch, SmashModule, Weights


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


def recalibration_batches(train: DeviceImages, config: ScoreConfig) -> list[torch.Tensor]:
    """The training batches BN recalibration runs on: fixed by `config.seed`, no augmentation."""
    if not config.bn_recalibration_batches:
        return []
    fixed = torch.Generator().manual_seed(config.seed)
    batches = train.batches(
        config.bn_batch_size, shuffle=True, augment=False, generator=fixed,
        drop_last=True, channels_last=config.channels_last,
    )
    chosen: list[torch.Tensor] = []
    for x, _ in batches:
        if len(chosen) == config.bn_recalibration_batches:
            break
        chosen.append(x)
    return chosen


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


class Scorer:
    """Scores architectures of one SMASH network on one validation split.

    Args:
        net: the trained SMASH network (its training mode is restored after scoring).
        val: validation images, on the network's device.
        config: scoring options.
        train: training images, needed only for BN recalibration.
    """

    def __init__(
        self, net: SmashModule, val: DeviceImages, config: ScoreConfig = ScoreConfig(), train: DeviceImages | None = None
    ) -> None:
        if len(val) == 0:
            raise ValueError("cannot score on an empty validation split")
        if config.bn_recalibration_batches and train is None:
            raise ValueError("BN recalibration needs the training images")
        self.net = net
        self.config = config
        self.device = module_device(net)
        self.batch_size = config.batch_size or (1000 if self.device.type == "cuda" else 200)
        self.num_images = min(config.images or len(val), len(val))
        dtype = torch.float32
        layout = torch.channels_last if config.channels_last else torch.contiguous_format
        images, labels = [], []
        for x, y in val.batches(self.batch_size, shuffle=False, augment=False, channels_last=config.channels_last):
            images.append(x)
            labels.append(y)
        # The scoring set, normalised once: the validation images in a fixed random order,
        # cut to `num_images`. Splits often come sorted by class (ImageFolder always is),
        # and a prefix of a sorted split is one or two classes: a subset, or racing's first
        # rungs, would rank architectures by how they do on those classes alone.
        order = scoring_order(len(val), config.seed)[: self.num_images].to(self.device)
        self.images = torch.cat(images)[order].to(dtype).contiguous(memory_format=layout)
        self.labels = torch.cat(labels)[order]
        self.recalibration = recalibration_batches(train, config) if train is not None else []
        self._bn_cache: dict[tuple[str, int], list[tuple[torch.Tensor, torch.Tensor]]] | None = None
        self._weight_cache: dict[tuple[Arch, int], Weights] | None = None

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
        # Rungs end on whole scoring batches, so a survivor sees exactly the batches of
        # full scoring and its score is bit-identical to `score` (another batch size may
        # pick another kernel and flip a borderline image); doubling keeps the alignment.
        # A scoring set of about one batch cannot be raced that way: there the rungs cut
        # batches, and survivors' scores may differ from `score` in the last digits.
        first = race.first_images or max(1, self.num_images // 32)
        aligned = math.ceil(first / self.batch_size) * self.batch_size
        first = min(aligned if aligned < self.num_images else first, self.num_images)
        min_survivors = race.min_survivors if race.min_survivors is not None else race.top_k + 2
        sums = [self._zero_sums() for _ in range(n)]
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

        self._bn_cache, self._weight_cache = {}, weight_cache
        try:
            done, target = 0, first
            while alive:
                for i in alive:
                    self._sums(archs[i], done, target, into=sums[i])
                done = target
                if done >= self.num_images:
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
                target = min(2 * target, self.num_images)
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

    @torch.no_grad()
    def _sums(
        self, arch: Arch, start: int, stop: int, into: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(wrong, loss) per z draw over images [start, stop), added batch by batch to `into`.

        Float sums depend on their order: a race adds each rung's batches to the running
        sums one by one, exactly as full scoring adds them, so a survivor's score is
        bit-identical to `score` (a rung summed on its own and then added would not be).
        """
        net = self.net
        was_training = net.training
        totals = self._zero_sums() if into is None else into
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
            generator = torch.Generator(device=self.device).manual_seed(arch_seed(self.config.seed, arch, draw))
            weights = self.net.generate(arch, generator=generator)
            if cache is not None:
                cache[(arch, draw)] = weights
        return weights

    def _slices(self, start: int, stop: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for first in range(start, stop, self.batch_size):
            last = min(first + self.batch_size, stop)
            yield self.images[first:last], self.labels[first:last]

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
