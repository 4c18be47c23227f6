"""RegistrationConfig: every tunable documented with its reason; immutable."""

import dataclasses

import pytest

from autoreg.config import RegistrationConfig


def test_every_tunable_is_documented_with_a_reason():
    doc = RegistrationConfig.__doc__
    for field in dataclasses.fields(RegistrationConfig):
        assert f"\n    {field.name} : " in doc, f"{field.name} is not documented in RegistrationConfig"
        entry = doc.split(f"\n    {field.name} : ", 1)[1].split("\n    ", 2)
        assert len(entry) > 1 and len(entry[1].strip()) > 15, f"{field.name} has no explanation"


def test_config_is_frozen_and_derives_variants():
    config = RegistrationConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.min_inliers = 3  # type: ignore[misc]
    assert config.with_(min_inliers=3).min_inliers == 3 and config.min_inliers != 3
