"""The Dist helper: torchrun's environment read and checked in one line; one process does nothing."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gptlearn.dist import Dist
from gptlearn.errors import GptlearnError

ENV = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_one_process_without_torchrun(clean_env):
    d = Dist.from_env()
    assert (d.rank, d.local_rank, d.world, d.active, d.master) == (0, 0, 1, False, True)
    t = torch.tensor([3.0])
    assert d.mean(t) is t and t.item() == 3.0  # nothing to average
    assert d.gather("x") == ["x"]
    model = torch.nn.Linear(2, 2)
    assert d.wrap(model, torch.device("cpu")) is model
    with d.no_sync(model, last=False):
        pass
    d.barrier()
    assert d.on_master(lambda: 5, 0) == 5


@pytest.mark.parametrize("env, message", [
    ({"LOCAL_RANK": "x", "RANK": "0", "WORLD_SIZE": "1"}, "LOCAL_RANK must be an integer"),
    ({"RANK": "0", "WORLD_SIZE": "2"}, "MASTER_ADDR and MASTER_PORT are not set"),
    ({"RANK": "0", "WORLD_SIZE": "2", "MASTER_ADDR": "localhost"}, "MASTER_PORT is not set"),
    ({"RANK": "0", "WORLD_SIZE": "-1"}, "WORLD_SIZE must be an integer from 1"),
    ({"RANK": "0", "WORLD_SIZE": "0"}, "WORLD_SIZE must be an integer from 1"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_ADDR": "a", "MASTER_PORT": "1"}, "RANK must be an integer from 0 to 1"),
    ({"RANK": "0", "WORLD_SIZE": "1e9"}, "WORLD_SIZE must be an integer"),
])
def test_a_broken_environment_is_one_line(clean_env, env, message):
    for k, v in env.items():
        clean_env.setenv(k, v)
    with pytest.raises(GptlearnError, match=message) as e:
        Dist.from_env()
    assert "\n" not in str(e.value)


@settings(max_examples=100, deadline=None)
@given(values=st.fixed_dictionaries({}, optional={name: st.text(max_size=6).filter(lambda s: "\0" not in s)
                                                  for name in ENV}))
def test_any_environment_gives_a_place_or_one_line(values):
    """Whatever torchrun's variables hold, from_env() returns a consistent place or refuses in one line."""
    import os

    saved = {k: os.environ.pop(k, None) for k in ENV}
    try:
        os.environ.update(values)
        try:
            d = Dist.from_env()
        except GptlearnError as e:
            assert "\n" not in str(e)
        else:
            assert 1 <= d.world and 0 <= d.rank < d.world and 0 <= d.local_rank < d.world
            if d.world > 1:
                assert values.get("MASTER_ADDR", "").strip() and values.get("MASTER_PORT", "").strip()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None)
            if v is not None:
                os.environ[k] = v
