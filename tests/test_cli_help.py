"""Help texts: one command serves models with different settings, so its help names no model's
own settings (only a command whose default is a shipped model may name that model)."""

from __future__ import annotations

import pytest

from audiodiff.cli import main
from audiodiff.pretrained import shipped_models

from .conftest import invoke


@pytest.mark.parametrize("name", sorted(main.commands))
def test_help_quotes_no_other_models_settings(name):
    result = invoke(name, "--help")
    assert result.exit_code == 0, result.output
    defaults = {p.default for p in main.commands[name].params}
    for model in shipped_models():
        if model not in defaults:  # e.g. demo --model small-speech: its own default, named
            assert model not in result.output, f"`{name} --help` quotes {model}"
