"""The model zoo: every registered model trains a step, weights load from local files only, freezing strategies."""

from __future__ import annotations

import os
import socket

import pytest
import torch
from safetensors.torch import save_file

from ferkit.errors import FerkitError
from ferkit.models import (
    attention_maps,
    count_parameters,
    create_model,
    get_spec,
    list_models,
)
from ferkit.models.backbones import GrayAdapter
from ferkit.models.layers import Normalize

SMALL = 32  # backbone resolution in tests: every registered architecture runs at 32x32, far faster than 224


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Batches of two gain nothing from intra-op threads, and on a busy machine every op would wait for a thread
    that is not scheduled (2 threads under load made this file 5x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def small(name: str) -> dict:
    return {"image_size": SMALL} if get_spec(name).family == "timm" else {}


def faces(n: int = 2, size: int = 48) -> torch.Tensor:
    return torch.rand(n, 1, size, size)  # (B, 1, S, S) gray in [0, 1]


@pytest.mark.parametrize("name", [s.name for s in list_models()] + ["timm:resnet10t"])
def test_forward_backward(name):
    torch.manual_seed(0)
    model = create_model(name, **small(name))
    spec = get_spec(name)
    assert model.input_size == spec.input_size
    assert "input_size" in spec.kwargs or spec.family in ("seed_cnn", "cbam")
    assert isinstance(model.head, torch.nn.Module)
    assert isinstance(next(model.children()), (Normalize, GrayAdapter))  # normalisation is inside the model
    assert isinstance(model.mean, tuple) and len(model.mean) == len(model.std)

    logits = model(faces(2, model.input_size))
    assert logits.shape == (2, 7) and logits.dtype == torch.float32
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3])).backward()
    grads = [(n, p.grad) for n, p in model.named_parameters()]
    assert all(g is not None and torch.isfinite(g).all() for _, g in grads), [n for n, g in grads if g is None]
    first_name, first = grads[0]  # the first layer's weights (ViT: its class token)
    assert first.abs().sum() > 0, first_name


def test_parameter_counts():
    def conv(c_in: int, c_out: int) -> int:  # 3x3 kernel + bias + BN gamma/beta
        return c_in * 9 * c_out + c_out + 2 * c_out

    convs = conv(1, 32) + conv(32, 64) + conv(64, 128) + conv(128, 128) + conv(128, 256) + conv(256, 256)
    dense = (256 * 6 * 6) * 256 + 256 + 2 * 256 + 256 * 7 + 7  # Dense256 + BN, Dense7
    assert convs + dense == 3_489_095
    assert count_parameters("s0_cnn") == convs + dense
    assert sum(p.numel() for p in create_model("s0_cnn").parameters()) == convs + dense
    assert 16_500_000 <= count_parameters("s4_cnn") <= 17_500_000
    assert 1_100_000 <= count_parameters("fernet") <= 1_250_000
    assert count_parameters("fernet", width=16) < 400_000
    assert 50_000 <= count_parameters("mini_xception") <= 65_000
    # Meta-device counting agrees with a real build, and is instant for ViT-B.
    real = sum(p.numel() for p in create_model("resnet18", 6).parameters())
    assert count_parameters("resnet18", num_classes=6) == real
    assert 85_000_000 < count_parameters("vit_base_patch16_224") < 87_000_000


def test_options_and_input_size():
    model = create_model("fernet", num_classes=6, width=8, dropout=0.1, input_size=64)
    assert model.input_size == 64 and model(faces(2, 64)).shape == (2, 6)
    assert create_model("vgg_fer", input_size=40)(faces(2, 40)).shape == (2, 7)
    assert create_model("resnet18", image_size=SMALL, input_size=40)(faces(2, 40)).shape == (2, 7)
    for head in ("s0", "s3"):
        assert create_model("resnet18", head=head, image_size=SMALL)(faces()).shape == (2, 7)


def test_fernet_channels_last_bf16():
    model = create_model("fernet").to(memory_format=torch.channels_last).eval()
    x = faces().to(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x)
    assert y.shape == (2, 7) and y.dtype == torch.bfloat16


def test_unknown_names_and_bad_options():
    with pytest.raises(FerkitError, match="unknown model 'nope'; available: .*fernet"):
        create_model("nope")
    with pytest.raises(FerkitError, match="timm has no model"):
        create_model("timm:not_a_timm_model")
    with pytest.raises(FerkitError, match="options are: width, dropout, input_size"):
        create_model("fernet", bogus=1)
    with pytest.raises(FerkitError, match="options are: none"):
        create_model("s0_cnn", input_size=64)
    with pytest.raises(FerkitError, match="head"):
        create_model("resnet18", head="mlp")
    with pytest.raises(FerkitError, match="drop_rate"):
        create_model("resnet18", head="s0", drop_rate=0.3)
    with pytest.raises(FerkitError, match="width"):
        create_model("fernet", width=0)
    with pytest.raises(FerkitError, match="num_classes"):
        create_model("fernet", num_classes=0)
    with pytest.raises(FerkitError, match="no pretrained weights"):
        create_model("fernet", pretrained=True)


