"""Which parameters train: freezing strategies, body layers and blocks, frozen batch norm, parameter groups."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ferkit.errors import FerkitError
from ferkit.models import create_model, param_groups, set_trainable, train_mode
from ferkit.models.freeze import body_blocks, body_layers

SMALL = 32  # backbone resolution: a ResNet-18 at 32x32 is quick on a CPU


def trainable(model: torch.nn.Module) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture
def resnet18():
    return create_model("resnet18", image_size=SMALL)


def test_set_trainable_head_and_all(resnet18):
    set_trainable(resnet18, "head")
    assert trainable(resnet18) == {"head.1.weight", "head.1.bias"}
    n = set_trainable(resnet18, "all")
    assert trainable(resnet18) == {n for n, _ in resnet18.named_parameters()}
    assert n == sum(p.numel() for p in resnet18.parameters())


def test_set_trainable_last_layers(resnet18):
    set_trainable(resnet18, "last_layers:2")  # the last conv and its batch norm
    body = trainable(resnet18) - {"head.1.weight", "head.1.bias"}
    assert body == {"backbone.layer4.1.conv2.weight", "backbone.layer4.1.bn2.weight", "backbone.layer4.1.bn2.bias"}


def test_set_trainable_blocks_and_modules(resnet18):
    layer4 = {n for n, _ in resnet18.named_parameters() if n.startswith("backbone.layer4.")}
    head = {"head.1.weight", "head.1.bias"}
    set_trainable(resnet18, "last_blocks:1")
    assert trainable(resnet18) == layer4 | head
    set_trainable(resnet18, "modules:backbone.layer3, backbone.layer4")
    layer3 = {n for n, _ in resnet18.named_parameters() if n.startswith("backbone.layer3.")}
    assert trainable(resnet18) == layer3 | layer4 | head

    fernet = create_model("fernet")
    set_trainable(fernet, "last_blocks:1")
    assert {n.split(".")[0] for n in trainable(fernet)} == {"stage4", "head"}


def test_a_model_without_a_head_is_refused_by_name():
    with pytest.raises(FerkitError, match=r"^this model has no 'head' submodule; build it with "
                                          r"ferkit.models.create_model$"):
        set_trainable(nn.Sequential(nn.Linear(2, 2)), "all")


def test_body_layers_are_the_modules_that_own_parameters():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.scale = nn.Parameter(torch.ones(1))  # owned by the model itself
            self.conv = nn.Conv2d(1, 2, 3)
            self.block = nn.Sequential(nn.Conv2d(2, 2, 1), nn.ReLU(), nn.BatchNorm2d(2))
            self.head = nn.Linear(2, 3)

    assert body_layers(Net()) == [["scale"], ["conv.weight", "conv.bias"], ["block.0.weight", "block.0.bias"],
                                  ["block.2.weight", "block.2.bias"]]


def test_timm_blocks_follow_its_group_matcher(resnet18):
    blocks = body_blocks(resnet18)
    assert set(blocks[0]) == {"backbone.conv1.weight", "backbone.bn1.weight", "backbone.bn1.bias"}  # the stem: one
    assert len(blocks) == 5 and all(n.startswith("backbone.layer4.") for n in blocks[-1])
    set_trainable(resnet18, "last_blocks:5")  # as many blocks as there are: the whole body
    assert all(p.requires_grad for p in resnet18.parameters())


def test_a_final_norm_joins_the_last_block():
    blocks = body_blocks(create_model("densenet121", image_size=32))
    assert len(blocks) == 5 and {"backbone.features.norm5.weight", "backbone.features.norm5.bias"} <= set(blocks[-1])
    assert any(".denseblock4." in n for n in blocks[-1]) and not any("norm5" in n for n in blocks[-2])


def test_a_timm_backbone_without_a_group_matcher_is_split_by_its_children():
    model = create_model("timm:poolformer_s12", image_size=SMALL)
    assert not hasattr(model.backbone, "group_matcher")
    blocks = body_blocks(model)
    tops = [sorted({".".join(n.split(".")[:2]) for n in b}) for b in blocks]
    assert tops == [["backbone.stem"], ["backbone.stages"], ["backbone.head"]]  # the last: its final norm
    set_trainable(model, "last_blocks:1")
    assert {n for n, p in model.named_parameters() if p.requires_grad} == set(blocks[-1]) | {
        n for n, _ in model.head.named_parameters(prefix="head")}


def test_blocks_of_a_from_scratch_net_are_its_stages():
    blocks = body_blocks(create_model("fernet", width=4))
    assert [sorted({n.split(".")[0] for n in b}) for b in blocks] == [["stage1"], ["stage2"], ["stage3"], ["stage4"]]


def test_asking_for_more_layers_than_the_body_has_says_how_many(resnet18):
    n = len(body_layers(resnet18))
    set_trainable(resnet18, f"last_layers:{n}")  # every layer is allowed
    assert all(p.requires_grad for p in resnet18.parameters())
    with pytest.raises(FerkitError, match=rf"^trainable 'last_layers:{n + 1}': the body has only {n} parameterised "
                                          r"layers; use 'all' to train everything$"):
        set_trainable(resnet18, f"last_layers:{n + 1}")


def test_param_groups_split_head_from_body_at_one_learning_rate_by_default(resnet18):
    set_trainable(resnet18, "all")
    groups = {g["name"]: g for g in param_groups(resnet18, lr=0.1, weight_decay=0.01)}
    assert sorted(groups) == ["body", "body_no_decay", "head", "head_no_decay"]
    assert all(g["lr"] == 0.1 for g in groups.values())
    head = {id(p) for p in resnet18.head.parameters()}
    assert {id(p) for k in ("head", "head_no_decay") for p in groups[k]["params"]} == head


NOT_A_FORM = "is not one of: all | head | last_layers:N | last_blocks:N | modules:name1,name2"
POSITIVE = ": N must be a positive integer (for the head alone use 'head')"
RESNET_TOPS = "backbone.bn1, backbone.conv1, backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4"


@pytest.mark.parametrize("model, spec, message", [
    ("resnet18", "freeze", f"trainable 'freeze' {NOT_A_FORM}"),
    ("resnet18", "head:1", f"trainable 'head:1' {NOT_A_FORM}"),
    ("resnet18", "modules:", f"trainable 'modules:' {NOT_A_FORM}"),
    ("resnet18", "last_layers:0", f"trainable 'last_layers:0'{POSITIVE}"),
    ("resnet18", "last_blocks:x", f"trainable 'last_blocks:x'{POSITIVE}"),
    ("resnet18", "last_blocks:6", "trainable 'last_blocks:6': the body has only 5 blocks; use 'all' to train "
                                  "everything"),
    ("resnet18", "modules:backbone.x", f"trainable 'modules:backbone.x': 'backbone.x' names no body module; some are: "
                                       f"{RESNET_TOPS}"),
    ("fernet", "modules:stage1,nope", "trainable 'modules:stage1,nope': 'nope' names no body module; some are: stage1, "
                                      "stage2, stage3, stage4"),
])
def test_set_trainable_rejects_saying_what_is_wrong(model, spec, message):
    net = create_model(model, **({"image_size": SMALL} if model == "resnet18" else {"width": 4}))
    with pytest.raises(FerkitError) as e:
        set_trainable(net, spec)
    assert str(e.value) == message


def test_train_mode_keeps_frozen_batchnorm_in_eval(resnet18):
    set_trainable(resnet18, "last_blocks:1")
    train_mode(resnet18)
    assert resnet18.training and resnet18.head.training
    assert not resnet18.backbone.layer3[0].bn1.training and not resnet18.backbone.bn1.training
    assert resnet18.backbone.layer4[0].bn1.training
    frozen = resnet18.backbone.bn1.running_mean.clone()
    resnet18(torch.rand(2, 1, SMALL, SMALL))
    assert torch.equal(frozen, resnet18.backbone.bn1.running_mean)  # a frozen layer keeps its statistics


def test_param_groups(resnet18):
    set_trainable(resnet18, "last_blocks:1")
    groups = param_groups(resnet18, lr=1e-3, weight_decay=1e-4, backbone_lr_mult=0.1)
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"head", "head_no_decay", "body", "body_no_decay"}
    assert by_name["head"]["lr"] == 1e-3 and by_name["body"]["lr"] == pytest.approx(1e-4)
    assert by_name["head"]["weight_decay"] == 1e-4 and by_name["body_no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim == 1 for g in groups if g["name"].endswith("no_decay") for p in g["params"])
    in_groups = {id(p) for g in groups for p in g["params"]}
    assert in_groups == {id(p) for p in resnet18.parameters() if p.requires_grad}
    torch.optim.AdamW(groups, lr=1e-3)  # a torch optimizer takes them as they are

    with torch.device("meta"):  # only names and shapes matter: no need to allocate ViT-B
        vit = create_model("vit_base_patch16_224")
    no_decay = {id(p) for g in param_groups(vit, 1e-3, 0.05) if g["weight_decay"] == 0 for p in g["params"]}
    assert id(vit.backbone.pos_embed) in no_decay and id(vit.backbone.cls_token) in no_decay
