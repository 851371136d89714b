"""The simulated Build Graph Service: its state machine, then its wire, its controls."""

import asyncio
import itertools
import json
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import quote

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from gateway.simulator import HOSTILE_LOG_LINE, BuildExists, Simulator, create_simulator_app
from gateway.simulator.model import PARALLEL_JOBS

EPOCH = 1_795_766_400_000_000_000  # 2026-11-27 in ns: far beyond 2**53
TERMINAL = {"BuildRequestCompleted", "BuildRequestFailed", "BuildRequestCancelled"}
MakeClient = Callable[..., Any]


def fake_clock() -> Callable[[], int]:
    """A clock that moves 1 ms per reading, so tests are exact."""
    ticks = itertools.count(EPOCH, 1_000_000)
    return lambda: next(ticks)


@pytest.fixture
def sim() -> Simulator:
    return Simulator(seed=7, clock=fake_clock())


def events(sim: Simulator, build_id: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = sim.build_json(build_id)["events"]
    return result


def frozen(payload: Any) -> Any:
    """A deep copy through JSON: what a client saw, safe from later mutation."""
    return json.loads(json.dumps(payload))


def walk_keys(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from walk_keys(item)
    elif isinstance(value, list):
        for item in value:
            yield from walk_keys(item)


# --- the state machine


def test_every_step_is_one_visible_change_until_completed(sim: Simulator) -> None:
    build_id = sim.create_build(4)
    seen = [frozen(sim.build_json(build_id))]
    assert seen[0]["status"] == "BuildRequestReceived" and len(seen[0]["events"]) == 1
    while seen[-1]["status"] not in TERMINAL:
        sim.advance(build_id)
        now = frozen(sim.build_json(build_id))
        assert len(now["events"]) > len(seen[-1]["events"]), "a step changed nothing"
        assert now["events"][: len(seen[-1]["events"])] == seen[-1]["events"], "not append-only"
        seen.append(now)

    statuses = [build["status"] for build in seen]
    assert list(dict.fromkeys(statuses)) == [
        "BuildRequestReceived",
        "BuildRequestPlanning",
        "BuildRequestExecuting",
        "BuildRequestCompleted",
    ]
    assert len(seen) - 1 == 11  # 4 refs, 3 log lines each: documented for the gateway's tests
    final = seen[-1]
    ids = [event["event_id"] for event in final["events"]]
    stamps = [event["timestamp"] for event in final["events"]]
    assert len(set(ids)) == len(ids)
    assert all(type(t) is int and t > 2**53 for t in [*stamps, final["created_at"]])
    assert stamps == sorted(stamps) and final["created_at"] <= stamps[0]
    assert final["updated_at"] == stamps[-1]
    assert final["events"][-1]["event_type"] == "BuildRequestEvent"
    for ref in (part["str"] for part in final["requested_partitions"]):
        assert sim.partition_status_json(ref)["status"] == "PartitionAvailable"


def test_a_job_reports_its_log_lines_so_far_in_each_event(sim: Simulator) -> None:
    ref = "reviews/date=2026-11-27/region=eu"
    build_id = sim.create_build([ref], log_lines=3)
    sim.finish(build_id)
    jobs = [event["job"] for event in events(sim, build_id) if event["event_type"] == "JobEvent"]
    assert [job["status"] for job in jobs] == [
        "JobScheduled",
        "JobRunning",
        "JobRunning",
        "JobRunning",
        "JobCompleted",
    ]
    assert [len(job["log_lines"]) for job in jobs] == [0, 1, 2, 3, 3]
    for earlier, later in itertools.pairwise(jobs):
        assert later["log_lines"][: len(earlier["log_lines"])] == earlier["log_lines"]
    assert {job["job_run_id"] for job in jobs} == {jobs[0]["job_run_id"]}
    assert jobs[0]["job_label"] == "//jobs:ingest_reviews"
    assert jobs[0]["target_partitions"] == [{"str": ref}]
    partition_states = [
        event["partition_status"]
        for event in sim.partition_events_json(ref)["events"]
        if "partition_status" in event
    ]
    assert partition_states == [
        "PartitionRequested",
        "PartitionScheduled",
        "PartitionBuilding",
        "PartitionAvailable",
    ]


def test_a_failing_job_fails_its_partition_and_the_build(sim: Simulator) -> None:
    build_id = sim.create_build(["ok/1", "bad/1", "ok/2"], fail=["bad/1"])
    sim.finish(build_id)
    assert sim.status(build_id) == "BuildRequestFailed"
    failed = [
        e["job"] for e in events(sim, build_id) if e.get("job", {}).get("status") == "JobFailed"
    ]
    assert [job["target_partitions"] for job in failed] == [[{"str": "bad/1"}]]
    assert failed[0]["log_lines"][-1].startswith("error:")
    assert sim.partition_status_json("bad/1")["status"] == "PartitionFailed"
    assert sim.partition_status_json("ok/2")["status"] == "PartitionAvailable"


def test_a_delegated_partition_follows_the_build_it_points_to(sim: Simulator) -> None:
    build_id = sim.create_build(["reviews/1", "podcasts/1"], delegate=["podcasts/1"])
    sim.advance(build_id)
    [delegation] = [e for e in events(sim, build_id) if e.get("delegated_build_request_id")]
    assert delegation["message"] == "Partition delegated"
    assert delegation["partition_ref"] == {"str": "podcasts/1"}
    assert delegation["partition_status"] == "PartitionDelegated"
    other = delegation["delegated_build_request_id"]
    assert other != build_id and other in sim.build_ids()
    assert sim.build_json(other)["requested_partitions"] == [{"str": "podcasts/1"}]
    assert sim.partition_status_json("podcasts/1") == {
        "partition_ref": "podcasts/1",
        "status": "PartitionDelegated",
        "updated_at": delegation["timestamp"],
        "build_requests": [build_id, other],
        "delegated_build_request_id": other,
    }

    sim.advance(other, 4)  # the other build progresses like any other...
    assert sim.status(other) == "BuildRequestExecuting"
    assert sim.partition_status_json("podcasts/1")["status"] == "PartitionDelegated"
    sim.finish(other)  # ...and its outcome becomes this build's
    assert events(sim, build_id)[-1]["partition_status"] == "PartitionAvailable"
    assert sim.partition_status_json("podcasts/1")["status"] == "PartitionAvailable"
    sim.finish(build_id)
    assert sim.status(build_id) == "BuildRequestCompleted"


def test_finish_drives_the_builds_it_waits_for(sim: Simulator) -> None:
    build_id = sim.create_build(["a/1", "b/1"], delegate=["a/1", "b/1"], fail=["b/1"])
    sim.finish(build_id)
    assert sim.status(build_id) == "BuildRequestFailed"
    delegates = [b for b in sim.build_ids() if b != build_id]
    assert sorted(sim.status(b) for b in delegates) == [
        "BuildRequestCompleted",
        "BuildRequestFailed",
    ]


def test_cancel_ends_running_jobs_and_fails_waiting_delegators(sim: Simulator) -> None:
    build_id = sim.create_build(["a/1", "b/1"], delegate=["b/1"])
    other = next(b for b in sim.build_ids() if b != build_id)
    sim.advance(build_id)
    sim.advance(other, 4)
    sim.cancel(other)
    assert sim.status(other) == "BuildRequestCancelled"
    assert any(e.get("job", {}).get("status") == "JobCancelled" for e in events(sim, other))
    assert events(sim, build_id)[-1]["partition_status"] == "PartitionFailed"
    version = sim.version(other)
    sim.advance(other)
    sim.cancel(other)
    assert sim.version(other) == version, "an ended build never changes"
    sim.finish(build_id)
    assert sim.status(build_id) == "BuildRequestFailed"


def test_a_large_build_moves_a_bounded_amount_per_step(sim: Simulator) -> None:
    build_id = sim.create_build(2000, log_lines=1)
    sim.advance(build_id, 2)  # planning requests every ref at once, the one big step
    most = 0
    while sim.status(build_id) not in TERMINAL:
        before = len(events(sim, build_id))
        sim.advance(build_id)
        most = max(most, len(events(sim, build_id)) - before)
    assert most <= 2 * (PARALLEL_JOBS + 1) + 1
    assert len(events(sim, build_id)) > 10_000


def run_script(seed: int) -> str:
    sim = Simulator(seed=seed, clock=fake_clock())
    first = sim.create_build(5, log_lines=2)
    second = sim.create_build(["x/1", "x/2"], delegate=["x/2"], fail=["x/1"])
    sim.create_demo_build()
    sim.advance(first, 7)
    for _ in range(5):
        sim.tick()
    sim.finish(second)
    builds = {b: sim.build_json(b) for b in sim.build_ids()}
    refs = {r["str"] for build in builds.values() for r in build["requested_partitions"]}
    partitions = {r: (sim.partition_status_json(r), sim.partition_events_json(r)) for r in refs}
    return json.dumps([builds, partitions], sort_keys=True)


def test_the_same_seed_and_steps_give_the_same_json() -> None:
    assert run_script(11) == run_script(11)
    assert run_script(11) != run_script(12)


def test_demo_builds_are_lively_and_memory_stays_bounded(sim: Simulator) -> None:
    seen_statuses: set[str] = set()
    seen_lines: set[str] = set()
    delegated = 0
    for _ in range(400):
        sim.keep_lively(3, keep_ended=5)
        assert len(sim.build_ids()) <= 3 + 5 + 1  # a delegation may overshoot by one
        sim.tick()
        for build_id in sim.build_ids():
            build = sim.build_json(build_id)
            seen_statuses.add(build["status"])
            for event in build["events"]:
                seen_lines.update(event.get("job", {}).get("log_lines", ()))
                delegated += event.get("partition_status") == "PartitionDelegated"
    assert {"BuildRequestCompleted", "BuildRequestFailed"} <= seen_statuses
    assert delegated and HOSTILE_LOG_LINE in seen_lines
    with pytest.raises(KeyError):  # the first demo build is long forgotten, refs and all
        sim.partition_status_json("reviews/date=2026-11-27/region=eu")


@pytest.mark.parametrize(
    ("partitions", "options"),
    [
        ("one string", {}),
        ([], {}),
        (["a", "a"], {}),
        (["a", "b\n"], {}),
        (0, {}),
        (["a"], {"fail": ["b"]}),
        (["a"], {"delegate": ["b"]}),
        (["a"], {"build_id": "has space"}),
        (["a"], {"log_lines": -1}),
    ],
)
def test_bad_build_requests_are_refused(
    sim: Simulator, partitions: Any, options: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):
        sim.create_build(partitions, **options)


def test_ids_are_unique_and_unknown_ids_raise(sim: Simulator) -> None:
    sim.create_build(1, build_id="br-1")
    with pytest.raises(BuildExists):
        sim.create_build(1, build_id="br-1")
    for call in (sim.advance, sim.finish, sim.cancel, sim.build_json):
        with pytest.raises(KeyError):
            call("br-nope")
    with pytest.raises(KeyError):
        sim.partition_status_json("no/such/ref")


# --- the wire


@pytest.fixture
async def client(aiohttp_client: MakeClient, sim: Simulator) -> TestClient[Any, Any]:
    result: TestClient[Any, Any] = await aiohttp_client(create_simulator_app(sim))
    return result


def partition_path(ref: str, what: str = "status") -> str:
    return f"/api/v1/partitions/{quote(ref, safe='')}/{what}"


async def read_json(response: aiohttp.ClientResponse) -> Any:
    # Python's json keeps big integers exact, as a gateway must.
    return json.loads(await response.text())


async def test_the_build_endpoint_serves_the_model_in_snake_case(
    client: TestClient[Any, Any], sim: Simulator
) -> None:
    build_id = sim.create_build(2, log_lines=1)
    sim.advance(build_id, 4)
    response = await client.get(f"/api/v1/builds/{build_id}")
    assert response.status == 200 and response.content_type == "application/json"
    body = await read_json(response)
    assert body == frozen(sim.build_json(build_id))
    assert body["status"] == "BuildRequestExecuting"
    assert type(body["created_at"]) is int and body["created_at"] > 2**53


async def test_an_unchanged_build_answers_304_to_its_etag(
    client: TestClient[Any, Any], sim: Simulator
) -> None:
    build_id = sim.create_build(2)
    first = await client.get(f"/api/v1/builds/{build_id}")
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    for header in (etag, f"W/{etag}", f'"other", {etag}', "*"):
        again = await client.get(f"/api/v1/builds/{build_id}", headers={"If-None-Match": header})
        assert again.status == 304 and await again.read() == b""
        assert again.headers["ETag"] == etag
    sim.advance(build_id)
    changed = await client.get(f"/api/v1/builds/{build_id}", headers={"If-None-Match": etag})
    assert changed.status == 200 and changed.headers["ETag"] != etag

    ref = sim.build_json(build_id)["requested_partitions"][0]["str"]
    status = await client.get(partition_path(ref))
    cached = await client.get(
        partition_path(ref), headers={"If-None-Match": status.headers["ETag"]}
    )
    assert cached.status == 304


async def test_each_new_version_is_encoded_as_a_whole_encoding_would_be(
    aiohttp_client: MakeClient, sim: Simulator
) -> None:
    client = await aiohttp_client(create_simulator_app(sim, spelling="camel"))
    plain = await aiohttp_client(create_simulator_app(sim))
    build_id = sim.create_build(6, log_lines=2)
    while sim.status(build_id) not in TERMINAL:
        sim.advance(build_id, 3)
        incremental = await read_json(await plain.get(f"/api/v1/builds/{build_id}"))
        assert incremental == frozen(sim.build_json(build_id))
        camel = await read_json(await client.get(f"/api/v1/builds/{build_id}"))
        assert len(camel["events"]) == len(incremental["events"])


async def test_camel_case_and_screaming_enums_change_the_whole_wire(
    aiohttp_client: MakeClient, sim: Simulator
) -> None:
    client = await aiohttp_client(
        create_simulator_app(sim, spelling="camel", enum_style="screaming")
    )
    build_id = sim.create_build(["a/1", "b/1"], delegate=["b/1"])
    sim.advance(build_id, 5)
    build = await read_json(await client.get(f"/api/v1/builds/{build_id}"))
    keys = set(walk_keys(build))
    assert not any("_" in key for key in keys)
    assert {
        "buildRequestId",
        "requestedPartitions",
        "createdAt",
        "updatedAt",
        "eventId",
        "eventType",
        "partitionRef",
        "partitionStatus",
        "delegatedBuildRequestId",
        "buildRequestStatus",
        "jobRunId",
        "jobLabel",
        "targetPartitions",
        "logLines",
        "str",
    } <= keys
    assert build["status"] == "BUILD_REQUEST_EXECUTING"
    states = {e.get("partitionStatus") for e in build["events"]}
    assert {"PARTITION_REQUESTED", "PARTITION_DELEGATED", "PARTITION_SCHEDULED"} <= states
    assert {e["job"]["status"] for e in build["events"] if "job" in e} == {
        "JOB_SCHEDULED",
        "JOB_RUNNING",
    }
    status = await read_json(await client.get(partition_path("b/1")))
    assert status["partitionRef"] == "b/1" and status["status"] == "PARTITION_DELEGATED"
    assert set(status) == {
        "partitionRef",
        "status",
        "updatedAt",
        "buildRequests",
        "delegatedBuildRequestId",
    }


async def test_bare_enums_drop_the_prefix(aiohttp_client: MakeClient, sim: Simulator) -> None:
    client = await aiohttp_client(create_simulator_app(sim, enum_style="bare"))
    build_id = sim.create_build(["a/1"], log_lines=2)
    sim.advance(build_id, 4)
    build = await read_json(await client.get(f"/api/v1/builds/{build_id}"))
    assert build["status"] == "Executing"
    assert [e["job"]["status"] for e in build["events"] if "job" in e] == ["Scheduled", "Running"]
    assert {"Requested", "Building"} <= {e.get("partition_status") for e in build["events"]}
    assert build["events"][0]["event_type"] == "BuildRequestReceived", "event types stay"


@pytest.mark.parametrize(
    "ref",
    ["reviews/date=2026-11-27/region=eu", "100% done", "café au lait", "a%2Fb", "é/é", "t/{date}"],
)
async def test_percent_encoded_refs_round_trip(
    client: TestClient[Any, Any], sim: Simulator, ref: str
) -> None:
    create = await client.post("/_sim/builds", json={"partitions": [ref, "other"]})
    build_id = (await create.json())["build_request_id"]
    await client.post(f"/_sim/builds/{build_id}/advance", json={"steps": 3})
    status = await read_json(await client.get(partition_path(ref)))
    assert status["partition_ref"] == ref and status["build_requests"] == [build_id]
    history = await read_json(await client.get(partition_path(ref, "events")))
    assert history["partition_ref"] == ref
    assert [e["partition_status"] for e in history["events"] if "partition_status" in e] == [
        "PartitionRequested",
        "PartitionScheduled",
    ]


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/api/v1/builds/br-nope", 404),
        ("/api/v1/builds/br%20x", 400),
        ("/api/v1/builds/br%01x", 400),
        ("/api/v1/builds/br%2Fx", 400),
        ("/api/v1/partitions/no%2Fsuch/status", 404),
        ("/api/v1/partitions/no%2Fsuch/events", 404),
        ("/api/v1/partitions/bad%0Aref/status", 400),
    ],
)
async def test_unknown_ids_are_404_and_malformed_ones_400(
    client: TestClient[Any, Any], path: str, status: int
) -> None:
    response = await client.get(path)
    assert response.status == status
    assert isinstance((await response.json())["error"], str)


