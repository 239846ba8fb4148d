"""Strict sections: unknown keys are errors with a did-you-mean, one readable phrase per problem."""

from __future__ import annotations

import pytest
from pydantic import Field, ValidationError

from gramx.errors import ConfigError
from gramx.files.validation import Section, validate


class Optim(Section):
    lr: float = Field(1e-3, gt=0)
    epochs: int = 1


class Run(Section):
    dim: int
    optim: Optim = Field(default_factory=Optim)


def test_a_valid_file_gives_the_model():
    run = validate(Run, {"dim": 8, "optim": {"lr": 0.5}}, "run.yaml")
    assert run.dim == 8 and run.optim == Optim(lr=0.5, epochs=1)


def test_an_unknown_key_names_its_path_the_allowed_keys_and_the_closest():
    with pytest.raises(ConfigError) as info:
        validate(Run, {"dim": 8, "optim": {"epoch": 3}}, "run.yaml", hint="see gramx config reference")
    assert str(info.value) == ("run.yaml: unknown key 'optim.epoch'; allowed keys: epochs, lr "
                               "(did you mean 'epochs'?)")
    assert info.value.hint == "see gramx config reference"


def test_every_problem_is_one_phrase_and_a_prefix_places_the_data_in_its_file():
    with pytest.raises(ConfigError) as info:
        validate(Optim, {"lr": -1, "epochs": "many"}, "run.yaml", prefix=("optim",))
    problems = str(info.value).removeprefix("run.yaml: ").split("; ")
    assert len(problems) == 2
    assert problems[0].startswith("optim.lr: Input should be greater than 0") and "(got -1)" in problems[0]
    assert problems[1].startswith("optim.epochs: ") and "(got 'many')" in problems[1]
    with pytest.raises(ConfigError, match="run.yaml: missing key 'dim'"):
        validate(Run, {}, "run.yaml")


def test_sections_validate_assignments_too():
    optim = Optim()
    with pytest.raises(ValidationError):
        optim.lr = 0
