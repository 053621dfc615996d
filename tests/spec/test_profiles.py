"""Profiles: which services are enabled, and what goes away with the disabled ones.

Expected values were checked against `docker compose --profile ... config` (v2.40).
"""

from __future__ import annotations

from orchestrator.spec.errors import SourceMap
from orchestrator.spec.normalize import normalize
from orchestrator.spec.profiles import (
    active_profiles,
    all_profiles,
    apply_profiles,
    disabled_services,
)

VOLUME = {"type": "volume", "source": "v2", "target": "/x", "volume": {}}


def document() -> dict:
    return {
        "services": {
            "a": {"image": "x"},
            "b": {"image": "x", "profiles": ["dbg"], "networks": {"n2": None},
                  "volumes": [VOLUME]},
            "c": {"image": "x", "profiles": ["other", "dbg"]},
        },
        "networks": {"n2": {}},
        "volumes": {"v2": {}},
    }


def normalized(data: dict) -> dict:
    return normalize(data, "shop", "/srv/shop", {}, SourceMap("compose.yaml"))


def test_services_without_profiles_are_always_enabled() -> None:
    model = apply_profiles(normalized(document()), set())
    assert list(model["services"]) == ["a"]


def test_a_service_is_enabled_by_any_of_its_profiles() -> None:
    model = apply_profiles(normalized(document()), {"other"})
    assert list(model["services"]) == ["a", "c"]
    assert model["services"]["c"]["profiles"] == ["other", "dbg"]


def test_star_enables_every_service() -> None:
    model = apply_profiles(normalized(document()), {"*"})
    assert list(model["services"]) == ["a", "b", "c"]


def test_unknown_profile_is_not_an_error() -> None:
    model = apply_profiles(normalized(document()), {"nonexistent"})
    assert list(model["services"]) == ["a"]


def test_resources_only_disabled_services_use_are_dropped() -> None:
    model = apply_profiles(normalized(document()), {"other"})
    assert model["networks"] == {"default": {"name": "shop_default", "ipam": {}}}
    assert "volumes" not in model


def test_resources_of_enabled_services_stay() -> None:
    model = apply_profiles(normalized(document()), {"dbg"})
    assert model["networks"] == {
        "default": {"name": "shop_default", "ipam": {}},
        "n2": {"name": "shop_n2", "ipam": {}},
    }
    assert model["volumes"] == {"v2": {"name": "shop_v2"}}


def test_profiles_applied_before_normalize_give_the_same_model() -> None:
    before = normalized(apply_profiles(document(), {"other"}))
    after = apply_profiles(normalized(document()), {"other"})
    assert before == after


def test_default_network_declared_but_unwritten_stays_before_normalize() -> None:
    data = {"services": {"a": {"image": "x"}}, "networks": {"default": {"driver": "bridge"}},
            "volumes": {}}
    data["services"]["b"] = {"image": "x", "profiles": ["p"]}
    assert apply_profiles(data, set())["networks"] == {"default": {"driver": "bridge"}}


def test_dependency_on_a_disabled_service_is_kept_for_the_model_check_to_report() -> None:
    data = normalized({"services": {
        "a": {"image": "x", "depends_on": {"b": {"condition": "service_started",
                                                  "required": True}}},
        "b": {"image": "x", "profiles": ["dbg"]},
    }})
    model = apply_profiles(data, set())
    assert list(model["services"]) == ["a"]
    assert "b" in model["services"]["a"]["depends_on"]


def test_all_profiles_lists_every_declared_profile_sorted_once() -> None:
    data = document()
    data["services"]["z"] = {"image": "x", "profiles": ["zeta", "alpha", ""]}
    assert all_profiles(data) == ["", "alpha", "dbg", "other", "zeta"]


def test_active_profiles_expand_star_and_ignore_blanks() -> None:
    assert active_profiles(document(), ["dbg", "", " "]) == {"dbg"}
    assert active_profiles(document(), ["*"]) == {"*", "dbg", "other"}


def test_disabled_services_are_those_the_profiles_remove() -> None:
    assert list(disabled_services(document(), {"other"})) == ["b"]
    assert disabled_services(document(), {"*"}) == {}


def test_disabled_service_env_file_is_not_read_when_profiles_apply_first() -> None:
    data = {"services": {
        "a": {"image": "x"},
        "b": {"image": "x", "profiles": ["dbg"],
              "env_file": [{"path": "/nonexistent/nothere.env", "required": True}]},
    }}
    model = normalized(apply_profiles(data, set()))
    assert list(model["services"]) == ["a"]
