"""Ferry's container image run for real, with buildah and no daemon: the image's own entrypoint,
user, environment and volume, on the host's network (so it listens on 127.0.0.1), with a
read-only root filesystem and a host directory as its write-ahead log volume.

    container = ImageContainer("localhost/ferry:dev", volume_dir, log_path)
    container.start("--kafka-bootstrap", kafka.bootstrap)   # SERVING at container.address
    container.ferry_process()                               # the Ferry process, as psutil sees it
    container.terminate()                                   # SIGTERM to Ferry; its exit code
    container.close()                                       # killed if alive, removed

`buildah run --isolation chroot` has no read-only option, so the container's root is bound
read-only onto itself before the run (buildah's chroot then sees it read-only, down to Ferry).
buildah itself creates and removes a mount point under /run on every run (.containerenv), so
/run is a separate root-owned directory there: writable by buildah (root), not by the
unprivileged user Ferry runs as, whose only writable place is the volume.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import psutil

from testkit.ferry_process import wait_serving
from testkit.ports import HOST, free_port

#: buildah takes its storage driver from $STORAGE_DRIVER (image.mk sets it).
BUILDAH = "buildah"


def image_config(image: str) -> dict[str, Any]:
    """The image's OCI config: Entrypoint, User, Env, Volumes, Labels..."""
    config: dict[str, Any] = json.loads(_buildah("inspect", "--type", "image", image))["OCIv1"][
        "config"
    ]
    return config


def image_env(config: dict[str, Any]) -> dict[str, str]:
    """The image's environment variables."""
    return dict(item.split("=", 1) for item in config.get("Env", []))


@contextlib.contextmanager
def image_root(image: str) -> Iterator[Path]:
    """The image's root filesystem, mounted on the host for the block (a container of the
    image, removed afterwards)."""
    container = _buildah("from", "--pull=never", "--quiet", image)
    try:
        yield Path(_buildah("mount", container))
    finally:
        subprocess.run([BUILDAH, "rm", container], check=False, capture_output=True)


def _buildah(*args: str) -> str:
    done = subprocess.run([BUILDAH, *args], check=True, capture_output=True, text=True)
    return done.stdout.strip()


def uid_gid(user: str) -> tuple[int, int]:
    """A numeric "uid:gid" USER as numbers."""
    uid, _, gid = user.partition(":")
    return int(uid), int(gid or uid)


