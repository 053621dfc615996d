"""The reconcile planner: desired state + actual containers -> the actions that converge.

Pure and fast: no runtime, no kernel. `apply` below plays a plan against a
list of containers the way the scheduler and runtime would, so a plan can be
checked by what a user would see afterwards, and random states can be shown
to converge in one step.
"""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orchestrator.engine.planner import (
    ACTION_KINDS,
    Actual,
    ContainerSummary,
    Desired,
    Plan,
    UpOptions,
    describe,
    plan_down,
    plan_up,
    replica_count,
    what_changed,
)
from orchestrator.spec.errors import SourceMap, StackError
from orchestrator.spec.model import Stack

PROJECT = "proj"


# ---- helpers ---------------------------------------------------------------------------------


def service(**extra):
    """A normalized service on the default network, with `extra` keys."""
    return {"command": None, "entrypoint": None, "image": "busybox",
            "networks": {"default": None}, **extra}


def model(networks=None, volumes=None, **services):
    """A normalized model: the networks and named volumes the services use are declared."""
    declared_networks = dict(networks or {})
    declared_volumes = dict(volumes or {})
    for config in services.values():
        for key in config.get("networks") or {}:
            declared_networks.setdefault(key, {"name": f"{PROJECT}_{key}", "ipam": {}})
        for mount in config.get("volumes") or ():
            if mount.get("type") == "volume":
                key = mount["source"]
                declared_volumes.setdefault(key, {"name": f"{PROJECT}_{key}"})
    result = {"name": PROJECT, "services": services}
    if declared_networks:
        result["networks"] = declared_networks
    if declared_volumes:
        result["volumes"] = declared_volumes
    return result


def config_hash(stack_model, name):
    return Stack(PROJECT, "/", [], stack_model, SourceMap(), [], []).config_hash(name)


def desired(stack_model, *selected, known=None, disabled=(), **options):
    hashes = {name: config_hash(stack_model, name) for name in stack_model["services"]}
    known_configs = {config_hash(m, name): m["services"][name]
                     for m in known or () for name in m["services"]}
    return Desired(PROJECT, stack_model, hashes, list(selected), UpOptions(**options),
                   known_configs, disabled)


_ids = itertools.count(1)


def container(stack_model, of, number=1, status="running", /, *, config=None, **extra):
    """A container of service `of` made from `config` (default: the current one)."""
    source = model(**{of: config}) if config is not None else stack_model
    fields = {"id": f"c{next(_ids):04d}", "name": f"{PROJECT}-{of}-{number}",
              "service": of, "number": number, "config_hash": config_hash(source, of),
              "status": status, "exit_code": 0 if status == "exited" else None, **extra}
    return ContainerSummary(**fields)


def up(stack_model, containers=(), *selected, networks=None, volumes=None, **options) -> Plan:
    return plan_up(desired(stack_model, *selected, **options),
                   Actual(list(containers), networks, volumes))


def ids(plan):
    return [a.id for a in plan.actions]


def action(plan, action_id):
    [found] = [a for a in plan.actions if a.id == action_id]
    return found


def apply(plan, want: Desired, containers):
    """What the containers look like after every action of `plan` succeeded."""
    state = {c.id: c for c in containers}
    for a in plan.actions:
        if a.kind == "create":
            new = ContainerSummary(f"n{next(_ids):04d}", a.name, a.service, a.number,
                                   want.config_hashes[a.service], "created")
            state[new.id] = new
        elif a.kind in ("start", "restart", "stop", "remove"):
            target = a.container_id or next(c.id for c in state.values() if c.name == a.name
                                            and c.service == a.service and not c.oneoff)
            if a.kind == "remove":
                del state[target]
            else:
                status = "exited" if a.kind == "stop" else "running"
                state[target] = ContainerSummary(**{**state[target].__dict__, "status": status})
    return list(state.values())


def assert_well_formed(plan):
    """Ids unique, kinds known, every prerequisite listed before the action that needs it."""
    seen = set()
    for a in plan.actions:
        assert a.kind in ACTION_KINDS
        assert a.id not in seen
        assert set(a.after) <= seen, (a.id, a.after)
        assert set(a.optional) <= set(a.after)
        seen.add(a.id)
    json.dumps(plan.to_json())


