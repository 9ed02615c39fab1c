"""One server, several devices (serve --devices): the parsing of the option, the one
queue in front of every worker (first free device, exact positions), GetInfo's
device list, and two CPU workers that really run at once."""

from __future__ import annotations

import threading
import time

import pytest

from stylecore import Progress, Result, Started, preset
from styleserver.service import devices
from styleserver.client import Client
from styleserver.service.devices import DeviceError, WorkerSpec
from styleserver.service.scheduler import Abandoned, QueueFull, Scheduler
from styletransfer.v1.wire import Queued
from styletransfer.v1 import wire

from clients import concurrent_stylize

FAST = preset("default").replace(size=48, scales=1, steps=3)


# --- --devices --------------------------------------------------------------------------


def test_parse_cpu_workers_divide_the_cores():
    assert devices.parse("cpu:2", cores=2, gpus=0) == [WorkerSpec("cpu:0", "cpu", 1), WorkerSpec("cpu:1", "cpu", 1)]
    assert [w.threads for w in devices.parse("cpu:3", cores=8, gpus=0)] == [2, 2, 2]
    assert [w.threads for w in devices.parse("cpu:4", cores=2, gpus=0)] == [1, 1, 1, 1]  # at least one each
    assert devices.parse("cpu", cores=2, gpus=0) == [WorkerSpec("cpu", "cpu", 0)]  # PyTorch's own count
    assert devices.parse("cpu:1", cores=2, gpus=0) == [WorkerSpec("cpu:0", "cpu", 2)]


def test_parse_gpus_all_auto_and_lists():
    assert [w.name for w in devices.parse("all", cores=2, gpus=3)] == ["cuda:0", "cuda:1", "cuda:2"]
    assert devices.parse("all", cores=2, gpus=0) == [WorkerSpec("cpu", "cpu")]
    assert devices.parse("auto", cores=2, gpus=2) == [WorkerSpec("cuda:0", "cuda:0")]
    assert devices.parse("auto", cores=2, gpus=0) == [WorkerSpec("cpu", "cpu")]
    assert [w.name for w in devices.parse("cuda:1,cuda:0", cores=2, gpus=2)] == ["cuda:1", "cuda:0"]
    assert [w.device for w in devices.parse("cuda,cpu:2", cores=2, gpus=1)] == ["cuda:0", "cpu", "cpu"]


@pytest.mark.parametrize("spec, words", [
    ("cuda:0", "no CUDA device"),
    ("tpu", "unknown device 'tpu'"),
    ("cpu:x", "expected a number"),
    ("cpu:0", "at least one CPU worker"),
    ("cpu,cpu:2", "name the CPU once"),
])
def test_parse_refuses_what_cannot_work(spec, words):
    with pytest.raises(DeviceError, match=words):
        devices.parse(spec, cores=2, gpus=0)


def test_parse_refuses_a_missing_or_repeated_gpu():
    with pytest.raises(DeviceError, match=r"cuda:2 does not exist \(this machine has cuda:0..cuda:1\)"):
        devices.parse("cuda:2", cores=2, gpus=2)
    with pytest.raises(DeviceError, match="named twice"):
        devices.parse("cuda:0,cuda", cores=2, gpus=2)


# --- the scheduler ------------------------------------------------------------------------


def _positions(scheduler, ticket) -> list[int]:
    """The positions wait_turn reports until it would block (no polling)."""
    out = []
    turn = scheduler.wait_turn(ticket, lambda: True, poll=0.01)
    try:
        out.append(next(turn).position)
    except StopIteration:
        return [0]
    return out


def test_one_queue_first_free_worker_exact_positions():
    s = Scheduler(max_queue=3, workers=devices.parse("cpu:2", cores=2, gpus=0))
    a, b, c, d, e = (s.enter() for _ in range(5))
    assert (a.worker.name, b.worker.name) == ("cpu:0", "cpu:1")  # both free workers taken at once
    assert c.worker is None and d.worker is None and e.worker is None
    assert [_positions(s, t) for t in (c, d, e)] == [[1], [2], [3]]
    with pytest.raises(QueueFull):
        s.enter()
    assert s.depth == (2, 3)
    s.release(b)  # cpu:1 frees: the head of the queue takes it
    assert c.worker.name == "cpu:1" and d.worker is None
    assert _positions(s, d) == [1] and _positions(s, e) == [2]
    s.release(a)
    assert d.worker.name == "cpu:0"
    s.release(c)
    assert e.worker.name == "cpu:1"
    s.release(d), s.release(e)
    assert s.depth == (0, 0)
    jobs = {w["name"]: w["jobs"] for w in s.snapshot()}
    assert jobs == {"cpu:0": 2, "cpu:1": 3}
    again = s.enter()
    assert again.worker.name == "cpu:0"  # both free: the first one


