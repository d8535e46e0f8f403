"""Adaptive Training Sample Selection (ATSS, Zhang et al. CVPR 2020) as a stand-alone matcher.

The matcher only labels anchors foreground/background and says which GT box a foreground anchor
belongs to; turning that into class targets is the meta-architecture's job (see ``atss.py``).

Memory: ATSS only ever needs the IoU of the ``topk`` nearest anchors per level and GT, so instead of
the usual (A x G) IoU matrix this implementation keeps one (A_l x G_chunk) distance block at a time
(bounded by ``max_block_elements``) and computes IoUs for the (topk * levels) x G candidate pairs
only. An LVIS image with hundreds of GTs and ~50k anchors therefore never allocates A x G tensors.
"""

from collections.abc import Sequence

import torch
from detectron2.structures import Boxes
from detectron2.structures.boxes import matched_pairwise_iou
from torch import Tensor

__all__ = ["CENTER_CONVENTIONS", "ATSSMatcher"]

# "detectron2": the centre-inside test on the continuous boxes. "official": the official
# code's test, on its inclusive-pixel boxes (anchor centre 0.5 px lower, GT x2/y2 1 px lower), so
# 0.5 px stricter on every side.
CENTER_CONVENTIONS = ("detectron2", "official")

BoxesLike = Tensor | Boxes


def _as_tensor(boxes: BoxesLike) -> Tensor:
    return boxes.tensor if isinstance(boxes, Boxes) else boxes


def _centers(boxes: Tensor) -> Tensor:
    return (boxes[..., :2] + boxes[..., 2:]) / 2