# ---- converging ------------------------------------------------------------------------------


WEB = model(web=service(environment={"DEBUG": "false"}), db=service(image="postgres"))


def test_first_up_creates_and_starts_every_service_on_its_network():
    plan = up(WEB)
    assert ids(plan) == ["ensure_network:default", "create:db:1", "start:db:1",
                         "create:web:1", "start:web:1"]
    assert action(plan, "create:web:1").reason == "create web"
    assert describe(plan)[1:3] == ["Container proj-db-1  Create", "Container proj-db-1  Start"]
    assert action(plan, "create:web:1").after == ("ensure_network:default",)
    assert action(plan, "start:web:1").after == ("create:web:1",)
    assert action(plan, "create:web:1").name == "proj-web-1"
    assert action(plan, "ensure_network:default").name == "proj_default"
    assert_well_formed(plan)


def test_unchanged_service_is_left_alone():
    containers = [container(WEB, "web"), container(WEB, "db")]
    plan = up(WEB, containers)
    assert plan.actions == []
    assert describe(plan) == []


def test_changed_environment_recreates_only_that_service():
    old = model(web=service(environment={"DEBUG": "false"}))["services"]["web"]
    new = model(web=service(environment={"DEBUG": "true"}), db=service(image="postgres"))
    web = container(new, "web", config=old)
    plan = plan_up(desired(new, known=[model(web=old)]),
                   Actual([web, container(new, "db")], networks={"proj_default"}))
    assert ids(plan) == ["stop:web:1", "remove:web:1", "create:web:1", "start:web:1"]
    assert {a.reason for a in plan.actions} == {"recreate web: environment.DEBUG changed"}
    assert action(plan, "stop:web:1").container_id == web.id
    assert action(plan, "remove:web:1").after == ("stop:web:1",)
    assert action(plan, "create:web:1").after == ("remove:web:1",)
    assert describe(plan) == ["Container proj-web-1  Recreate (environment.DEBUG changed)",
                              "Container proj-web-1  Start"]


def test_recreation_without_the_old_config_says_config_changed():
    old = service(image="busybox:old")
    plan = up(WEB, [container(WEB, "web", config=old), container(WEB, "db")])
    assert action(plan, "create:web:1").reason == "recreate web: config changed"


def test_recreation_names_the_first_few_changes():
    old = {"image": "a", "environment": {"A": "1", "B": "2"}, "ports": [{"target": 80}]}
    new = {"image": "b", "environment": {"A": "2"}, "ports": [{"target": 81}], "user": "x"}
    assert what_changed(old, new) == "environment.A, environment.B, image and 2 more changed"
    assert what_changed({"command": ["a"]}, {"command": ["a", "b"]}) == "command changed"
    assert what_changed({"scale": 1, "deploy": {"replicas": 2}, "image": "a"},
                        {"scale": 3, "deploy": {"replicas": 4}, "image": "b"}) == "image changed"
    assert what_changed(new, new) == "config changed"


def test_stopped_container_with_the_same_config_is_started():
    web = container(WEB, "web", status="exited", exit_code=137)
    plan = up(WEB, [web, container(WEB, "db")], networks={"proj_default"})
    assert ids(plan) == ["start:web:1"]
    assert action(plan, "start:web:1").container_id == web.id
    assert action(plan, "start:web:1").reason == "start web: exited (137)"


def test_created_container_is_started():
    plan = up(WEB, [container(WEB, "web", status="created"), container(WEB, "db")],
              networks={"proj_default"})
    assert action(plan, "start:web:1").detail == "created, never started"


def test_paused_container_is_left_as_it_is():
    plan = up(WEB, [container(WEB, "web", status="paused"), container(WEB, "db")])
    assert plan.actions == []


def test_force_recreate_recreates_unchanged_containers():
    plan = up(WEB, [container(WEB, "web"), container(WEB, "db")], "web", force_recreate=True,
              networks={"proj_default"})
    assert ids(plan) == ["stop:web:1", "remove:web:1", "create:web:1", "start:web:1"]
    assert action(plan, "create:web:1").reason == "recreate web: --force-recreate"


