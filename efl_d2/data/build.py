"""Replaces Detectron2's training loader because a resumed run of it sees other data: here batch
``k`` is a pure function of ``(seed, k)`` (Detectron2's: ``dataloader.train.loader=detectron2``).

detectron2's training loader is a stream: a sampler yields indices, workers map them with the
process-global numpy RNG, and aspect-ratio grouping batches whatever arrives first. Batch ``k``
therefore depends on how many batches the process produced before it, on ``num_workers`` and on
the number of processes; a resumed run starts that stream over and sees other images and other
augmentations than the uninterrupted run would have.

Here every draw is indexed instead:

- **Order.** Images are split by orientation (landscape / portrait: what detectron2's aspect-ratio
  grouping separates). Each group has its own sample stream, epoch by epoch; epoch ``e`` of a group
  is a permutation seeded by ``(seed, group, e)`` of its images, each repeated by stochastic rounding
  of its repeat factor (detectron2's ``RepeatFactorTrainingSampler`` semantics; factors of 1 make it
  the plain ``TrainingSampler``).
- **Batches.** Global batch ``k`` takes ``total_batch_size`` consecutive samples of one group; the
  group of batch ``k`` follows a low-discrepancy sequence with the group's share of samples, so how
  many batches of a group precede ``k`` is a closed form. Process ``r`` of ``w`` takes its slice
  ``[r * b, (r + 1) * b)`` of the global batch (``b = total_batch_size / w``).
- **Augmentation.** The mapper of sample ``j`` of batch ``k`` runs with numpy, ``random`` and torch
  seeded by ``(seed, k, j)`` (and restored afterwards, so the training process's own RNG state is
  untouched).

So starting at iteration ``k`` replays nothing, and the same seed gives the same batches whatever
``num_workers`` or the number of processes.
"""

from __future__ import annotations

import copy
import logging
import random
from contextlib import contextmanager

import numpy as np
import torch
import torch.utils.data as torchdata
from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.data.common import DatasetFromList
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler
from detectron2.utils import comm

from .._atomic import preemption_signals_held
from .image_io import read_image

__all__ = [
    "ClassBalancedBatchPlan",
    "IndexedBatchPlan",
    "ResumableTrainLoader",
    "RobustDatasetMapper",
    "build_class_balanced_train_loader",
    "build_rfs_train_loader",
]

logger = logging.getLogger(__name__)

# Attempts to replace an image the mapper rejects (unreadable file, no annotation left after
# cropping) before the loader gives up.
_MAX_REPLACEMENTS = 20


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) for k in key])