class ATSSMatcher:
    """
    ATSS assignment of anchors to ground-truth boxes, for one image.

    For every GT box and every pyramid level, the ``topk`` anchors whose centres are nearest (L2)
    to the GT centre are candidates. A candidate is positive for that GT if its IoU is at least
    mean + std (unbiased) of all candidate IoUs of the GT, and if its centre lies inside the GT by
    more than ``center_margin`` pixels on all four sides (measured as ``center_convention`` says). An anchor positive for several GTs goes to
    the one with the highest IoU (lowest GT index on exact ties).

    Determinism: among anchors at exactly the same distance (e.g. two anchors sharing one location),
    the lower anchor index is taken first. The official code leaves this to ``torch.topk``.

    Example::

        matcher = ATSSMatcher(topk=9)
        matched_idxs, labels = matcher(anchors_per_level, gt_boxes)
    """

    def __init__(
        self,
        topk: int = 9,
        *,
        center_margin: float = 0.01,
        center_convention: str = "detectron2",
        max_block_elements: int = 1 << 22,
    ):
        """
        Args:
            topk: candidates per level and GT (9 in ATSS; 18 in the EFL improved baseline, which
                has 2 anchors per location). Levels with fewer anchors contribute all of them.
            center_margin: an anchor centre must be inside the GT by more than this (pixels).
            center_convention: "detectron2" (distances from the continuous boxes) or
                "official" (the official code's: anchor centre and GT in its inclusive
                pixel convention, centre - 0.5 and x2, y2 - 1, i.e. 0.5 px stricter per side).
            max_block_elements: upper bound on the size of the anchor x GT distance block processed
                at once; GTs are chunked to respect it. Only affects memory/speed, never results.
        """
        if topk < 1:
            raise ValueError(f"ATSSMatcher: topk must be >= 1, got {topk}.")
        self.topk = int(topk)
        self.center_margin = float(center_margin)
        if center_convention not in CENTER_CONVENTIONS:
            raise ValueError(
                f"ATSSMatcher: center_convention must be one of {CENTER_CONVENTIONS}, got "
                f"{center_convention!r}."
            )
        self.center_convention = center_convention
        self.max_block_elements = int(max_block_elements)

    def __repr__(self) -> str:
        return (
            f"ATSSMatcher(topk={self.topk}, center_margin={self.center_margin}, "
            f"center_convention={self.center_convention!r})"
        )

    @torch.no_grad()
    def __call__(
        self, anchors_per_level: Sequence[BoxesLike], gt_boxes: BoxesLike
    ) -> tuple[Tensor, Tensor]:
        """
        Args:
            anchors_per_level: list of L tensors (A_l, 4) or :class:`Boxes`, XYXY, all levels of
                one image in the order the caller concatenates them.
            gt_boxes: (G, 4) tensor or :class:`Boxes`, XYXY. Boxes with zero width or height are
                ignored (they can get no positives).

        Returns:
            matched_idxs: int64 (A,), A = sum_l A_l. Index into ``gt_boxes`` where ``labels == 1``;
                0 (meaningless) elsewhere.
            labels: int64 (A,). 1 = foreground, 0 = background.
        """
        anchors = [_as_tensor(a) for a in anchors_per_level]
        gt = _as_tensor(gt_boxes)
        num_anchors = sum(len(a) for a in anchors)
        device = gt.device if num_anchors == 0 else anchors[0].device
        matched_idxs = torch.zeros(num_anchors, dtype=torch.int64, device=device)
        labels = torch.zeros(num_anchors, dtype=torch.int64, device=device)

        valid_gt = torch.nonzero((gt[:, 2] > gt[:, 0]) & (gt[:, 3] > gt[:, 1])).squeeze(1)
        if num_anchors == 0 or len(valid_gt) == 0:
            return matched_idxs, labels
        gt = gt[valid_gt].to(anchors[0].dtype)

        all_anchors = torch.cat(anchors)
        candidates = self._candidates(anchors, gt)  # (K, G) indices into all_anchors
        anchor_idx, gt_idx, iou = self._positive_pairs(all_anchors, candidates, gt)
        if len(anchor_idx) == 0:
            return matched_idxs, labels

        best_gt = self._highest_iou_gt(anchor_idx, gt_idx, iou, num_anchors, len(gt))
        fg = best_gt >= 0
        labels[fg] = 1
        matched_idxs[fg] = valid_gt[best_gt[fg]]
        return matched_idxs, labels

    def _candidates(self, anchors: list[Tensor], gt: Tensor) -> Tensor:
        """
        Returns:
            (K, G) int64 indices into the concatenated anchors, K = sum_l min(topk, A_l): the
            nearest anchors of every level for every GT.
        """
        gt_centers = _centers(gt)
        per_level, offset = [], 0
        for anchors_l in anchors:
            k = min(self.topk, len(anchors_l))
            if k > 0:
                per_level.append(self._nearest_anchors(_centers(anchors_l), gt_centers, k) + offset)
            offset += len(anchors_l)
        return torch.cat(per_level, dim=0)

    def _nearest_anchors(self, centers: Tensor, gt_centers: Tensor, k: int) -> Tensor:
        """
        Like :meth:`_nearest`, but when the anchors come in groups of m consecutive anchors with
        one centre (a generator's anchors per location) and m divides k, it ranks the locations
        and takes all m anchors of the k/m nearest: the same set (lower index first on ties), at
        1/m of the cost.
        """
        m = self._anchors_per_location(centers)
        if m == 1 or k % m != 0:
            return self._nearest(centers, gt_centers, k)
        locations = self._nearest(centers[::m], gt_centers, k // m)  # (k/m, G)
        offsets = torch.arange(m, device=centers.device)
        return (locations[:, None, :] * m + offsets[None, :, None]).flatten(0, 1)

    @staticmethod
    def _anchors_per_location(centers: Tensor) -> int:
        """m if ``centers`` is made of runs of m equal consecutive rows, else 1."""
        m = int((centers == centers[:1]).all(dim=1).int().cumprod(dim=0).sum())
        if m <= 1 or len(centers) % m != 0:
            return 1
        groups = centers.view(-1, m, 2)
        return m if bool((groups == groups[:, :1]).all()) else 1

    def _nearest(self, points: Tensor, gt_centers: Tensor, k: int) -> Tensor:
        """
        Indices (k, G) of the ``k`` points nearest to each GT centre, lower index first on ties.
        GTs are processed in chunks so the (P, chunk) distance block stays bounded.
        """
        chunk = max(1, self.max_block_elements // max(len(points), 1))
        out = []
        for start in range(0, len(gt_centers), chunk):
            g = gt_centers[start : start + chunk]
            # Squared distances: same order as L2, and no (P, G, 2) intermediate.
            dist = (points[:, None, 0] - g[None, :, 0]).square_()
            dist += (points[:, None, 1] - g[None, :, 1]).square_()
            out.append(self._smallest_k_stable(dist, k))
        return torch.cat(out, dim=1)

    @staticmethod
    def _smallest_k_stable(dist: Tensor, k: int) -> Tensor:
        """
        (k, C) row indices of the k smallest entries of every column of ``dist`` (R, C); on ties
        at the k-th value the lower row index wins, so the chosen set does not depend on the
        order ``topk`` happens to return equal values in. Row order within a column is arbitrary.
        """
        if k >= len(dist):
            return torch.arange(len(dist), device=dist.device)[:, None].expand(-1, dist.shape[1])
        values, idx = dist.topk(k + 1, dim=0, largest=False)
        # A column is ambiguous only if the k-th and (k+1)-th smallest values are equal.
        ambiguous = torch.nonzero(values[k - 1] == values[k]).squeeze(1)
        idx = idx[:k]
        if len(ambiguous) > 0:
            kth = values[k - 1, ambiguous]
            idx[:, ambiguous] = ATSSMatcher._smallest_k_by_index(dist[:, ambiguous], kth, k)
        return idx

    @staticmethod
    def _smallest_k_by_index(dist: Tensor, kth: Tensor, k: int) -> Tensor:
        """Slow path of :meth:`_smallest_k_stable` for columns with ties at the k-th value."""
        chosen = dist < kth
        ties = dist == kth
        need = k - chosen.sum(dim=0, keepdim=True)  # >= 1 by definition of the k-th value
        chosen |= ties & (ties.cumsum(dim=0, dtype=torch.int32) <= need)
        # Row-major nonzero of the transpose lists each column's rows in increasing order.
        return torch.nonzero(chosen.t())[:, 1].view(-1, k).t()

    def _positive_pairs(
        self, anchors: Tensor, candidates: Tensor, gt: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        """
        Apply the adaptive IoU threshold and the centre-inside test to the candidates.

        Returns:
            anchor_idx, gt_idx (int64) and iou of every positive (anchor, GT) pair.
        """
        num_cand, num_gt = candidates.shape
        if num_cand < 2:  # the unbiased std is undefined (NaN in the reference code): no positive
            empty = candidates.new_zeros(0)
            return empty, empty, anchors.new_zeros(0)
        cand_boxes = anchors[candidates]  # (K, G, 4)
        gt_expanded = gt[None].expand(num_cand, num_gt, 4)
        iou = matched_pairwise_iou(
            Boxes(cand_boxes.reshape(-1, 4)), Boxes(gt_expanded.reshape(-1, 4))
        ).view(num_cand, num_gt)
        # Unbiased std, as torch.std in the reference code.
        threshold = iou.mean(dim=0) + iou.std(dim=0)

        centers = _centers(cand_boxes)  # (K, G, 2)
        gt_far = gt_expanded[..., 2:]
        if self.center_convention == "official":
            centers = centers - 0.5  # official anchors end 1 px earlier: centre 0.5 px lower
            gt_far = gt_far - 1  # inclusive x2, y2
        inside = torch.minimum(centers - gt_expanded[..., :2], gt_far - centers)
        inside = inside.amin(dim=2) > self.center_margin

        positive = (iou >= threshold[None]) & inside
        gt_idx = torch.arange(num_gt, device=anchors.device).expand(num_cand, num_gt)
        return candidates[positive], gt_idx[positive], iou[positive]

    @staticmethod
    def _highest_iou_gt(
        anchor_idx: Tensor, gt_idx: Tensor, iou: Tensor, num_anchors: int, num_gt: int
    ) -> Tensor:
        """
        For each anchor, the positive GT with the highest IoU (lowest GT index on equal IoU).

        Returns:
            int64 (num_anchors,), -1 for anchors without any positive pair.
        """
        best_iou = iou.new_full((num_anchors,), -1.0)
        best_iou.scatter_reduce_(0, anchor_idx, iou, reduce="amax")
        is_best = iou == best_iou[anchor_idx]
        best_gt = torch.full((num_anchors,), num_gt, dtype=torch.int64, device=iou.device)
        best_gt.scatter_reduce_(0, anchor_idx[is_best], gt_idx[is_best], reduce="amin")
        best_gt[best_gt == num_gt] = -1
        return best_gt
