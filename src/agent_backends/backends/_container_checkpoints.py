"""Checkpoints of a container sandbox: its whole filesystem as an image, the work dir included.

``snapshot()`` commits the container (paused for the moment of the commit) to an image labelled with the sandbox's
id and the snapshot's description, so any object attached to the sandbox (``ref=``) lists the same snapshots. A
work dir that is a mount (``workspace_dir``, a volume, or ``read_only``'s tmpfs) is not part of a container's
layers: its files are archived with ``tar`` inside the sandbox and added to the image beside the committed layer.
``restore()`` replaces the container by one started from that image under the same name (``id`` does not change)
and puts the work dir's files back; ``fork()`` starts a new sandbox from a copy of it. Processes do not survive a
restore or a fork: memory checkpointing needs CRIU, which these engines' kernels do not run.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import contextvars
import io
import json
import shlex
import tarfile
import uuid
from abc import abstractmethod
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Self

import anyio

from agent_backends.backends._checkpoints import Checkpoints
from agent_backends.backends.sandbox import CommandResult
from agent_backends.exceptions import SandboxError, SnapshotError
from agent_backends.types import Snapshot

if TYPE_CHECKING:
    import aiodocker
    from aiodocker.containers import DockerContainer

__all__ = ("ContainerCheckpoints",)

_OF = "agent-backends.snapshot-of"
_META = "agent-backends.snapshot"
_STASH = "/.agent-backends-workdir.tar"
_REPOSITORY = "agent-backends-snapshot"
_SNAPSHOTTING: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "agent_backends_snapshotting", default=False
)  # the mounted work dir's files, inside a snapshot image


class ContainerCheckpoints(Checkpoints):
    """Snapshots for ``DockerSandbox`` on any engine with the Docker API (Docker, Podman, gVisor)."""

    name: str
    work_dir: str
    volumes: dict[str, str]
    read_only: bool
    labels: dict[str, str]
    image: str
    _owned_image: str | None = None  # a fork's image, removed with the fork
    _image_size: int | None = None
    _committing: anyio.Event | None = None

    async def _commit_done(self) -> None:
        """Wait while a snapshot is being taken (every operation passes here first), but in the snapshot's own task:
        files change neither under its archive nor while the engine pauses the container to commit it."""
        if self._committing is not None and not _SNAPSHOTTING.get():
            await self._committing.wait()

    @abstractmethod
    async def _ready(self) -> DockerContainer: ...

    @abstractmethod
    async def _client(self) -> aiodocker.Docker: ...

    @abstractmethod
    def _container_config(self) -> dict[str, Any]: ...

    @abstractmethod
    async def _run(self, script: str, *, stdin: bytes | None = None) -> CommandResult: ...

    @abstractmethod
    async def _swap_container(self, image: str) -> None:
        """Replace the running container by one from ``image``, under the same name."""

    @abstractmethod
    async def aclose(self) -> None: ...

    @abstractmethod
    async def detach(self) -> None: ...

    @abstractmethod
    def _forked(self, image: str) -> Self:
        """A sandbox like this one, not started, on ``image`` and with no mounts."""

    @property
    def _snapshot_owner(self) -> str:
        return f"container:{self.name}"

    def _mounted_work_dir(self) -> bool:
        return self.read_only or any(inside.split(":")[0] == self.work_dir for inside in self.volumes.values())

    async def _image(self, meta: Mapping[str, str], tag: str | None = None) -> str:
        """Commit the container to an image labelled ``meta`` (tagged ``agent-backends-snapshot:<tag>`` if given);
        a mounted work dir's files go in with it. Returns the image's id. This object's other operations wait."""
        container = await self._ready()
        self._committing = anyio.Event()
        token = _SNAPSHOTTING.set(True)
        try:
            return await self._commit(container, meta, tag)
        finally:
            _SNAPSHOTTING.reset(token)
            self._committing.set()
            self._committing = None

    async def _commit(self, container: DockerContainer, meta: Mapping[str, str], tag: str | None) -> str:
        docker = await self._client()
        stash: bytes | None = None
        if self._mounted_work_dir():
            packed = await self._run(f"tar -C {shlex.quote(self.work_dir)} -cf - .")
            if packed.exit_code != 0:
                raise SnapshotError(f"could not archive {self.work_dir}: {packed.stderr.decode(errors='replace')}")
            stash = packed.stdout
        labels = {**self.labels, **meta}
        # Docker reads the labels from ``config``; Podman's Docker API only from Dockerfile-style ``changes``.
        changes = [f"LABEL {json.dumps(key)}={json.dumps(value)}" for key, value in labels.items()]
        try:
            repository = _REPOSITORY if tag is not None else None
            committed = await container.commit(  # pyright: ignore[reportUnknownMemberType]
                config={"Labels": labels}, changes=changes, pause=True, repository=repository, tag=tag
            )
            image = str(committed["Id"])
            if stash is None:
                return image
            helper = await docker.containers.create(  # pyright: ignore[reportUnknownMemberType]
                {"Image": image, "Cmd": ["true"], "Labels": labels, "NetworkDisabled": True}
            )
            try:
                await helper.put_archive("/", _one_file_tar(_STASH.lstrip("/"), stash))  # pyright: ignore[reportUnknownMemberType]
                final = await helper.commit(  # pyright: ignore[reportUnknownMemberType]
                    config={"Labels": labels}, changes=changes, pause=False, repository=repository, tag=tag
                )  # pyright: ignore[reportUnknownMemberType]
            finally:
                await helper.delete(force=True)  # pyright: ignore[reportUnknownMemberType]
            with contextlib.suppress(Exception):  # untagged now; the layer below stays as the final image's parent
                await docker.images.delete(image)  # pyright: ignore[reportUnknownMemberType]
            return str(final["Id"])
        except SandboxError:
            raise
        except Exception as exc:
            if type(exc).__name__ != "DockerError":
                raise
            raise SnapshotError(f"could not snapshot sandbox {self.name}: {exc}") from exc

    async def _take(self, snapshot_id: str, label: str | None) -> Snapshot:
        files, size = await self._work_dir_figures()
        created = datetime.now(UTC)
        description = {"id": snapshot_id, "label": label, "created_at": created.isoformat(), "files": files}
        description["size"] = size
        encoded = base64.urlsafe_b64encode(json.dumps(description).encode()).decode()  # no quotes to escape
        image = await self._image({_OF: self.name, _META: encoded}, tag=snapshot_id)
        docker = await self._client()
        details: dict[str, Any] = await docker.images.inspect(image)  # pyright: ignore[reportUnknownMemberType]
        return self._described(description, int(details.get("Size") or 0) - await self._base_size())

    async def _base_size(self) -> int:
        """The size of the sandbox's own image: a snapshot's image takes what it adds to it."""
        if self._image_size is None:
            docker = await self._client()
            details: dict[str, Any] = await docker.images.inspect(self.image)  # pyright: ignore[reportUnknownMemberType]
            self._image_size = int(details.get("Size") or 0)
        return self._image_size

    def _described(self, description: Mapping[str, Any], stored: int) -> Snapshot:
        return Snapshot(
            id=str(description["id"]),
            backend_id=self._snapshot_owner,
            kind="container",
            created_at=datetime.fromisoformat(str(description["created_at"])),
            files=int(description.get("files") or 0),
            size=int(description.get("size") or 0),
            stored=max(0, stored),
            label=description.get("label"),
        )

    async def _work_dir_figures(self) -> tuple[int, int]:
        """How many regular files the work dir holds, and their bytes (busybox and GNU alike)."""
        script = f"find {shlex.quote(self.work_dir)} -xdev -type f -exec wc -c {{}} + 2>/dev/null | grep -v ' total$'"
        listed = await self._run(script)
        sizes = [line.split()[0] for line in listed.stdout.decode(errors="replace").splitlines() if line.strip()]
        return len(sizes), sum(int(size) for size in sizes if size.isdigit())

    async def _images(self) -> dict[str, tuple[str, Mapping[str, Any], int]]:
        """This sandbox's snapshot images: snapshot id to (image id, description, size)."""
        docker = await self._client()
        found: list[dict[str, Any]] = await docker.images.list(filters={"label": [f"{_OF}={self.name}"]})  # pyright: ignore[reportUnknownMemberType]
        images: dict[str, tuple[str, Mapping[str, Any], int]] = {}
        for image in found:
            if not image.get("RepoTags") or image.get("RepoTags") == ["<none>:<none>"]:
                continue  # forgotten, kept only while a container still runs from it
            labels: Mapping[str, str] = image.get("Labels") or {}
            with contextlib.suppress(ValueError, KeyError, TypeError, binascii.Error):
                description: dict[str, Any] = json.loads(base64.urlsafe_b64decode(labels[_META]))
                images[str(description["id"])] = (str(image["Id"]), description, int(image.get("Size") or 0))
        return images

    async def _known(self) -> list[Snapshot]:
        base = await self._base_size()
        return [self._described(description, size - base) for _, description, size in (await self._images()).values()]

    async def _put_back(self, snapshot: Snapshot) -> None:
        image = (await self._images())[snapshot.id][0]
        await self._swap_container(image)
        if self._mounted_work_dir():
            await self._unstash(clear=True)

    async def _unstash(self, *, clear: bool) -> None:
        work = shlex.quote(self.work_dir)
        script = f"[ -f {_STASH} ] || exit 0; "
        if clear:
            script += f"find {work} -mindepth 1 -maxdepth 1 -exec rm -rf {{}} +; "
        script += f"tar -C {work} -xf {_STASH}"
        done = await self._run(script)
        if done.exit_code != 0:
            raise SnapshotError(f"could not put back {self.work_dir}: {done.stderr.decode(errors='replace')}")

    async def _forget(self, snapshot: Snapshot) -> None:
        """Untag the snapshot's image: it goes at once, or, when the container was restored from it and still
        runs from it, as soon as that container goes (``_drop_forgotten``)."""
        docker = await self._client()
        try:
            await docker.images.delete(f"{_REPOSITORY}:{snapshot.id}", force=True)  # pyright: ignore[reportUnknownMemberType]
        except Exception as exc:
            if type(exc).__name__ != "DockerError":
                raise
            raise SnapshotError(f"could not delete snapshot {snapshot.id}: {exc}") from exc

    async def _drop_forgotten(self, docker: aiodocker.Docker, *, everything: bool) -> None:
        """Remove this sandbox's snapshot images that no container uses any more: the forgotten (untagged) ones,
        or with ``everything`` all of them (the sandbox itself is gone, so they cannot be restored)."""
        with contextlib.suppress(Exception):
            found: list[dict[str, Any]] = await docker.images.list(filters={"label": [f"{_OF}={self.name}"]})  # pyright: ignore[reportUnknownMemberType]
            for image in found:
                repo_tags: list[str] = image.get("RepoTags") or []
                tags = [tag for tag in repo_tags if tag != "<none>:<none>"]
                if everything or not tags:
                    with contextlib.suppress(Exception):
                        await docker.images.delete(str(image["Id"]), force=True)  # pyright: ignore[reportUnknownMemberType]

    async def fork(self) -> Self:
        """A new sandbox (a new container) from a copy of this one's whole filesystem, work dir included, with the
        same options but no mounts; its image goes when it is closed. Processes are not copied."""
        image = await self._image({"agent-backends.fork-of": self.name, "agent-backends.fork": uuid.uuid4().hex})
        clone = self._forked(image)
        clone._owned_image = image
        try:
            await clone._ready()
            if self._mounted_work_dir():
                await clone._unstash(clear=False)
            # Let go of this loop's engine connection: the fork attaches again on first use, on whichever loop
            # uses it (a blocking twin's fork has a loop thread of its own).
            await clone.detach()
        except BaseException:
            await clone.aclose()
            raise
        return clone

    async def _release_owned_image(self, docker: aiodocker.Docker) -> None:
        """With the container removed: its snapshots (restorable only onto it) and a fork's own image go too."""
        await self._drop_forgotten(docker, everything=True)
        owned, self._owned_image = self._owned_image, None
        if owned is not None:
            with contextlib.suppress(Exception):
                await docker.images.delete(owned, force=True)  # pyright: ignore[reportUnknownMemberType]


def _one_file_tar(name: str, data: bytes) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        info.mode = 0o600
        archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
