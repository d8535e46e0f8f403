"""Official-format (EOD 0.1.0) checkpoints made from an efl_d2 model, for the checkpoint
conversion and official pipeline tests (test_checkpoint_conversion, test_official_pipeline).

- ``to_official_name``: the inverse key mapping d2/efl_d2 name -> official name, written from the
  documented official names (docs/official_checkpoint_format.md §2);
- ``official_state_dict``: a model's weights as the official code saves them (stem aliases, BN
  counters, EFL buffers, optionally the class-major classifier layout);
- ``save_official``: writes such a state dict in one of the documented top-level layouts (§1).
"""

import torch


def to_official_name(key):
    """d2/efl_d2 name -> official (EOD 0.1.0) name, from the documented tables; None = no entry
    of its own (the official top block reads the FPN's C5 lateral)."""
    if key.startswith("backbone.top_block.lateral."):
        return None
    if key.startswith("backbone.bottom_up.stem.conv1.norm."):
        return "backbone.layer0.1." + key.split(".")[-1]
    if key == "backbone.bottom_up.stem.conv1.weight":
        return "backbone.layer0.0.weight"
    if key.startswith("backbone.bottom_up.res"):
        parts = key[len("backbone.bottom_up.res") :].split(".")
        stage, block, rest = int(parts[0]) - 1, parts[1], parts[2:]
        head = f"backbone.layer{stage}.{block}."
        if rest[0] == "shortcut":
            return head + ("downsample.0." if rest[1] == "weight" else "downsample.1.") + rest[-1]
        if rest[1] == "norm":
            return head + "bn" + rest[0][len("conv") :] + "." + rest[2]
        return head + ".".join(rest)
    simple = {
        "backbone.fpn_lateral": lambda r: f"neck.c{r[0]}_lateral.{r[2:]}",
        "backbone.fpn_output": lambda r: f"neck.p{r[0]}_conv.{r[2:]}",
        "backbone.top_block.p": lambda r: f"neck.p{r[0]}_conv.{r[2:]}",
        "head.cls_subnet.": lambda r: "roi_head.cls_subnet." + r,
        "head.bbox_subnet.": lambda r: "roi_head.box_subnet." + r,
        "head.cls_score.": lambda r: "roi_head.cls_subnet_pred." + r,
        "head.bbox_pred.": lambda r: "roi_head.box_subnet_pred." + r,
        "head.quality_pred.": lambda r: "roi_head.iou_pred." + r,
        "cls_loss.": lambda r: "post_process.cls_loss." + r,
    }
    for prefix, fn in simple.items():
        if key.startswith(prefix):
            return fn(key[len(prefix) :])
    raise AssertionError(f"no official name for {key}")


def official_state_dict(model, *, aliases=True, class_major=False):
    """The model's weights as the official code would save them (0.1.0 naming, with the stem
    aliases, BN counters and EFL buffers)."""
    sd = {}
    for k, v in model.state_dict().items():
        name = to_official_name(k)
        if name is None:
            continue
        sd[name] = v.clone()
        if name.endswith(
            ("bn1.weight", "bn2.weight", "bn3.weight", "layer0.1.weight", "downsample.1.weight")
        ):
            sd[name[: -len("weight")] + "num_batches_tracked"] = torch.tensor(0)
    if aliases:
        for k in list(sd):
            if k.startswith("backbone.layer0.0."):
                sd["backbone.conv1." + k[len("backbone.layer0.0.") :]] = sd[k]
            if k.startswith("backbone.layer0.1."):
                sd["backbone.bn1." + k[len("backbone.layer0.1.") :]] = sd[k]
    if class_major:
        num_anchors = sd["roi_head.box_subnet_pred.weight"].shape[0] // 4
        for leaf in ("weight", "bias"):
            t = sd[f"roi_head.cls_subnet_pred.{leaf}"]
            c = t.shape[0] // num_anchors
            # official class_first layout: channel = c * A + a
            sd[f"roi_head.cls_subnet_pred.{leaf}"] = torch.stack(
                [t[a * c : (a + 1) * c] for a in range(num_anchors)], dim=1
            ).reshape(t.shape)
    return sd


def save_official(sd, path, layout, module_prefix):
    if module_prefix:
        sd = {"module." + k: v for k, v in sd.items()}
    if layout == "model":
        obj = {
            "epoch": 24,
            "iter": 1000,
            "model": sd,
            "metric_val": -1,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.02, "params": [0, 1]}]},
        }
    elif layout == "state_dict":
        obj = {"epoch": 3, "iter": 10, "state_dict": sd, "suffix": "auto", "metric_val": -1}
    else:
        obj = sd
    torch.save(obj, path)
    return path
