"""LVIS evaluation helpers. :mod:`.categories`: frequency groups, per-category AP and the
per-category report (standard library and numpy only). Drawing lives in :mod:`.plots`, which is
not imported here (it needs matplotlib)."""

from .categories import (
    COMMON_MAX_IMAGES,
    FREQUENCY_COLORS,
    FREQUENCY_GROUPS,
    FREQUENCY_NAMES,
    RARE_MAX_IMAGES,
    REPORT_COLUMNS,
    UNKNOWN_FREQUENCY,
    VAL_INSTANCES_COLUMN,
    category_frequencies,
    category_records,
    count_instances,
    frequency_color,
    frequency_group,
    per_category_ap,
    per_group_summary,
    read_per_category_report,
    write_per_category_report,
)

__all__ = [
    "COMMON_MAX_IMAGES",
    "FREQUENCY_COLORS",
    "FREQUENCY_GROUPS",
    "FREQUENCY_NAMES",
    "RARE_MAX_IMAGES",
    "REPORT_COLUMNS",
    "UNKNOWN_FREQUENCY",
    "VAL_INSTANCES_COLUMN",
    "category_frequencies",
    "category_records",
    "count_instances",
    "frequency_color",
    "frequency_group",
    "per_category_ap",
    "per_group_summary",
    "read_per_category_report",
    "write_per_category_report",
]