def test_no_recreate_keeps_changed_containers_and_only_starts_stopped_ones():
    old = service(image="old")
    plan = up(WEB, [container(WEB, "web", config=old, status="exited"),
                    container(WEB, "db", config=old)], no_recreate=True,
              networks={"proj_default"})
    assert ids(plan) == ["start:web:1"]


def test_force_and_no_recreate_together_is_an_error():
    with pytest.raises(StackError, match="can't be used together"):
        up(WEB, force_recreate=True, no_recreate=True)


def test_no_start_creates_without_starting():
    old = service(image="old")
    plan = up(WEB, [container(WEB, "db", config=old), container(WEB, "web", status="exited")],
              no_start=True, networks={"proj_default"})
    assert ids(plan) == ["stop:db:1", "remove:db:1", "create:db:1"]


def test_timeout_is_given_to_stops():
    plan = up(WEB, [container(WEB, "web", config=service())], "web", no_deps=True, timeout=3)
    assert action(plan, "stop:web:1").timeout == 3


# ---- scale -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "override", "expected"), [
    ({}, None, 1),
    ({"scale": 2}, None, 2),
    ({"deploy": {"replicas": 3}}, None, 3),
    ({"deploy": {"replicas": 3}, "scale": 3}, 5, 5),
    ({"deploy": {"replicas": 3}}, 0, 0),
    ({"container_name": "only"}, 1, 1),
])
def test_replicas_follow_scale_flag_then_deploy_replicas_then_scale(config, override, expected):
    assert replica_count("web", config, override) == expected


def test_container_name_cannot_scale():
    with pytest.raises(StackError, match='container_name "front".*3 containers'):
        up(model(web=service(container_name="front")), scale={"web": 3})


def test_negative_scale_is_an_error():
    with pytest.raises(StackError, match="0 or more"):
        up(WEB, scale={"web": -1})


def test_scale_of_unknown_service_is_an_error():
    with pytest.raises(StackError, match='no such service: "wbe".*did you mean "web"'):
        up(WEB, scale={"wbe": 2})


def test_scale_up_creates_the_missing_numbers():
    web3 = model(web=service(deploy={"replicas": 3}))
    plan = up(web3, [container(web3, "web", 2)], networks={"proj_default"})
    assert ids(plan) == ["create:web:1", "start:web:1", "create:web:3", "start:web:3"]
    assert action(plan, "create:web:3").reason == "create web: scale up to 3"


def test_scale_down_removes_highest_numbers_first():
    web = model(web=service())
    containers = [container(web, "web", n) for n in (1, 2, 3, 4)]
    plan = up(web, containers, scale={"web": 2})
    assert [a.id for a in plan.actions if a.kind == "remove"] == ["remove:web:4", "remove:web:3"]
    assert action(plan, "remove:web:4").after == ("stop:web:4",)
    assert action(plan, "stop:web:3").reason == "remove proj-web-3: scale down to 2"


def test_scaling_to_zero_removes_every_container_and_ensures_nothing():
    web = model(web=service())
    plan = up(web, [container(web, "web", status="exited")], scale={"web": 0})
    assert ids(plan) == ["remove:web:1"]


def test_scale_change_alone_does_not_recreate():
    one, two = model(web=service(scale=1)), model(web=service(scale=2))
    plan = up(two, [container(one, "web")], networks={"proj_default"})
    assert ids(plan) == ["create:web:2", "start:web:2"]


def test_container_name_names_the_container():
    named = model(web=service(container_name="front"))
    assert action(up(named), "create:web:1").name == "front"


# ---- orphans, one-offs, duplicates -------------------------------------------------------------


def test_orphans_are_warned_and_removed_only_when_asked():
    gone = container(WEB, "old", config=service())
    current = [container(WEB, "web"), container(WEB, "db")]
    warned = up(WEB, [gone, *current])
    assert warned.actions == []
    assert "orphan containers (proj-old-1)" in warned.warnings[0]
    assert "--remove-orphans" in warned.warnings[0]
    removed = up(WEB, [gone, *current], remove_orphans=True)
    assert ids(removed) == ["stop:old:1", "remove:old:1"]
    assert removed.warnings == []
    assert action(removed, "remove:old:1").reason == (
        "remove proj-old-1: orphan: service old is not in the file")