# --- the control API


async def test_the_control_api_creates_and_drives_builds(client: TestClient[Any, Any]) -> None:
    created = await client.post(
        "/_sim/builds", json={"partitions": ["a/1", "b/1"], "id": "br-ctl", "fail": ["b/1"]}
    )
    assert created.status == 201 and await created.json() == {"build_request_id": "br-ctl"}
    again = await client.post("/_sim/builds", json={"id": "br-ctl"})
    assert again.status == 409

    advanced = await client.post("/_sim/builds/br-ctl/advance")
    assert await advanced.json() == {"build_request_id": "br-ctl", "status": "BuildRequestPlanning"}
    advanced = await client.post("/_sim/builds/br-ctl/advance", json={"steps": 1})
    assert (await advanced.json())["status"] == "BuildRequestExecuting"
    finished = await client.post("/_sim/builds/br-ctl/finish")
    assert (await finished.json())["status"] == "BuildRequestFailed"

    default = await (await client.post("/_sim/builds")).json()
    cancelled = await client.post(f"/_sim/builds/{default['build_request_id']}/cancel")
    assert (await cancelled.json())["status"] == "BuildRequestCancelled"
    listing = await (await client.get("/_sim/builds")).json()
    assert listing == [
        {"build_request_id": "br-ctl", "status": "BuildRequestFailed"},
        {"build_request_id": default["build_request_id"], "status": "BuildRequestCancelled"},
    ]
    for action in ("advance", "finish", "cancel"):
        assert (await client.post(f"/_sim/builds/br-nope/{action}")).status == 404