class IndexedBatchPlan:
    """Which dataset images form global training batch ``k``: a pure function of ``(seed, k)``.

    Args:
        repeat_factors: (N,) float, the repeat factor of every image (all ones: uniform sampling).
        groups: (N,) int in {0, 1}, the aspect-ratio group of every image (all zeros: no grouping).
        total_batch_size: images per global batch (all processes together).
        seed: the run's data seed; equal on every process.
    """

    def __init__(self, *, repeat_factors, groups, total_batch_size: int, seed: int) -> None:
        factors = np.asarray(repeat_factors, dtype=np.float64)
        groups = np.asarray(groups, dtype=np.int64)
        if factors.ndim != 1 or factors.shape != groups.shape or len(factors) == 0:
            raise ValueError("repeat_factors and groups must be non-empty (N,) arrays")
        if total_batch_size <= 0:
            raise ValueError(f"total_batch_size must be positive, got {total_batch_size}")
        self.batch_size = int(total_batch_size)
        self.seed = int(seed)
        self._members = [np.flatnonzero(groups == g) for g in (0, 1)]
        self._factors = [factors[m] for m in self._members]
        # Share of batches that come from group 1 = its expected share of samples.
        mass = [float(f.sum()) for f in self._factors]
        self.group1_share = mass[1] / (mass[0] + mass[1])
        # cumulative epoch lengths per group, grown on demand
        self._epoch_ends: list[list[int]] = [[], []]
        self._cache: dict[tuple[int, int], np.ndarray] = {}  # recent epochs

    def __len__(self) -> int:  # an epoch in batches (for logging only: the plan is infinite)
        return int(sum(float(f.sum()) for f in self._factors) // self.batch_size)

    def _group_of(self, k: int) -> tuple[int, int]:
        """Group of batch ``k`` and how many earlier batches came from that group.

        Batch ``k`` is from group 1 iff ``floor((k + 1) q) > floor(k q)`` (q = group-1 share), so
        ``floor(k q)`` batches before ``k`` are from group 1: a closed form, no replay.
        """
        q = self.group1_share
        before1 = int(np.floor(k * q))
        if int(np.floor((k + 1) * q)) > before1:
            return 1, before1
        return 0, k - before1

    def _epoch(self, group: int, epoch: int) -> np.ndarray:
        """Dataset indices of one epoch of one group: stochastic rounding of the repeat factors
        (as detectron2's RFS sampler), then a permutation; both seeded by (seed, group, epoch)."""
        key = (group, epoch)
        if key not in self._cache:
            if len(self._cache) >= 4:
                self._cache.pop(next(iter(self._cache)))
            self._cache[key] = self._draw_epoch(group, epoch)
        return self._cache[key]

    def _draw_epoch(self, group: int, epoch: int) -> np.ndarray:
        rng = _rng(self.seed, group, epoch)
        factors = self._factors[group]
        whole = np.floor(factors)
        reps = (whole + (rng.random(len(factors)) < factors - whole)).astype(np.int64)
        samples = np.repeat(self._members[group], reps)
        return samples[rng.permutation(len(samples))]

    def _sample(self, group: int, position: int) -> int:
        """The ``position``-th sample (0-based) of a group's infinite stream."""
        ends = self._epoch_ends[group]
        while not ends or ends[-1] <= position:
            n = len(self._epoch(group, len(ends)))
            ends.append((ends[-1] if ends else 0) + n)
        epoch = int(np.searchsorted(ends, position, side="right"))
        start = ends[epoch - 1] if epoch else 0
        return int(self._epoch(group, epoch)[position - start])

    def batch(self, k: int) -> list[int]:
        """Dataset indices of global batch ``k`` (length ``total_batch_size``)."""
        if k < 0:
            raise ValueError(f"batch index must be >= 0, got {k}")
        group, before = self._group_of(k)
        first = before * self.batch_size
        return [self._sample(group, first + j) for j in range(self.batch_size)]

    def replacement(self, k: int, j: int, attempt: int) -> int:
        """A substitute for sample ``j`` of batch ``k`` that the mapper rejected: a seeded uniform
        draw from the same aspect-ratio group."""
        group, _ = self._group_of(k)
        members = self._members[group]
        return int(members[_rng(self.seed, k, j, attempt + 1, 7).integers(len(members))])


class ClassBalancedBatchPlan(IndexedBatchPlan):
    """:class:`IndexedBatchPlan` with class-balanced sampling (CBS, the decoupled methods' second
    stage): each draw picks a class uniformly at random (with replacement, among the classes that
    have an image), then the next image of that class in a seeded permutation of its images
    (without replacement until all of them have been drawn). An epoch is as many draws as there are
    images. So image i is drawn with probability sum over its classes c of 1 / (C n_c).

    The epochs are drawn over the whole dataset (seeded by ``(seed, epoch)``) and then split by
    aspect-ratio group, so grouping the batches does not change which images are drawn.

    Args:
        image_classes: per image, the classes of its annotations (any ints; repeats ignored).
        groups, total_batch_size, seed: as :class:`IndexedBatchPlan`.
    """

    _KEY = 0xCB5  # keeps its draws apart from the repeat-factor plan's

    def __init__(self, *, image_classes, groups, total_batch_size: int, seed: int) -> None:
        n = len(image_classes)
        super().__init__(
            repeat_factors=np.ones(n), groups=groups, total_batch_size=total_batch_size, seed=seed
        )
        by_class: dict[int, list[int]] = {}
        for i, classes in enumerate(image_classes):
            for c in set(classes):
                by_class.setdefault(int(c), []).append(i)
        if not by_class:
            raise ValueError("class-balanced sampling needs images with annotations")
        self.classes = sorted(by_class)
        self._images = [np.asarray(by_class[c], dtype=np.int64) for c in self.classes]
        self._group = np.asarray(groups, dtype=np.int64)
        # expected share of draws that land in group 1: sum_c (1 / C) * (share of c's images)
        self.group1_share = float(np.mean([self._group[m].mean() for m in self._images]))
        self._global: dict[int, np.ndarray] = {}
        self._num_images = n

    def epoch_draws(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """(classes, images) of the ``epoch``-th global epoch: the class drawn at each step (an
        index into :attr:`classes`) and the image it gave, each (N,)."""
        rng = _rng(self.seed, self._KEY, epoch)
        drawn = rng.integers(len(self.classes), size=self._num_images)
        images = np.empty(self._num_images, dtype=np.int64)
        order = np.argsort(drawn, kind="stable")
        counts = np.bincount(drawn, minlength=len(self.classes))
        start = 0
        for c, count in enumerate(counts):
            if count:
                members = self._images[c]
                cycles = -(-count // len(members))  # a fresh permutation once all were drawn
                perm = np.concatenate(
                    [
                        _rng(self.seed, self._KEY, epoch, c, k).permutation(len(members))
                        for k in range(cycles)
                    ]
                )
                images[order[start : start + count]] = members[perm[:count]]
                start += count
        return drawn, images

    def _draw_epoch(self, group: int, epoch: int) -> np.ndarray:
        if epoch not in self._global:
            if len(self._global) >= 2:
                self._global.pop(next(iter(self._global)))
            self._global[epoch] = self.epoch_draws(epoch)[1]
        images = self._global[epoch]
        return images[self._group[images] == group]


@contextmanager
def _seeded_global_rngs(seed: int):
    """Seed numpy / random / torch for one mapper call, restoring their states afterwards."""
    np_state, py_state, torch_state = (
        np.random.get_state(),
        random.getstate(),
        torch.get_rng_state(),
    )
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)
        torch.set_rng_state(torch_state)


class _RankBatches(torchdata.IterableDataset):
    """This process's share of batches ``start, start + 1, ...``; worker ``w`` of ``W`` makes
    batches ``start + w, start + w + W, ...`` (the DataLoader returns them round-robin, in order)."""

    def __init__(self, loader: ResumableTrainLoader, start_iter: int) -> None:
        self.loader = loader
        self.start_iter = start_iter

    def __iter__(self):
        info = torchdata.get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        k = self.start_iter + worker
        while True:
            yield self.loader.rank_batch(k)
            k += workers


def _no_collate(batch):
    return batch


class ResumableTrainLoader:
    """An infinite iterable of this process's training batches (lists of mapped dataset dicts),
    where batch ``k`` depends only on ``(seed, k)`` (see the module docstring).

    Set :attr:`start_iter` (the trainer's first iteration) before iterating; ``tools/train_net.py``
    does so after loading a checkpoint for ``--resume``.
    """

    def __init__(
        self,
        *,
        dataset: list[dict],
        mapper,
        plan: IndexedBatchPlan,
        num_workers: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        self.rank = comm.get_rank() if rank is None else rank
        self.world_size = comm.get_world_size() if world_size is None else world_size
        if plan.batch_size % self.world_size:
            raise ValueError(
                f"total_batch_size ({plan.batch_size}) must be divisible by the number of "
                f"processes ({self.world_size})"
            )
        # a list is serialised (Detectron2's compact copy); a lazy sequence (OpenImagesImages)
        # already is compact and builds its items on access
        self.dataset = DatasetFromList(dataset, copy=False, serialize=isinstance(dataset, list))
        self.mapper = mapper
        self.plan = plan
        self.num_workers = int(num_workers)
        self.batch_size = plan.batch_size // self.world_size  # per process
        self.start_iter = 0

    def _map(self, index: int, k: int, j: int):
        with _seeded_global_rngs(int(_rng(self.plan.seed, k, j).integers(2**31))):
            return self.mapper(self.dataset[index])

    def rank_batch(self, k: int) -> list[dict]:
        """This process's slice of global batch ``k``, mapped."""
        indices = self.plan.batch(k)
        out = []
        for j in range(self.rank * self.batch_size, (self.rank + 1) * self.batch_size):
            index = indices[j]
            for attempt in range(_MAX_REPLACEMENTS + 1):
                mapped = self._map(index, k, j)
                if mapped is not None:
                    break
                index = self.plan.replacement(k, j, attempt)
            else:
                raise RuntimeError(
                    f"Training batch {k}: the mapper rejected {_MAX_REPLACEMENTS + 1} images in a "
                    "row (see the warnings above); check the dataset's files."
                )
            out.append(mapped)
        return out

    def __iter__(self):
        loader = torchdata.DataLoader(
            _RankBatches(self, self.start_iter),
            batch_size=None,
            num_workers=self.num_workers,
            collate_fn=_no_collate,
            # its own generator: the DataLoader draws worker base seeds (unused here) from it
            # instead of from the training process's global torch RNG
            generator=torch.Generator().manual_seed(self.plan.seed),
            worker_init_fn=_leave_preemption_to_the_trainer,
        )
        with preemption_signals_held():  # every thread of the forked workers starts masked
            return iter(loader)


def _leave_preemption_to_the_trainer(_worker_id: int) -> None:
    """A worker ignores SIGTERM / SIGUSR1, which a scheduler may send to every process of the
    job: the training process checkpoints and stops it (:mod:`efl_d2.engine.preemption`)."""
    from ..engine.preemption import ignore_signals

    ignore_signals()


def build_rfs_train_loader(
    *,
    dataset: list[dict],
    mapper,
    total_batch_size: int,
    repeat_thresh: float | None = 0.001,
    repeat_sqrt: bool = True,
    seed: int | None = None,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
    loader: str = "efl_d2",
):
    """The training loader of every efl_d2 config: repeat-factor sampling (detectron2's factors)
    with batches indexed by iteration (:class:`ResumableTrainLoader`), or Detectron2's own loader.

    Args:
        dataset: detectron2 dataset dicts (e.g. from :func:`get_lvis_dataset_dicts`); they need
            ``width`` and ``height`` for aspect-ratio grouping.
        mapper: called on each dataset dict (e.g. :class:`RobustDatasetMapper`); ``None`` from it
            means "skip this image" and a seeded substitute is mapped instead.
        total_batch_size: images per iteration over all processes.
        repeat_thresh: LVIS repeat-factor threshold t (paper: 0.001); ``None`` samples uniformly.
        repeat_sqrt: r(c) = max(1, sqrt(t / f(c))) as in the LVIS paper (False: t / f(c)).
        seed: the data seed (the same on every process). ``tools/train_net.py`` sets it from
            ``train.seed``; None draws one shared random seed (such a run is not reproducible).
        num_workers: DataLoader worker processes (any number gives the same batches).
        aspect_ratio_grouping: batch landscape and portrait images separately, as detectron2.
        loader: "efl_d2" (:class:`ResumableTrainLoader`) or "detectron2": Detectron2's
            ``build_detection_train_loader`` with its ``RepeatFactorTrainingSampler`` (the same
            repeat factors; ``TrainingSampler`` when ``repeat_thresh`` is None) and seed. That
            loader's resume is not bit-exact: a resumed run starts the sampler's stream and the
            workers' augmentation RNG over, so it sees other images and augmentations than an
            uninterrupted run (whose batches also depend on ``num_workers`` and the process
            count).
    """
    if loader not in ("efl_d2", "detectron2"):
        raise ValueError(f"loader must be 'efl_d2' or 'detectron2', got {loader!r}")
    if repeat_thresh is None:
        factors = torch.ones(len(dataset))
    else:
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset, repeat_thresh, sqrt=repeat_sqrt
        )
        logger.info(
            f"Repeat factor sampling (t={repeat_thresh}): {len(dataset)} images, "
            f"{float(factors.sum()):.0f} expected per epoch, max factor {float(factors.max()):.2f}"
        )
    if loader == "detectron2":
        if repeat_thresh is None:
            sampler = TrainingSampler(len(dataset), seed=seed)
        else:
            sampler = RepeatFactorTrainingSampler(factors, seed=seed)
        return build_detection_train_loader(
            dataset=DatasetFromList(dataset, copy=False, serialize=isinstance(dataset, list)),
            mapper=mapper,
            sampler=sampler,
            total_batch_size=total_batch_size,
            aspect_ratio_grouping=aspect_ratio_grouping,
            num_workers=num_workers,
        )
    groups, seed = _groups_and_seed(dataset, aspect_ratio_grouping, seed)
    plan = IndexedBatchPlan(
        repeat_factors=factors.numpy(), groups=groups, total_batch_size=total_batch_size, seed=seed
    )
    return ResumableTrainLoader(dataset=dataset, mapper=mapper, plan=plan, num_workers=num_workers)


def build_class_balanced_train_loader(
    *,
    dataset: list[dict],
    mapper,
    total_batch_size: int,
    seed: int | None = None,
    num_workers: int = 0,
    aspect_ratio_grouping: bool = True,
) -> ResumableTrainLoader:
    """Class-balanced sampling (:class:`ClassBalancedBatchPlan`) with batches indexed by iteration,
    for the second stage of the decoupled methods (cRT, BAGS). Arguments as
    :func:`build_rfs_train_loader`."""
    image_classes = [[a["category_id"] for a in d.get("annotations", [])] for d in dataset]
    groups, seed = _groups_and_seed(dataset, aspect_ratio_grouping, seed)
    plan = ClassBalancedBatchPlan(
        image_classes=image_classes, groups=groups, total_batch_size=total_batch_size, seed=seed
    )
    logger.info(
        f"Class-balanced sampling: {len(dataset)} images per epoch, {len(plan.classes)} classes"
    )
    return ResumableTrainLoader(dataset=dataset, mapper=mapper, plan=plan, num_workers=num_workers)


def _groups_and_seed(dataset, aspect_ratio_grouping: bool, seed):
    if aspect_ratio_grouping:
        groups = np.array([int(d["height"] > d["width"]) for d in dataset])
    else:
        groups = np.zeros(len(dataset), dtype=np.int64)
    if seed is None:
        seed = comm.shared_random_seed()
        logger.warning(f"No data seed given: drew {seed}; resuming this run will not be exact.")
    return groups, seed


class RobustDatasetMapper(DatasetMapper):
    """``DatasetMapper`` for detection (boxes; masks and keypoints as ``DatasetMapper`` treats
    them) that reads images with :func:`efl_d2.data.image_io.read_image` and names the file when
    an image cannot be read.

    For 8-bit images its output is ``DatasetMapper``'s, tensor for tensor; a 16-bit greyscale
    image is mapped to 8 bits instead of saturated to white by PIL's conversion. ``DatasetMapper``
    has no hook for its image reading, so :meth:`__call__` is written here from detectron2's
    public helpers, without semantic segmentation (a label map is not a picture: rescaling its
    16-bit values would be wrong; detectron2's ``DatasetMapper`` reads those).

    Training skips an unreadable image with a warning (returning None makes the training loader
    map a substitute); evaluation raises, since skipping an image there would silently change the
    metric. Unreadable: missing, not an image, cut short, a size other than the dataset dict's, or
    a mode :func:`~efl_d2.data.image_io.read_image` refuses (such as 32-bit float).
    """

    def __call__(self, dataset_dict: dict) -> dict | None:
        """
        Args:
            dataset_dict: one image's dict in detectron2's dataset format (not modified).

        Returns:
            A copy with ``image`` (the augmented image as a (C, H, W) tensor, uint8 but for
            "YUV-BT.601"), ``instances`` (training) and without ``annotations``; or None in
            training if the image cannot be read.
        """
        if "sem_seg_file_name" in dataset_dict:
            raise NotImplementedError(
                f"RobustDatasetMapper maps detection data, not semantic segmentation "
                f"({dataset_dict['sem_seg_file_name']!r}): use detectron2's DatasetMapper"
            )
        try:
            return self._map(copy.deepcopy(dataset_dict))  # the copy is modified in place
        except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for bad/truncated files
            file_name = dataset_dict.get("file_name", "<unknown>")
            if self.is_train:
                logger.warning(f"Skipping unreadable image {file_name!r}: {e}")
                return None
            raise RuntimeError(f"Cannot read image {file_name!r}: {e}") from e

    def _read(self, dataset_dict: dict) -> np.ndarray:
        """The dict's image as an (H, W, C) uint8 array in :attr:`image_format`; raises
        ``SizeMismatchError`` (a ``ValueError``) if its size is not the dict's height/width."""
        image = read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        return image

    def _map(self, dataset_dict: dict) -> dict:
        """Read, augment and convert ``dataset_dict`` (a copy, filled in place)."""
        aug_input = T.AugInput(self._read(dataset_dict))
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        image_shape = image.shape[:2]  # (h, w) after augmentation
        # a tensor rather than an array: the loader's workers pass tensors through shared memory
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if self.proposal_topk is not None:
            utils.transform_proposals(
                dataset_dict, image_shape, transforms, proposal_topk=self.proposal_topk
            )
        if not self.is_train:
            dataset_dict.pop("annotations", None)  # evaluators read them from the dataset
            return dataset_dict
        if "annotations" in dataset_dict:
            self._transform_annotations(dataset_dict, transforms, image_shape)
        return dataset_dict
