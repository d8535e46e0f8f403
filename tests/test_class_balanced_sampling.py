"""Class-balanced sampling (CBS): measured frequencies over many draws against the definition,
and the indexed plan's properties (pure function of seed and iteration, aspect groups)."""

import numpy as np
import pytest

from efl_d2.data import ClassBalancedBatchPlan, build_class_balanced_train_loader

# 12 images; class 0 is everywhere (head), class 3 in one image (tail), class 7 in two.
IMAGE_CLASSES = [
    [0], [0, 1], [0, 1, 1], [0, 2], [0], [0, 3],
    [0, 1], [0], [0, 7], [0, 2, 7], [1], [0],
]  # fmt: skip
GROUPS = [0, 1, 0, 0, 1, 0, 0, 1, 0, 0, 1, 0]


def plan(seed=0, groups=GROUPS, batch=4):
    return ClassBalancedBatchPlan(
        image_classes=IMAGE_CLASSES, groups=groups, total_batch_size=batch, seed=seed
    )


def expected_image_probabilities():
    """P(image i) = sum over its distinct classes c of (1 / C) * (1 / n_c)."""
    classes = sorted({c for cs in IMAGE_CLASSES for c in cs})
    members = {c: [i for i, cs in enumerate(IMAGE_CLASSES) if c in cs] for c in classes}
    p = np.zeros(len(IMAGE_CLASSES))
    for c in classes:
        for i in members[c]:
            p[i] += 1 / (len(classes) * len(members[c]))
    return p


def test_classes_are_drawn_uniformly_and_images_uniformly_within_a_class():
    cbs = plan()
    assert cbs.classes == [0, 1, 2, 3, 7]
    drawn, images = zip(*(cbs.epoch_draws(e) for e in range(3000)))
    drawn, images = np.concatenate(drawn), np.concatenate(images)
    assert len(drawn) == 3000 * len(IMAGE_CLASSES)  # an epoch = as many draws as images
    freq = np.bincount(drawn, minlength=5) / len(drawn)
    # binomial std of a frequency 0.2 over 36000 draws: 0.0021
    np.testing.assert_allclose(freq, 0.2, atol=0.01)
    for k, c in enumerate(cbs.classes):
        got = images[drawn == k]
        assert all(c in IMAGE_CLASSES[i] for i in got)  # the image has the drawn class
        members = [i for i, cs in enumerate(IMAGE_CLASSES) if c in cs]
        share = np.bincount(got, minlength=len(IMAGE_CLASSES))[members] / len(got)
        np.testing.assert_allclose(share, 1 / len(members), atol=0.015)


def test_image_frequencies_over_many_batches_match_the_definition():
    cbs = plan()
    seen = np.concatenate([cbs.batch(k) for k in range(9000)])  # 36000 images
    freq = np.bincount(seen, minlength=len(IMAGE_CLASSES)) / len(seen)
    np.testing.assert_allclose(freq, expected_image_probabilities(), atol=0.008)
    # the tail image (class 3): 1/5 + 1/50 = 0.22, 2.6x its share under uniform sampling (1/12)
    assert freq[5] > 2.5 / 12


def test_a_class_cycles_through_its_images_before_repeating_one():
    cbs = plan()
    cycled = 0
    for epoch in range(300):
        drawn, images = cbs.epoch_draws(epoch)
        for k, c in enumerate(cbs.classes):
            members = sorted(i for i, cs in enumerate(IMAGE_CLASSES) if c in cs)
            sequence = images[drawn == k].tolist()  # in draw order
            head = sequence[: len(members)]
            assert len(set(head)) == len(head)  # no image twice before all were drawn
            if len(sequence) >= len(members):
                assert sorted(head) == members
                cycled += len(members) > 1
    assert cycled > 100  # the cases above were exercised


def test_plan_is_a_pure_function_of_seed_and_batch_and_keeps_aspect_groups():
    a, b = plan(seed=3), plan(seed=3)
    later = [b.batch(k) for k in range(50, 60)]  # b starts late
    assert [a.batch(k) for k in range(60)][50:] == later
    assert plan(seed=4).batch(0) != a.batch(0) or plan(seed=4).batch(1) != a.batch(1)
    groups = np.asarray(GROUPS)
    for k in range(200):
        assert len(set(groups[a.batch(k)])) == 1
    # without grouping the same draws come in draw order
    flat = plan(seed=3, groups=[0] * 12)
    assert np.concatenate([flat.batch(k) for k in range(3)]).tolist() == (
        flat.epoch_draws(0)[1].tolist()
    )


def test_builder_reads_classes_from_dataset_dicts_and_rejects_empty():
    dicts = [
        {"file_name": f"{i}.jpg", "height": 10, "width": 20,
         "annotations": [{"category_id": c} for c in cs]}
        for i, cs in enumerate(IMAGE_CLASSES)
    ]  # fmt: skip
    loader = build_class_balanced_train_loader(
        dataset=dicts, mapper=lambda d: d, total_batch_size=4, seed=0
    )
    assert loader.plan.classes == [0, 1, 2, 3, 7]
    assert loader.plan.batch(0) == plan(groups=[0] * 12).batch(0)
    assert [d["file_name"] for d in loader.rank_batch(0)] == [
        f"{i}.jpg" for i in loader.plan.batch(0)
    ]
    with pytest.raises(ValueError, match="annotations"):
        ClassBalancedBatchPlan(image_classes=[[], []], groups=[0, 0], total_batch_size=1, seed=0)