@pytest.mark.parametrize(
    "body",
    [
        b'{"partitions": "4"}',
        b'{"partitions": true}',
        b'{"partitions": 0}',
        b'{"partitions": ["a"], "fail": ["b"]}',
        b'{"partitoins": 4}',
        b"[1]",
        b"not json",
    ],
)
async def test_the_control_api_refuses_bad_bodies(
    client: TestClient[Any, Any], body: bytes
) -> None:
    response = await client.post("/_sim/builds", data=body)
    assert response.status == 400 and "error" in await response.json()


async def test_stats_count_upstream_requests_by_endpoint_and_build(
    client: TestClient[Any, Any], sim: Simulator
) -> None:
    build_id = sim.create_build(["a/1"])
    for _ in range(3):
        await client.get(f"/api/v1/builds/{build_id}")
    await client.get("/api/v1/builds/br-nope")
    await client.get(partition_path("a/1"))
    await client.get(partition_path("a/1", "events"))
    await client.post(f"/_sim/builds/{build_id}/advance")  # control calls are not counted
    stats = await (await client.get("/_sim/stats")).json()
    assert stats == {
        "total": 6,
        "endpoints": {"build": 4, "partition_status": 1, "partition_events": 1},
        "builds": {build_id: 3, "br-nope": 1},
        "max_concurrent": {build_id: 1, "br-nope": 1},
    }
    assert (await client.post("/_sim/stats/reset")).status == 204
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["total"] == 0 and stats["builds"] == {} and stats["max_concurrent"] == {}


