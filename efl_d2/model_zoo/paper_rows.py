"""The paper's LVIS v1 experiments: every (table, row) with its config and reported AP.

One config file serves every row that is the same experiment (e.g. Table 2 "EFL (Ours)" R-50 =
Table 3 WF+FF = Table 4 s=8 = Table 5 STS+IB+IA = Table 6 "Baseline† + EFL").
``configs/README.md`` shows the same table; a test keeps the two in sync.
"""

from typing import NamedTuple

__all__ = ["OPENIMAGES_ROWS", "PAPER_ROWS", "OpenImagesRow", "PaperRow"]


class PaperRow(NamedTuple):
    table: int
    row: str  # the row's label in the paper's table
    config: str  # path under configs/
    AP: float
    APr: float
    APc: float
    APf: float


# table | row | config (under configs/) | AP APr APc APf, in the paper's order. An experiment's
# numbers are given where its config first appears; a later row of the same config takes them.
_ROWS = """
# Table 1: one-stage detectors with focal loss vs EQLv2&Focal (R-50, 2x, RFS)
1 | RetinaNet | LVIS/retinanet_R50_2x_focal.py | 18.5 9.6 16.1 25.0
1 | RetinaNet + EQLv2&Focal | LVIS/retinanet_R50_2x_eqlv2.py | 20.5 12.6 19.2 25.4
1 | FCOS* | LVIS/fcos_R50_2x_focal.py | 22.6 12.7 20.9 28.9
1 | FCOS* + EQLv2&Focal | LVIS/fcos_R50_2x_eqlv2.py | 23.0 14.1 21.3 28.7
1 | PAA | LVIS/paa_R50_2x_focal.py | 23.7 14.2 21.6 30.2
1 | PAA + EQLv2&Focal | LVIS/paa_R50_2x_eqlv2.py | 24.1 16.5 22.1 29.8
1 | ATSS | LVIS/atss_R50_2x_focal.py | 24.7 13.7 23.4 31.1
1 | ATSS + EQLv2&Focal | LVIS/atss_R50_2x_eqlv2.py | 25.2 15.0 24.3 30.8
1 | Faster R-CNN | LVIS/faster_rcnn_R50_2x.py | 24.1 14.7 22.2 30.5
1 | Seesaw Loss | LVIS/faster_rcnn_R50_2x_seesaw.py | 26.4 17.5 25.3 31.5
# Table 2: main results, R-50 and R-101
2 | R-50 Faster R-CNN | LVIS/faster_rcnn_R50_2x.py
2 | R-50 EQL | LVIS/faster_rcnn_R50_2x_eql.py | 25.1 15.7 24.4 30.1
2 | R-50 EQLv2 | LVIS/faster_rcnn_R50_2x_eqlv2.py | 25.5 16.4 23.9 31.2
2 | R-50 Seesaw Loss | LVIS/faster_rcnn_R50_2x_seesaw.py
2 | R-50 cRT | LVIS/faster_rcnn_R50_2x_crt.py | 24.8 15.9 23.6 30.1
2 | R-50 BAGS | LVIS/faster_rcnn_R50_2x_bags.py | 26.0 17.2 24.9 31.1
2 | R-50 RetinaNet | LVIS/retinanet_R50_2x_focal.py
2 | R-50 Baseline† | LVIS/atss_improved_R50_2x_focal.py | 25.7 14.3 23.8 32.7
2 | R-50 EFL | LVIS/atss_improved_R50_2x_efl.py | 27.5 20.2 26.1 32.4
2 | R-101 Faster R-CNN | LVIS/faster_rcnn_R101_2x.py | 25.7 15.1 24.1 32.0
2 | R-101 EQLv2 | LVIS/faster_rcnn_R101_2x_eqlv2.py | 26.9 18.2 25.4 32.4
2 | R-101 Seesaw Loss | LVIS/faster_rcnn_R101_2x_seesaw.py | 27.8 18.7 27.0 32.8
2 | R-101 BAGS | LVIS/faster_rcnn_R101_2x_bags.py | 27.6 18.7 26.5 32.6
2 | R-101 RetinaNet | LVIS/retinanet_R101_2x_focal.py | 19.6 10.1 17.3 26.2
2 | R-101 Baseline† | LVIS/atss_improved_R101_2x_focal.py | 27.0 14.4 25.7 34.0
2 | R-101 EFL | LVIS/atss_improved_R101_2x_efl.py | 29.2 23.5 27.4 33.8
# Table 3: components of EFL (weighting factor WF, focusing factor FF)
3 | none | LVIS/atss_improved_R50_2x_focal.py
3 | WF | LVIS/atss_improved_R50_2x_efl_wf.py | 26.1 15.6 24.5 32.6
3 | FF | LVIS/atss_improved_R50_2x_efl_ff.py | 26.2 17.7 24.7 31.5
3 | WF + FF | LVIS/atss_improved_R50_2x_efl.py
# Table 4: the hyper-parameter s
4 | s=0 | LVIS/atss_improved_R50_2x_focal.py
4 | s=1 | LVIS/atss_improved_R50_2x_efl_s1.py | 26.3 16.3 24.6 32.6
4 | s=2 | LVIS/atss_improved_R50_2x_efl_s2.py | 26.6 17.6 24.6 32.7
4 | s=4 | LVIS/atss_improved_R50_2x_efl_s4.py | 27.3 19.9 25.5 32.6
4 | s=8 | LVIS/atss_improved_R50_2x_efl.py
4 | s=12 | LVIS/atss_improved_R50_2x_efl_s12.py | 26.5 19.9 24.6 31.6
# Table 5: components of the improved baseline, all with EFL (STS, IoU branch IB, anchors IA)
5 | none | LVIS/atss_R50_2x_efl.py | 25.8 18.1 24.5 30.6
# APc of "STS" and "STS + IA": the paper's cells are garbled (configs/README.md, its notes)
5 | STS | LVIS/atss_R50_2x_efl_sts.py | 26.1 18.6 24.8 30.8
5 | STS + IB | LVIS/atss_R50_2x_efl_sts_ib.py | 26.8 18.7 25.4 31.9
5 | STS + IA | LVIS/atss_R50_2x_efl_sts_ia.py | 26.5 20.0 24.8 31.1
5 | STS + IB + IA | LVIS/atss_improved_R50_2x_efl.py
# Table 6: EFL with other one-stage detectors
6 | RetinaNet | LVIS/retinanet_R50_2x_focal.py
6 | RetinaNet + EFL | LVIS/retinanet_R50_2x_efl.py | 20.5 15.2 18.6 24.8
6 | FCOS* | LVIS/fcos_R50_2x_focal.py
6 | FCOS* + EFL | LVIS/fcos_R50_2x_efl.py | 23.4 14.9 21.9 28.7
6 | PAA | LVIS/paa_R50_2x_focal.py
6 | PAA + EFL | LVIS/paa_R50_2x_efl.py | 25.6 19.8 23.8 30.2
6 | Baseline† | LVIS/atss_improved_R50_2x_focal.py
6 | Baseline† + EFL | LVIS/atss_improved_R50_2x_efl.py
"""