# ---- pretrained weights from local files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    """A random timm resnet18 (with its ImageNet classifier) saved as .safetensors and as a torch state dict."""
    import timm

    torch.manual_seed(1)
    state = timm.create_model("resnet18", num_classes=1000).state_dict()
    folder = tmp_path_factory.mktemp("weights")
    save_file({k: v.contiguous() for k, v in state.items()}, folder / "r18.safetensors")
    torch.save(state, folder / "r18.pth")
    return folder, state


@pytest.mark.parametrize("filename", ["r18.safetensors", "r18.pth"])
def test_pretrained_file_loads(resnet18_weights, filename):
    folder, state = resnet18_weights
    model = create_model("resnet18", pretrained_file=folder / filename, image_size=SMALL)
    loaded = model.backbone.state_dict()
    assert set(loaded) == set(state) - {"fc.weight", "fc.bias"}  # timm dropped the ImageNet classifier
    assert all(torch.equal(v, state[k]) for k, v in loaded.items())
    assert model(faces()).shape == (2, 7)


def test_pretrained_file_never_unpickles(tmp_path):
    marker = tmp_path / "executed"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"conv1.weight": Payload()}, tmp_path / "evil.pth")
    with pytest.raises(FerkitError, match="cannot read"):
        create_model("resnet18", pretrained_file=tmp_path / "evil.pth")
    assert not marker.exists()


def test_pretrained_file_mistakes(resnet18_weights, tmp_path):
    folder, state = resnet18_weights
    with pytest.raises(FerkitError, match="no such weights file"):
        create_model("resnet18", pretrained_file=tmp_path / "missing.safetensors")
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(FerkitError, match="cannot read"):
        create_model("resnet18", pretrained_file=tmp_path / "junk.safetensors")
    partial = {k: v for k, v in state.items() if not k.startswith("layer4.")}
    save_file(partial, tmp_path / "partial.safetensors")
    with pytest.raises(FerkitError, match="lacks 30 of the model's weights"):
        create_model("resnet18", pretrained_file=tmp_path / "partial.safetensors")
    extra = {**state, "layer4.2.conv1.weight": state["layer4.1.conv1.weight"].clone()}  # a deeper ResNet's file
    save_file({k: v.contiguous() for k, v in extra.items()}, tmp_path / "deeper.safetensors")
    with pytest.raises(FerkitError, match="holds 1 the model does not have"):
        create_model("resnet18", pretrained_file=tmp_path / "deeper.safetensors")


def test_pretrained_offline_without_cache(offline_hub):
    with pytest.raises(FerkitError, match="not in the local cache.*--pretrained-file"):
        create_model("resnet18", pretrained=True)


# ---- CBAM attention maps ---------------------------------------------------------------------------------------


def test_cbam_attention_maps():
    model = create_model("cbam_5cnn").train()
    maps = attention_maps(model, faces())
    assert [m["channel"].shape for m in maps] == [(2, c) for c in (64, 128, 256, 512, 512)]
    assert [m["spatial"].shape for m in maps] == [(2, 1, s, s) for s in (48, 24, 12, 6, 3)]
    assert maps[0]["name"] == "block1.3"
    for m in maps:
        for key in ("channel", "spatial"):
            assert not m[key].requires_grad
            assert 0 <= m[key].min() and m[key].max() <= 1
    assert model.training  # mode restored
    with pytest.raises(FerkitError, match="no CBAM"):
        attention_maps(create_model("fernet"), faces())


# ---- damaged model files ---------------------------------------------------------------------------------------


def test_damaged_checkpoints_are_refused_in_one_line_and_never_reach_the_network(tmp_path, monkeypatch):
    import copy
    import json

    from safetensors import safe_open
    from safetensors.torch import load_file

    from ferkit.models.checkpoint import load_checkpoint
    from ferkit.models.weights import get_weights

    src = get_weights("fer2013").path
    state = load_file(str(src))
    with safe_open(str(src), "pt") as f:
        header = f.metadata()
    meta = json.loads(header["ferkit"])

    def write(name, changes=None, text=None, tensors=None):
        m = copy.deepcopy(meta)
        for key, value in (changes or {}).items():
            *parents, last = key.split(".")
            target = m
            for p in parents:
                target = target[p]
            target[last] = value
        path = tmp_path / f"{name}.safetensors"
        save_file(tensors or state, str(path), metadata={**header, "ferkit": text or json.dumps(m)})
        return path

    nan = {k: v.clone() for k, v in state.items()}
    next(v for v in nan.values() if v.is_floating_point()).fill_(float("nan"))
    cases = [(write("json", text="{not json"), "not a JSON object"),
             (write("labels", {"labels": ["happy"]}), "two or more different names"),
             (write("input", {"input.size": "big"}), "whole numbers of pixels"),
             (write("arch", {"architecture": 7}), "no architecture name"),
             (write("width", {"kwargs.width": 32}), "do not fit the fernet"),
             (write("nan", tensors=nan), "NaN or infinite")]
    for path, message in cases:
        with pytest.raises(FerkitError, match=message):
            load_checkpoint(path)
    # A header asking for pretrained weights loads the file's own weights, without touching the network.
    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    model, _ = load_checkpoint(write("pretrained", {"kwargs.pretrained": True}))
    assert torch.equal(model.state_dict()["head.3.weight"].half(), state["head.3.weight"].half())