async def test_faults_answer_instead_of_the_upstream_then_clear(
    client: TestClient[Any, Any], sim: Simulator
) -> None:
    path = f"/api/v1/builds/{sim.create_build(1)}"
    await client.post("/_sim/faults", json={"status": 503, "count": 2})
    assert [(await client.get(path)).status for _ in range(3)] == [503, 503, 200]

    await client.post("/_sim/faults", json={"body": "garbage"})
    for _ in range(2):
        response = await client.get(path)
        assert response.status == 200 and await response.text() == "garbage"
    assert (await client.delete("/_sim/faults")).status == 204
    assert (await read_json(await client.get(path)))["status"] == "BuildRequestReceived"
    assert (await client.post("/_sim/faults", json={"status": 200})).status == 400


async def test_a_delay_shows_overlapping_polls_of_one_build(
    client: TestClient[Any, Any], sim: Simulator
) -> None:
    overlapped, alone = sim.create_build(1), sim.create_build(1)
    await client.post("/_sim/faults", json={"delay": 0.05})
    loop = asyncio.get_running_loop()
    started = loop.time()
    responses = await asyncio.gather(
        *(client.get(f"/api/v1/builds/{overlapped}") for _ in range(3))
    )
    assert loop.time() - started >= 0.05
    assert all(response.status == 200 for response in responses)
    for _ in range(2):
        await client.get(f"/api/v1/builds/{alone}")
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["max_concurrent"] == {overlapped: 3, alone: 1}


async def test_auto_mode_keeps_lively_builds_running(aiohttp_client: MakeClient) -> None:
    sim = Simulator(seed=5)
    client = await aiohttp_client(create_simulator_app(sim, tick=0.005, keep_active=2))
    for _ in range(200):
        await asyncio.sleep(0.01)
        listing = await (await client.get("/_sim/builds")).json()
        if any(build["status"] == "BuildRequestExecuting" for build in listing):
            break
    active = [b for b in listing if b["status"] not in TERMINAL]
    assert len(active) >= 2
    response = await client.get(f"/api/v1/builds/{active[0]['build_request_id']}")
    assert response.status == 200


def test_auto_mode_needs_a_tick(sim: Simulator) -> None:
    with pytest.raises(ValueError):
        create_simulator_app(sim, keep_active=3)
    with pytest.raises(ValueError):
        create_simulator_app(sim, spelling="kebab")
