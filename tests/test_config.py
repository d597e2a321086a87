"""Recipes and overrides: any value a user can type is a valid config or one ConfigError, never a crash."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ferkit.config import ConfigError, RunConfig, check_config, load_config, set_epochs


def config_keys() -> list[str]:
    keys = []
    for section in dataclasses.fields(RunConfig):
        default = getattr(RunConfig(), section.name)
        if dataclasses.is_dataclass(default):
            keys += [f"{section.name}.{f.name}" for f in dataclasses.fields(default)]
    return keys


VALUES = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["0", "-1", ".nan", ".inf", "-.inf", "1e9", "[1", "{a: 1}", "[]", "~", "true", "!!binary x",
                     "!!python/object:os.system x", "'", "#", "a #b", "0.5", "3", "[happy, sad]"]),
    st.integers(-10**9, 10**9).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
)


@settings(max_examples=400, deadline=None)
@given(key=st.sampled_from(config_keys()), value=VALUES)
def test_any_override_is_a_config_or_one_config_error(key, value):
    try:
        cfg = load_config(None, [f"{key}={value}"])
    except ConfigError as e:
        assert str(e) and "\n" not in str(e)
        return
    assert check_config(cfg) is cfg  # what is accepted passes the value checks


@settings(max_examples=100, deadline=None)
@given(epochs=st.one_of(st.integers(-5, 5), st.booleans(), st.floats(allow_nan=True)))
def test_set_epochs_takes_only_positive_whole_numbers(epochs):
    cfg = load_config(None, ["train.stages=[{epochs: 4}, {epochs: 2}]"])
    if isinstance(epochs, int) and not isinstance(epochs, bool) and epochs >= 1:
        set_epochs(cfg, epochs)
        assert cfg.train.epochs == epochs and [s.epochs for s in cfg.train.stages] == [min(4, epochs), min(2, epochs)]
    else:
        with pytest.raises(ConfigError, match="epochs must be a whole number"):
            set_epochs(cfg, epochs)


@pytest.mark.parametrize("override, message", [
    ("train.distill=0", "train.distill is 0.0; it must be above 0 and at most 1"),
    ("train.distill=1.5", "train.distill is 1.5; it must be above 0 and at most 1"),
    ("optim.momentum=1", "optim.momentum is 1.0; it must be at least 0 and below 1"),
    ("train.label_smoothing=-0.1", "train.label_smoothing is -0.1; it must be at least 0 and below 1"),
    ("schedule.pct_start=1", "schedule.pct_start is 1.0; it must be above 0 and below 1"),
])
def test_values_out_of_range_are_named_with_their_range(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(None, [override])
    assert str(e.value) == message


@pytest.mark.parametrize("override", ["train.distill=1", "train.distill=0.01", "optim.momentum=0",
                                      "train.label_smoothing=0"])
def test_values_at_the_closed_end_of_their_range_are_taken(override):
    key, value = override.split("=")
    section, name = key.split(".")
    assert getattr(getattr(load_config(None, [override]), section), name) == float(value)