def test_containers_of_disabled_services_are_not_orphans():
    tools = container(WEB, "tools", config=service())
    plan = plan_up(desired(WEB, disabled=["tools"], remove_orphans=True),
                   Actual([tools, container(WEB, "web"), container(WEB, "db")]))
    assert plan.actions == [] and plan.warnings == []


def test_unselected_services_are_neither_touched_nor_orphans():
    plan = up(WEB, [container(WEB, "db", config=service())], "web", no_deps=True,
              networks={"proj_default"})
    assert ids(plan) == ["create:web:1", "start:web:1"]


def test_oneoff_containers_are_ignored():
    oneoff = container(WEB, "web", config=service(image="old"), oneoff=True, name="proj-web-run")
    orphan_run = container(WEB, "gone", config=service(), oneoff=True)
    plan = up(WEB, [oneoff, orphan_run, container(WEB, "web"), container(WEB, "db")],
              remove_orphans=True)
    assert plan.actions == [] and plan.warnings == []


def test_duplicate_numbers_keep_the_matching_running_container():
    stale = container(WEB, "web", config=service(image="old"), status="exited")
    good = container(WEB, "web")
    other = container(WEB, "web", status="exited")
    plan = up(WEB, [stale, good, other, container(WEB, "db")])
    assert set(ids(plan)) == {f"remove:web:1:{stale.id}", f"remove:web:1:{other.id}"}
    assert action(plan, f"remove:web:1:{stale.id}").detail == "duplicate of proj-web-1"


def test_recreating_a_replica_waits_for_its_duplicates_to_go():
    a = container(WEB, "web", config=service(image="old"))
    b = container(WEB, "web", config=service(image="older"), status="exited")
    plan = up(WEB, [a, b, container(WEB, "db")], networks={"proj_default"})
    dropped = f"remove:web:1:{b.id}"
    assert action(plan, dropped).container_id == b.id
    assert set(action(plan, "create:web:1").after) == {dropped, "remove:web:1"}


# ---- selection and dependencies ----------------------------------------------------------------


def chain(condition="service_started", **entry):
    return model(
        db=service(image="postgres"),
        web=service(depends_on={"db": {"condition": condition, "required": True, **entry}}),
        proxy=service(depends_on={"web": {"condition": "service_started", "required": True}}),
    )


def test_selecting_a_service_brings_its_dependencies():
    plan = up(chain(), (), "web")
    assert {a.service for a in plan.actions if a.service} == {"db", "web"}


def test_no_deps_selects_only_the_named_services():
    plan = up(chain(), (), "web", no_deps=True)
    assert {a.service for a in plan.actions if a.service} == {"web"}
    assert action(plan, "start:web:1").after == ("create:web:1",)


def test_unknown_service_is_an_error_with_a_suggestion():
    with pytest.raises(StackError, match='no such service: "wbe".*did you mean "web"'):
        up(chain(), (), "wbe")


def test_service_started_dependency_waits_for_its_start():
    plan = up(chain())
    assert ids(plan) == ["ensure_network:default", "create:db:1", "start:db:1",
                         "create:web:1", "start:web:1", "create:proxy:1", "start:proxy:1"]
    assert set(action(plan, "start:web:1").after) == {"create:web:1", "start:db:1"}
    assert set(action(plan, "create:web:1").after) == {"ensure_network:default", "create:db:1"}
    assert_well_formed(plan)


def test_running_dependency_does_not_hold_back_a_dependent():
    stack = chain()
    plan = up(stack, [container(stack, "db")], "web", networks={"proj_default"})
    assert ids(plan) == ["create:web:1", "start:web:1"]
    assert action(plan, "start:web:1").after == ("create:web:1",)