def _paper_rows(text: str) -> tuple[PaperRow, ...]:
    numbers: dict[str, list[float]] = {}
    rows = []
    for line in text.strip().splitlines():
        if line.startswith("#"):
            continue
        table, row, config, *ap = (field.strip() for field in line.split("|"))
        if ap:
            if config in numbers:
                raise ValueError(f"{config}: the paper's numbers are given twice")
            numbers[config] = [float(v) for v in ap[0].split()]
        rows.append(PaperRow(int(table), row, config, *numbers[config]))
    return tuple(rows)


PAPER_ROWS: tuple[PaperRow, ...] = _paper_rows(_ROWS)


class OpenImagesRow(NamedTuple):
    """A row of Table 7 (OpenImages Challenge 2019 val, mAP@0.5 and its five class groups by
    training instances, AP1 the rarest)."""

    row: str
    config: str
    AP: float
    AP1: float
    AP2: float
    AP3: float
    AP4: float
    AP5: float


_O = OpenImagesRow
OPENIMAGES_ROWS: tuple[OpenImagesRow, ...] = (
    _O("R-50 Faster R-CNN", "OpenImages/faster_rcnn_R50_180k.py", 43.1, 26.3, 42.5, 45.2, 48.2, 52.6),
    _O("R-50 RetinaNet", "OpenImages/retinanet_R50_180k.py", 32.1, 21.0, 34.0, 35.4, 35.6, 34.2),
    _O("R-50 Baseline†", "OpenImages/atss_improved_R50_180k_focal.py", 43.3, 19.4, 44.3, 49.5, 50.6, 52.2),
    _O("R-50 EFL", "OpenImages/atss_improved_R50_180k_efl.py", 51.5, 52.8, 52.9, 50.8, 50.2, 50.9),
    _O("R-101 Faster R-CNN", "OpenImages/faster_rcnn_R101_180k.py", 46.0, 29.2, 45.5, 49.3, 50.9, 54.7),
    _O("R-101 RetinaNet", "OpenImages/retinanet_R101_180k.py", 35.8, 26.4, 38.9, 38.3, 38.1, 36.8),
    _O("R-101 Baseline†", "OpenImages/atss_improved_R101_180k_focal.py", 44.7, 19.6, 46.6, 51.1, 52.3, 53.4),
    _O("R-101 EFL", "OpenImages/atss_improved_R101_180k_efl.py", 52.6, 53.4, 53.8, 51.4, 51.8, 52.3),
)  # fmt: skip