def test_a_waiting_job_that_is_abandoned_leaves_the_queue():
    s = Scheduler(max_queue=4, workers=devices.parse("cpu:2", cores=2, gpus=0))
    running = [s.enter(), s.enter()]
    gone, behind = s.enter(), s.enter()
    with pytest.raises(Abandoned):
        list(s.wait_turn(gone, lambda: False))
    assert _positions(s, behind) == [1]
    s.release(running[0])
    assert behind.worker is not None and s.depth == (2, 0)


# --- a server with two CPU workers --------------------------------------------------------


@pytest.fixture(scope="module")
def two_workers(start_server):
    return start_server(max_queue=8, workers=devices.parse("cpu:2", cores=2, gpus=0))


def test_info_lists_every_device(two_workers):
    with Client(f"127.0.0.1:{two_workers.port}") as client:
        info = client.info()
    assert [(d["name"], d["state"], d["threads"]) for d in info["devices"]] == [("cpu:0", "idle", 1),
                                                                                ("cpu:1", "idle", 1)]
    assert info["contract_version"] == wire.CONTRACT_VERSION


def test_eight_concurrent_jobs_share_two_workers(two_workers, content, style):
    busy: list[int] = []
    scheduler = two_workers.service.scheduler
    scheduler.on_change = lambda: busy.append(scheduler.depth[0])  # jobs on a worker, read under the lock
    results = concurrent_stylize(f"127.0.0.1:{two_workers.port}", content, style, FAST.replace(steps=20), 8)
    scheduler.on_change = None
    assert all(isinstance(r[-1], Result) for r in results)
    assert max(busy) == 2 and busy.count(2) >= 4  # both workers ran jobs at once, most of the time
    assert {next(e.device for e in r if isinstance(e, Started)) for r in results} == {"cpu:0", "cpu:1"}
    first = sorted(next((e.position for e in r if isinstance(e, Queued)), 0) for r in results)
    assert first[:2] == [0, 0] and first[2:] == sorted(first[2:]) and first[2] == 1
    for r in results:
        positions = [e.position for e in r if isinstance(e, Queued)]
        # The position is read when the waiting job wakes: two workers freed at once take
        # the first two waiting jobs, so a job can start from position 2 (seen in CI).
        assert positions == sorted(positions, reverse=True) and (not positions or positions[-1] <= 2)
    with Client(f"127.0.0.1:{two_workers.port}") as client:
        devices_ = client.info()["devices"]
    assert sum(int(d["jobs"]) for d in devices_) >= 8 and all(d["state"] == "idle" for d in devices_)


def test_cancel_frees_a_worker_for_the_queued_job(two_workers, content, style):
    address = f"127.0.0.1:{two_workers.port}"
    long_jobs = [Client(address).stylize(content, [style], FAST.replace(steps=100_000)) for _ in range(2)]
    for events in long_jobs:
        for e in events:
            if isinstance(e, Progress):
                break
    got: list = []
    waiter = threading.Thread(target=lambda: got.extend(Client(address).stylize(content, [style], FAST)))
    waiter.start()
    deadline = time.monotonic() + 10
    while not got and time.monotonic() < deadline:
        time.sleep(0.02)
    assert got and got[0] == Queued(position=1)
    t_cancel = time.monotonic()
    long_jobs[1].close()
    waiter.join(30)
    assert isinstance(got[-1], Result) and time.monotonic() - t_cancel < 10
    long_jobs[0].close()
    deadline = time.monotonic() + 10
    while two_workers.service.scheduler.depth != (0, 0) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert two_workers.service.scheduler.depth == (0, 0)


def test_serve_refuses_device_and_devices_together(weights_file, capsys):
    from styleserver.cli import main

    assert main(["serve", "--port", "0", "--weights", weights_file, "--device", "cpu", "--devices", "cpu:2"]) == 2
    assert "give --device or --devices, not both" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--weights", weights_file, "--devices", "gpu"]) == 2
    assert "unknown device 'gpu'" in capsys.readouterr().err


def test_serve_refuses_a_ray_client_address_and_devices_with_cluster(weights_file, capsys):
    from styleserver.cli import main

    assert main(["serve", "--port", "0", "--weights", weights_file, "--cluster", "ray://127.0.0.1:10001"]) == 2
    assert "Ray Client cannot stream" in capsys.readouterr().err
    assert main(["serve", "--port", "0", "--weights", weights_file, "--cluster", "local", "--devices", "cpu:2"]) == 2
    assert "the replicas choose their devices" in capsys.readouterr().err
