"""Container tests: build the image from this checkout and run it as users do (the container
itself: tests/container/containers.py; worlds of several containers: worlds.py)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.container.containers import IMAGE, ROOT, Container, unique_name
from tests.container.dockercli import docker, one_build_at_a_time, revision_build_args
from tests.container.pebble_harness import (  # Pebble and the test network, for every module
    DockerNetwork,
    pebble,  # noqa: F401
    test_network,  # noqa: F401
)
from tests.container.worlds import Scene, scene


@pytest.fixture(scope="session")
@one_build_at_a_time(IMAGE)  # pytest-xdist's workers: the first builds, the rest find it built
def image() -> str:
    require_tool("docker")
    if docker("info", check=False, timeout=30).returncode != 0:
        message = "the Docker engine is not running (scripts/prepare-machine starts it)"
        pytest.fail(message)
    docker("build", "--quiet", "-t", IMAGE, *revision_build_args(ROOT), str(ROOT), timeout=1200)
    return IMAGE


@pytest.fixture
def make_container(image: str, tmp_path: Path) -> Iterator[Callable[..., Container]]:
    made: list[Container] = []

    def make(env: dict[str, str] | None = None, data: Path | None = None,
             start: bool = True, volumes: dict[str, str] | None = None,
             network: str | None = None, ip: str | None = None,
             dns: str | None = None, run_options: tuple[str, ...] = ()) -> Container:
        data = data or tmp_path / f"data-{len(made)}"
        data.mkdir(exist_ok=True)
        container = Container(unique_name("mailboot-test"), data,
                              env or {"MAIL_DOMAINS": "example.com,example.org"}, image,
                              volumes=volumes or {}, network=network, ip=ip, dns=dns,
                              run_options=run_options)
        made.append(container)
        if start:
            container.start()
        return container

    yield make
    for container in made:
        container.remove()
    for container in made:  # files the container made belong to its users; root can remove
        shutil.rmtree(container.data, ignore_errors=True)


@pytest.fixture(name="scene")
def scene_fixture(test_network: DockerNetwork, image: str,  # noqa: F811 - the fixture
                  tmp_path: Path) -> Iterator[Scene]:
    """An empty scene on the test network for one test (module worlds make their own)."""
    with scene(test_network, image, tmp_path / "scene") as made:
        yield made