class ImageContainer:
    """One run of `image`'s entrypoint with a read-only root and `volume_dir` (a host
    directory, handed to the image's user like Kubernetes' fsGroup would) mounted on the
    image's volume. Output goes to `log_path`; Ferry listens on 127.0.0.1:`port`."""

    def __init__(
        self, image: str, volume_dir: Path, log_path: Path, port: int | None = None
    ) -> None:
        self.image = image
        self.config = image_config(image)
        self.volume_dir = volume_dir
        self.log_path = log_path
        self.port = port or free_port()
        self.container: str | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self._rootfs: Path | None = None
        self._mounted: list[Path] = []  # unmounted in reverse order by close()
        self._run_dir: Path | None = None
        self._mount_options: list[str] = []

    @property
    def address(self) -> str:
        return f"{HOST}:{self.port}"

    def volume_path(self) -> str:
        """Where the image declares its one volume."""
        [path] = self.config.get("Volumes") or {}
        return str(path)

    def command(self, *args: str) -> list[str]:
        """The image's entrypoint with `--listen` on this container's port, its metrics on a
        port the kernel picks (the host's network is shared), then `args`."""
        return [
            *self.config["Entrypoint"], "--listen", self.address,
            "--metrics-listen", "127.0.0.1:0", *args,
        ]  # fmt: skip

    def start(self, *args: str, timeout: float = 60.0) -> ImageContainer:
        """Create the container, make its root read-only, run the entrypoint with `args` and
        wait until it answers SERVING."""
        self.launch(self.command(*args), mounts={self.volume_dir: self.volume_path()})
        assert self.proc is not None
        wait_serving(self.address, self.proc, timeout, self.log_path)
        return self

    def launch(
        self,
        command: Sequence[str],
        env: Mapping[str, str] | None = None,
        mounts: Mapping[Path, str] | None = None,
    ) -> None:
        """Create the container, make its root read-only and run `command` in it with `env`
        set (over the image's) and `mounts` (host directory -> path in the container, each
        handed to the image's user like Kubernetes' fsGroup would), without waiting."""
        self.container = _buildah("from", "--pull=never", "--quiet", self.image)
        self._rootfs = Path(_buildah("mount", self.container))
        for target in (mounts or {}).values():
            # The mount points, made before the root turns read-only (as a container runtime
            # makes them): buildah cannot create them in a read-only root.
            _make_mount_point(self._rootfs, target)
        self._read_only_root(self._rootfs)
        self._mount_options = []
        for source, target in (mounts or {}).items():
            self._own(source)
            self._mount_options += ["--mount", f"type=bind,src={source},dst={target},rw"]
        env_options = [f"--env={name}={value}" for name, value in (env or {}).items()]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [BUILDAH, "run", "--isolation", "chroot", *self._mount_options, *env_options,
                 self.container, "--", *command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip

    def exec(self, command: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run `command` in the running container (another process beside Ferry, with the same
        mounts, as the kubelet runs an exec probe); its exit code and output."""
        assert self.container is not None, "never started"
        return subprocess.run(
            [BUILDAH, "run", "--isolation", "chroot", *self._mount_options, self.container,
             "--", *command],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip

    def _own(self, directory: Path) -> None:
        uid, gid = uid_gid(self.config["User"])
        directory.mkdir(parents=True, exist_ok=True)
        os.chown(directory, uid, gid)

    def _read_only_root(self, rootfs: Path) -> None:
        self._bind(rootfs, rootfs)
        subprocess.run(["mount", "-o", "remount,bind,ro", str(rootfs)], check=True)
        self._run_dir = Path(tempfile.mkdtemp(prefix="ferry-image-run-"))
        self._run_dir.chmod(0o755)
        self._bind(self._run_dir, rootfs / "run")

    def _bind(self, source: Path, target: Path) -> None:
        subprocess.run(["mount", "--bind", str(source), str(target)], check=True)
        self._mounted.append(target)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ferry_process(self) -> psutil.Process:
        """Ferry itself, below buildah's chroot runner (the one descendant running `serve`)."""
        assert self.proc is not None, "never started"
        found = [
            child
            for child in psutil.Process(self.proc.pid).children(recursive=True)
            if "serve" in child.cmdline() and "buildah" not in child.cmdline()[0]
        ]
        assert len(found) == 1, f"expected one Ferry process, found {found}"
        return found[0]

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM to the Ferry process (as the kubelet's runtime sends PID 1), then wait for the
        container to end; its exit code, which is Ferry's."""
        assert self.proc is not None, "never started"
        self.ferry_process().send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def close(self) -> None:
        """Kill Ferry if it still runs (buildah then cleans up after its run and exits), undo
        the mounts, remove the container."""
        try:
            if self.alive():
                assert self.proc is not None
                with contextlib.suppress(AssertionError, psutil.NoSuchProcess):
                    self.ferry_process().kill()
                try:
                    self.proc.wait(30)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(10)
        finally:
            for path in reversed(self._mounted):
                subprocess.run(["umount", str(path)], check=False)
            self._mounted.clear()
            if self._run_dir is not None:
                shutil.rmtree(self._run_dir, ignore_errors=True)
                self._run_dir = None
            if self.container is not None:
                subprocess.run([BUILDAH, "rm", self.container], check=False, capture_output=True)
                self.container = None


def _make_mount_point(rootfs: Path, target: str) -> None:
    """`target` and its missing parents in `rootfs`, mode 0755 whatever the umask (as a container
    runtime makes them): the image's user must be able to pass through them."""
    path = rootfs
    for part in Path(target.lstrip("/")).parts:
        path = path / part
        if not path.exists():
            path.mkdir()
            path.chmod(0o755)