def test_service_healthy_dependency_waits_for_health():
    plan = up(chain("service_healthy"), networks={"proj_default"})
    wait = action(plan, "wait_healthy:db")
    assert wait.after == ("start:db:1",)
    assert wait.condition.kind == "service_healthy"
    assert wait.condition.numbers == (1,) and wait.condition.containers == ("proj-db-1",)
    assert wait.reason == "wait for db to be healthy: web depends on it"
    assert set(action(plan, "start:web:1").after) == {"create:web:1", "wait_healthy:db"}
    assert ids(plan).index("wait_healthy:db") < ids(plan).index("start:web:1")
    assert "Container proj-db-1  Wait healthy (web needs it)" in describe(plan)


def test_healthy_dependency_already_running_is_checked_again_before_a_dependent_starts():
    stack = chain("service_healthy")
    plan = up(stack, [container(stack, "db", health="healthy")], "web",
              networks={"proj_default"})
    assert ids(plan) == ["wait_healthy:db", "create:web:1", "start:web:1"]
    assert action(plan, "wait_healthy:db").after == ()


def test_one_wait_serves_every_dependent_and_covers_every_replica():
    needs_db = {"db": {"condition": "service_healthy", "required": True}}
    stack = model(db=service(scale=2), a=service(depends_on=needs_db),
                  b=service(depends_on=needs_db))
    plan = up(stack, networks={"proj_default"})
    wait = action(plan, "wait_healthy:db")
    assert wait.after == ("start:db:1", "start:db:2")
    assert wait.condition.numbers == (1, 2)
    assert wait.detail == "a, b need it"
    assert "wait_healthy:db" in action(plan, "start:b:1").after


def test_service_completed_successfully_waits_for_exit():
    stack = model(migrate=service(), web=service(depends_on={
        "migrate": {"condition": "service_completed_successfully", "required": True}}))
    plan = up(stack, networks={"proj_default"})
    assert action(plan, "wait_completed:migrate").condition.kind == (
        "service_completed_successfully")
    assert "wait_completed:migrate" in action(plan, "start:web:1").after


def test_dependency_scaled_to_zero_is_not_waited_for():
    plan = up(chain("service_healthy"), scale={"db": 0}, networks={"proj_default"})
    assert "wait_healthy:db" not in ids(plan)


def test_no_start_waits_for_nothing():
    plan = up(chain("service_healthy"), no_start=True, networks={"proj_default"})
    assert [a.kind for a in plan.actions] == ["create"] * 3


def test_optional_dependency_orders_but_does_not_block():
    plan = up(chain("service_healthy", required=False), networks={"proj_default"})
    start = action(plan, "start:web:1")
    assert "wait_healthy:db" in start.after and start.optional == ("wait_healthy:db",)
    assert action(plan, "create:web:1").optional == ("create:db:1",)
    assert action(plan, "start:proxy:1").optional == ()


def test_restart_true_restarts_dependents_when_a_dependency_is_recreated():
    stack = chain(restart=True)
    containers = [container(stack, "db", config=service(image="old")),
                  container(stack, "web"), container(stack, "proxy")]
    plan = up(stack, containers, networks={"proj_default"})
    assert ids(plan) == ["stop:db:1", "remove:db:1", "create:db:1", "start:db:1",
                         "restart:web:1"]
    restart = action(plan, "restart:web:1")
    assert restart.reason == "restart web: db was recreated"
    assert restart.after == ("start:db:1",)
    assert restart.container_id == containers[1].id


def test_without_restart_true_dependents_keep_running():
    stack = chain()
    plan = up(stack, [container(stack, "db", config=service(image="old")),
                      container(stack, "web"), container(stack, "proxy")],
              networks={"proj_default"})
    assert {a.service for a in plan.actions} == {"db"}


def test_restart_true_leaves_an_unselected_dependent_alone():
    stack = chain(restart=True)
    plan = up(stack, [container(stack, "db", config=service(image="old")),
                      container(stack, "web")], "db", networks={"proj_default"})
    assert {a.service for a in plan.actions} == {"db"}


def test_shared_network_namespace_follows_a_recreated_service():
    stack = model(vpn=service(), app={"image": "x", "command": None, "entrypoint": None,
                                     "network_mode": "service:vpn",
                                     "depends_on": {"vpn": {"condition": "service_started",
                                                            "required": True, "restart": True}}})
    plan = up(stack, [container(stack, "vpn", config=service(image="old")),
                      container(stack, "app")], networks={"proj_default"})
    assert action(plan, "create:app:1").reason == (
        "recreate app: vpn was recreated and this service shares its network namespace")
    assert "restart:app:1" not in ids(plan)


