"""Training loader with repeat-factor sampling that builds the dataset only once."""

import logging

from detectron2.data import DatasetMapper, build_detection_train_loader
from detectron2.data.samplers import RepeatFactorTrainingSampler, TrainingSampler

__all__ = ["RobustDatasetMapper", "build_rfs_train_loader"]

logger = logging.getLogger(__name__)


def build_rfs_train_loader(
    *,
    dataset: list[dict],
    mapper,
    total_batch_size: int,
    repeat_thresh: float | None = 0.001,
    repeat_sqrt: bool = True,
    seed: int | None = None,
    **kwargs,
):
    """``build_detection_train_loader`` with detectron2's ``RepeatFactorTrainingSampler``.

    The repeat factors are computed from the same ``dataset`` list the loader reads. (Writing the
    sampler in a LazyConfig as ``repeat_factors(dataset_dicts="${..dataset}")`` instantiates, i.e.
    loads and parses, the dataset a second time.)

    Args:
        dataset: detectron2 dataset dicts (e.g. from :func:`get_lvis_dataset_dicts`).
        mapper, total_batch_size, kwargs: as in ``build_detection_train_loader``.
        repeat_thresh: LVIS repeat-factor threshold t (paper: 0.001); ``None`` disables RFS and
            samples uniformly.
        repeat_sqrt: r(c) = max(1, sqrt(t / f(c))) as in the LVIS paper (False: t / f(c)).
        seed: sampler seed; None shares a random seed across workers as detectron2 does.
    """
    if repeat_thresh is None:
        sampler = TrainingSampler(len(dataset), seed=seed)
    else:
        factors = RepeatFactorTrainingSampler.repeat_factors_from_category_frequency(
            dataset, repeat_thresh, sqrt=repeat_sqrt
        )
        logger.info(
            f"Repeat factor sampling (t={repeat_thresh}): {len(dataset)} images, "
            f"{float(factors.sum()):.0f} expected per epoch, max factor {float(factors.max()):.2f}"
        )
        sampler = RepeatFactorTrainingSampler(factors, seed=seed)
    return build_detection_train_loader(
        dataset=dataset, mapper=mapper, sampler=sampler, total_batch_size=total_batch_size, **kwargs
    )


class RobustDatasetMapper(DatasetMapper):
    """``DatasetMapper`` that names the file when an image cannot be read.

    Training skips an unreadable image with a warning (returning None makes detectron2's
    ``MapDataset`` draw another one); evaluation raises, since skipping an image there would
    silently change the metric.
    """

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except (OSError, SyntaxError, ValueError) as e:  # PIL raises these for bad/truncated files
            file_name = dataset_dict.get("file_name", "<unknown>")
            if self.is_train:
                logger.warning(f"Skipping unreadable image {file_name!r}: {e}")
                return None
            raise RuntimeError(f"Cannot read image {file_name!r}: {e}") from e
