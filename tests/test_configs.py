"""``--set`` overrides: typed, checked against the fields, clear errors."""

import dataclasses

import pytest

from spatialav.configs.overrides import apply_overrides


@dataclasses.dataclass
class Inner:
    steps: int = 10
    lr: float = 1e-3
    on: bool = False
    name: str = "x"
    size: tuple[int, ...] = (1, 2)
    limit: float | None = None


@dataclasses.dataclass
class Outer:
    inner: Inner = dataclasses.field(default_factory=Inner)
    task: str = "avc"


def test_overrides_parse_by_field_type():
    cfg = apply_overrides(
        Outer(), ["inner.steps=7", "inner.lr=0.5", "inner.on=true", "task=avsa",
                  "inner.size=3,4,5", "inner.limit=2.5"]
    )
    assert cfg.inner == Inner(steps=7, lr=0.5, on=True, name="x", size=(3, 4, 5), limit=2.5)
    assert cfg.task == "avsa"
    assert apply_overrides(cfg, ["inner.limit=none"]).inner.limit is None
    assert Outer().inner.steps == 10  # the original is untouched


@pytest.mark.parametrize(
    "item,message",
    [
        ("inner.stpes=3", r"unknown field 'stpes' in Inner; valid fields: steps, lr"),
        ("inner.steps=many", r"inner.steps=many: expected a int"),
        ("inner.on=maybe", r"expected a bool"),
        ("inner=3", r"'inner' is a group"),
        ("task.x=1", r"'task' is a value"),
        ("steps", r"key=value"),
    ],
)
def test_bad_overrides_are_named(item, message):
    with pytest.raises(ValueError, match=message):
        apply_overrides(Outer(), [item])


@pytest.mark.parametrize("preset", ["tiny", "default", "gpu", "pod"])
def test_a_config_survives_its_json_form(preset):
    import json

    from spatialav import configs

    cfg = configs.get_config(preset, task="avsa-objects", fmt="stereo")
    back = configs.config_from_dict(json.loads(json.dumps(configs.to_dict(cfg))))
    assert back == cfg
    hash(back.data.pipeline)  # tuples again, not lists: device_inputs jits on it


def test_a_config_from_other_code_names_the_unknown_field():
    from spatialav import configs

    d = configs.to_dict(configs.get_config("tiny"))
    d["optim"]["momentum_schedule"] = 3
    with pytest.raises(ValueError, match=r"run.json: OptimConfig has no fields \['momentum_sch"):
        configs.config_from_dict(d, source="run.json")


def test_json_safe_makes_strict_json_of_metrics_and_configs():
    import json
    import math

    import jax.numpy as jnp
    import numpy as np

    from spatialav import configs

    x = {"a": (1, np.float32(0.5)), 3: {"nan": float("nan"), "jax": jnp.asarray(2.0),
                                        "np0d": np.array(7), "inf": math.inf}}
    safe = configs.json_safe(x)
    assert safe == {"a": [1, 0.5], "3": {"nan": None, "jax": 2.0, "np0d": 7, "inf": math.inf}}
    assert type(safe["3"]["jax"]) is float and type(safe["3"]["np0d"]) is int
    json.dumps(safe, allow_nan=True)  # every leaf a plain Python value
    cfg = configs.get_config("tiny")
    assert configs.config_from_dict(configs.json_safe(configs.to_dict(cfg))) == cfg