# ---- networks and volumes ----------------------------------------------------------------------


def test_networks_and_volumes_are_ensured_before_the_containers_that_use_them():
    stack = model(
        networks={"outside": {"name": "corp", "external": True}},
        db=service(networks={"back": None},
                   volumes=[{"type": "volume", "source": "data", "target": "/d"},
                            {"type": "bind", "source": "/srv", "target": "/s"}]),
        web=service(networks={"back": None, "front": None, "outside": None}),
    )
    plan = up(stack)
    assert ids(plan)[:5] == ["ensure_network:back", "ensure_network:front",
                             "ensure_network:outside", "ensure_volume:data", "create:db:1"]
    assert action(plan, "ensure_network:outside").external
    assert action(plan, "ensure_network:outside").change == "Check"
    assert not action(plan, "ensure_network:back").external
    assert set(action(plan, "create:db:1").after) == {"ensure_network:back",
                                                      "ensure_volume:data"}
    assert action(plan, "ensure_volume:data").name == "proj_data"
    assert action(plan, "ensure_network:back").reason == (
        "ensure network proj_back: used by db, web")


def test_reasons_stay_short_however_many_services_are_involved():
    stack = model(**{f"s{i}": service() for i in range(5)})
    assert action(up(stack), "ensure_network:default").detail == (
        "used by s0, s1, s2 and 2 more")


def test_existing_networks_are_not_ensured_again():
    plan = up(WEB, networks={"proj_default"})
    assert "ensure_network:default" not in ids(plan)


def test_a_missing_network_is_created_even_when_no_container_changes():
    plan = up(WEB, [container(WEB, "web"), container(WEB, "db")], networks=set())
    assert ids(plan) == ["ensure_network:default"]
    assert describe(plan) == ["Network proj_default  Create (used by db, web)"]


def test_missing_external_network_is_an_error_before_anything_changes():
    stack = model(networks={"default": {"name": "corp", "external": True}}, web=service())
    with pytest.raises(StackError, match='network "corp" is declared external'):
        up(stack, networks={"other"})


# ---- whole plans -------------------------------------------------------------------------------


SERVICES = ["a", "b", "c"]


@st.composite
def scenarios(draw):
    """A random model over three services and a random set of their containers."""
    services = {}
    for i, name in enumerate(SERVICES):
        depends = {}
        for dep in SERVICES[:i]:
            if draw(st.booleans()):
                depends[dep] = {
                    "condition": draw(st.sampled_from(
                        ["service_started", "service_healthy", "service_completed_successfully"])),
                    "required": draw(st.booleans()),
                    **({"restart": True} if draw(st.booleans()) else {}),
                }
        extra = {"depends_on": depends} if depends else {}
        services[name] = service(image=draw(st.sampled_from(["x", "y"])), scale=draw(
            st.integers(0, 3)), **extra)
    stack = model(**services)
    containers = []
    for name in [*SERVICES, "gone"]:
        for number in draw(st.lists(st.integers(1, 4), max_size=4)):
            config = service(image=draw(st.sampled_from(["x", "y"])))
            status = draw(st.sampled_from(["created", "running", "paused", "exited"]))
            containers.append(container(stack, name, number, status, config=config))
    options = draw(st.fixed_dictionaries({
        "force_recreate": st.booleans(), "remove_orphans": st.booleans(),
        "no_deps": st.booleans()}))
    selection = draw(st.lists(st.sampled_from(SERVICES), max_size=2, unique=True))
    return stack, containers, options, selection


@settings(max_examples=300, deadline=None)
@given(scenarios())
def test_applying_a_plan_converges_and_a_second_up_does_nothing(scenario):
    stack, containers, options, selection = scenario
    want = desired(stack, *selection, **options)
    plan = plan_up(want, Actual(containers, networks={"proj_default"}))
    assert_well_formed(plan)
    after = apply(plan, want, containers)
    again = plan_up(desired(stack, *selection, **{**options, "force_recreate": False}),
                    Actual(after, networks={"proj_default"}))
    assert again.actions == []


