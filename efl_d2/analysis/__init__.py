"""Computations behind the paper's analysis figures and the inspection notebook, one module per
figure:

- :mod:`.fig2`: per category, log10(#positive / #negative) anchor samples under the config's
  assigner on the training annotations (no weights involved);
- :mod:`.fig4`: per category, the mean predicted score of positive and of negative samples, for
  one or more checkpoints;
- :mod:`.efl_statistics`: EFL's g_j, gamma_j read from a model's loss buffers;
- :mod:`.inputs`: what they take from a config and a registered dataset.

Categories, frequency groups and their order are :mod:`efl_d2.categories`'; per-category AP is
the evaluator's (:mod:`efl_d2.evaluation`).
"""

from .efl_statistics import loss_category_statistics
from .fig2 import Fig2Data, count_positive_negative_samples, fig2_data_from_config, plot_fig2
from .fig4 import Fig4Data, mean_scores_per_category, plot_fig4
from .inputs import check_class_count, inference_resize, scoring_mapper_from_config

__all__ = [
    "Fig2Data",
    "Fig4Data",
    "check_class_count",
    "count_positive_negative_samples",
    "fig2_data_from_config",
    "inference_resize",
    "loss_category_statistics",
    "mean_scores_per_category",
    "plot_fig2",
    "plot_fig4",
    "scoring_mapper_from_config",
]