def test_plan_serializes_for_the_api():
    document = up(chain("service_healthy")).to_json()
    assert json.loads(json.dumps(document))["actions"][0]["id"] == "ensure_network:default"


# ---- down --------------------------------------------------------------------------------------


def test_down_stops_dependents_before_their_dependencies():
    stack = chain()
    running = [container(stack, name) for name in ("db", "web", "proxy")]
    plan = plan_down(PROJECT, Actual(running), stack)
    assert ids(plan)[:2] == ["stop:proxy:1", "remove:proxy:1"]
    assert action(plan, "stop:web:1").after == ("stop:proxy:1",)
    assert set(action(plan, "stop:db:1").after) == {"stop:web:1", "stop:proxy:1"}
    assert_well_formed(plan)


def test_down_removes_stopped_containers_without_stopping_them():
    stack = chain()
    plan = plan_down(PROJECT, Actual([container(stack, "web", status="exited"),
                                      container(stack, "db")], networks=set()), stack)
    assert ids(plan) == ["remove:web:1", "stop:db:1", "remove:db:1"]
    assert action(plan, "stop:db:1").after == ("remove:web:1",)


def test_down_removes_networks_after_every_container_and_volumes_only_when_asked():
    stack = model(
        networks={"corp": {"name": "corp", "external": True}},
        web=service(networks={"default": None, "corp": None},
                    volumes=[{"type": "volume", "source": "data", "target": "/d"}]),
    )
    web = container(stack, "web")
    kept = plan_down(PROJECT, Actual([web]), stack)
    assert ids(kept) == ["stop:web:1", "remove:web:1", "remove_network:proj_default"]
    assert action(kept, "remove_network:proj_default").after == ("remove:web:1",)
    assert not action(kept, "remove:web:1").remove_volumes
    wiped = plan_down(PROJECT, Actual([web]), stack, volumes=True)
    assert ids(wiped)[-1] == "remove_volume:proj_data"
    assert action(wiped, "remove:web:1").remove_volumes
    assert describe(wiped) == ["Container proj-web-1  Stop", "Container proj-web-1  Remove",
                               "Network proj_default  Remove", "Volume proj_data  Remove"]


def test_down_of_nothing_does_nothing():
    assert plan_down(PROJECT, Actual([], networks=set(), volumes=set()), WEB, volumes=True
                     ).actions == []


def test_down_warns_about_orphans_unless_removing_them():
    web, gone = container(WEB, "web"), container(WEB, "gone", config=service())
    warned = plan_down(PROJECT, Actual([web, gone], networks=set()), WEB)
    assert ids(warned) == ["stop:web:1", "remove:web:1"]
    assert "proj-gone-1" in warned.warnings[0]
    removed = plan_down(PROJECT, Actual([web, gone], networks=set()), WEB, remove_orphans=True)
    assert ids(removed)[:2] == ["stop:gone:1", "remove:gone:1"]
    assert removed.warnings == []


def test_down_without_the_file_removes_every_container_and_listed_resource():
    web = container(WEB, "web")
    run = container(WEB, "web", oneoff=True, name="proj-web-run-1")
    plan = plan_down(PROJECT, Actual([web, run],
                                     networks={"proj_default"}, volumes={"proj_data"}),
                     None, volumes=True, timeout=0)
    assert [a.kind for a in plan.actions] == [
        "stop", "remove", "stop", "remove", "remove_network", "remove_volume"]
    assert action(plan, "stop:web:1").timeout == 0
    assert [a.container_id for a in plan.actions if a.kind == "remove"] == [web.id, run.id]
    assert ids(plan)[2:4] == [f"stop:web:1:{run.id}", f"remove:web:1:{run.id}"]


def test_down_waits_for_dependents_through_a_service_with_no_container():
    stack = chain()
    plan = plan_down(PROJECT, Actual([container(stack, "db"), container(stack, "proxy")],
                                     networks=set()), stack)
    assert action(plan, "stop:db:1").after == ("stop:proxy:1",)
