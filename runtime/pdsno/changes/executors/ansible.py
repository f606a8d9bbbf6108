"""The ``ansible`` executor: a task list or a playbook run against one device at a time.

Payload: ``{"executor": "ansible", "tasks": [...]}`` or ``{"executor": "ansible", "playbook": "x.yml"}``,
optional ``vars`` (extra vars of the run) and ``rollback`` (``{"tasks": [...]}`` or ``{"playbook": ...}``,
with its own optional ``vars``): the payload that undoes the change, mandatory from MEDIUM up (the
approval flow enforces that; here it is what :meth:`AnsibleExecutor.rollback` runs). A playbook is named
relative to the configured playbook directory and must stay inside it: a proposal cannot run any file
of the controller host.

``plan`` is ``ansible-playbook --check --diff`` (each changed task is one :class:`FieldChange`, its
before/after from the module's diff); ``commit`` runs it; ``verify`` is a second check run that must
change nothing (the device holds the state). Every run gets a generated inventory holding only the
target (``ansible_host`` = the device's IP, plus the configured connection variables), runs with the
``pdsno_json`` stdout callback (see :mod:`.ansible_callback`), in a fresh directory, and is killed
(its process group) after ``timeout_s``. A task list runs as a one-play playbook on ``hosts: all``
without fact gathering; a playbook should target ``all`` too (the inventory holds the one device).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from pdsno.changes.executors.base import DevicePlan, FieldChange
from pdsno.errors import PdsnoError, ReasonCode
from pdsno.nib.models import Device

log = logging.getLogger(__name__)

CALLBACK_DIR = Path(__file__).resolve().parent / "ansible_callback"
CALLBACK_NAME = "pdsno_json"
_OUTPUT_MAX = 4 * 1024 * 1024
"""Bytes of a run's stdout kept: more is not a result of ours."""
_ERROR_TAIL = 600


@dataclass(frozen=True, slots=True)
class TaskResult:
    host: str
    task: str
    status: str
    changed: bool
    diff: list[Any]
    msg: str


@dataclass(frozen=True, slots=True)
class _Run:
    """What one ``ansible-playbook`` run says, per task (of the one host)."""

    returncode: int
    results: list[TaskResult]
    stderr: str

    @property
    def failed(self) -> list[TaskResult]:
        return [r for r in self.results if r.status in ("failed", "unreachable")]

    @property
    def changed(self) -> list[TaskResult]:
        return [r for r in self.results if r.status == "changed"]


def _diff_side(diffs: Sequence[Any], side: str) -> Any:
    """The ``before`` (or ``after``) text of a task's diff(s); None when the module gave none."""
    texts = [d[side] for d in diffs if isinstance(d, Mapping) and side in d]
    if not texts:
        return None
    return texts[0] if len(texts) == 1 else texts


def field_changes(results: Sequence[TaskResult]) -> tuple[FieldChange, ...]:
    """One entry per changed task, keyed ``N: task name``; a task that gives no diff (a command) shows
    ``before`` None and ``after`` its message, so it still counts as a change."""
    changes = []
    for n, result in enumerate(results, 1):
        if result.status != "changed":
            continue
        before, after = _diff_side(result.diff, "before"), _diff_side(result.diff, "after")
        if before == after:
            before, after = None, result.msg or "changed"
        changes.append(FieldChange(f"{n}: {result.task}", before, after))
    return tuple(changes)


def parse_output(stdout: str) -> list[TaskResult]:
    """The ``pdsno_json`` callback's object: the last line of stdout that is one."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if not line.startswith("{"):
            continue
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if isinstance(data, dict) and isinstance(data.get("results"), list):
            return [
                TaskResult(
                    host=str(r.get("host", "")),
                    task=str(r.get("task", "")),
                    status=str(r.get("status", "")),
                    changed=bool(r.get("changed")),
                    diff=list(r.get("diff") or []),
                    msg=str(r.get("msg", "")),
                )
                for r in data["results"]
                if isinstance(r, dict)
            ]
    raise PdsnoError(
        "ansible-playbook printed no result (did it start?)", code=ReasonCode.EXECUTOR_UNAVAILABLE
    )


class AnsibleExecutor:
    """Playbooks and task lists through ``ansible-playbook``; see the module docstring."""

    name = "ansible"

    def __init__(
        self,
        *,
        playbook_dir: Path | None = None,
        host_vars: Mapping[str, Any] | None = None,
        device_vars: Mapping[str, Mapping[str, Any]] | None = None,
        timeout_s: float = 300.0,
        ansible_playbook: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        """``host_vars``: inventory variables of every target (connection settings); ``device_vars``:
        more per device, keyed by device ID, hostname or IP address; ``env``: added to the runs'
        environment (e.g. ``ANSIBLE_CONFIG``)."""
        self.playbook_dir = playbook_dir.resolve() if playbook_dir is not None else None
        self.host_vars = dict(host_vars or {})
        self.device_vars = {k: dict(v) for k, v in (device_vars or {}).items()}
        self.timeout_s = timeout_s
        self._program = ansible_playbook
        self.env = dict(env or {})

    # -- the protocol -------------------------------------------------------------------------------

    def validate(self, payload: Mapping[str, Any]) -> None:
        self._job(payload, what="payload")
        rollback = payload.get("rollback")
        if rollback is not None:
            if not isinstance(rollback, Mapping):
                raise PdsnoError(
                    "ansible payload: rollback is {tasks: [...]} or {playbook: ...}",
                    code=ReasonCode.INVALID_REQUEST,
                )
            self._job(rollback, what="rollback")

    async def plan(self, device: Device, payload: Mapping[str, Any]) -> DevicePlan:
        self.validate(payload)
        run = await self._run(device, payload, check=True)
        _raise_failed(device, run, ReasonCode.DEVICE_READ_FAILED, "check run")
        rollback = payload.get("rollback")
        return DevicePlan(
            device_id=device.device_id,
            changes=field_changes(run.results),
            rollback_payload={"executor": self.name, **rollback} if isinstance(rollback, Mapping) else {},
            details={"job": _job_only(payload), "tasks": len(run.results)},
        )

    async def commit(self, device: Device, plan: DevicePlan) -> None:
        run = await self._run(device, _planned(plan), check=False)
        _raise_failed(device, run, ReasonCode.DEVICE_WRITE_FAILED, "run")

    async def verify(self, device: Device, plan: DevicePlan) -> bool:
        run = await self._run(device, _planned(plan), check=True)
        _raise_failed(device, run, ReasonCode.DEVICE_READ_FAILED, "verifying check run")
        if run.changed:
            log.warning(
                "device does not hold the change",
                extra={"device_id": device.device_id, "tasks": [r.task for r in run.changed]},
            )
        return not run.changed

    async def rollback(self, device: Device, plan: DevicePlan) -> None:
        if not plan.rollback_payload:
            raise PdsnoError(
                f"{device.device_id}: the change has no rollback playbook or tasks",
                code=ReasonCode.DEVICE_WRITE_FAILED,
            )
        run = await self._run(device, plan.rollback_payload, check=False)
        _raise_failed(device, run, ReasonCode.DEVICE_WRITE_FAILED, "rollback run")

    # -- internals ----------------------------------------------------------------------------------

    def _job(self, payload: Mapping[str, Any], *, what: str) -> None:
        allowed = {"executor", "tasks", "playbook", "vars", "rollback", "intent"}
        if what == "rollback":
            allowed -= {"rollback", "intent"}
        unknown = set(payload) - allowed
        if unknown:
            raise PdsnoError(
                f"ansible {what}: unknown key(s) {', '.join(sorted(unknown))}",
                code=ReasonCode.INVALID_REQUEST,
            )
        if payload.get("executor", self.name) != self.name:
            raise PdsnoError(
                f"ansible {what}: it is for executor {payload.get('executor')!r}",
                code=ReasonCode.INVALID_REQUEST,
            )
        tasks, playbook = payload.get("tasks"), payload.get("playbook")
        if (tasks is None) == (playbook is None):
            raise PdsnoError(
                f"ansible {what}: give tasks or playbook (one of them)", code=ReasonCode.INVALID_REQUEST
            )
        if tasks is not None and (
            not isinstance(tasks, list) or not tasks or not all(isinstance(t, Mapping) for t in tasks)
        ):
            raise PdsnoError(
                f"ansible {what}: tasks is a non-empty list of task mappings", code=ReasonCode.INVALID_REQUEST
            )
        if playbook is not None:
            _check_playbook_name(playbook, what=what)
            if self.playbook_dir is not None:
                self._playbook_path(playbook, what=what)
        variables = payload.get("vars")
        if variables is not None and not isinstance(variables, Mapping):
            raise PdsnoError(f"ansible {what}: vars is a mapping", code=ReasonCode.INVALID_REQUEST)

    def _playbook_path(self, playbook: Any, *, what: str) -> Path:
        if self.playbook_dir is None:
            raise PdsnoError(
                f"ansible {what}: no playbook directory is configured (changes.ansible_playbook_dir); give tasks",
                code=ReasonCode.INVALID_REQUEST,
            )
        name = _check_playbook_name(playbook, what=what)
        # resolved: a symlink inside the directory may still point out of it
        path = (self.playbook_dir / name).resolve()
        if not path.is_relative_to(self.playbook_dir):
            raise PdsnoError(
                f"ansible {what}: playbook {playbook!r} is outside the playbook directory",
                code=ReasonCode.INVALID_REQUEST,
            )
        if not path.is_file():
            raise PdsnoError(
                f"ansible {what}: no playbook {playbook!r} in {self.playbook_dir}",
                code=ReasonCode.INVALID_REQUEST,
            )
        return path

    def program(self) -> str:
        """``ansible-playbook``: the configured one, else beside our Python (a venv), else on PATH."""
        if self._program:
            return self._program
        beside = Path(sys.executable).parent / "ansible-playbook"
        found = str(beside) if beside.is_file() else shutil.which("ansible-playbook")
        if found is None:
            raise PdsnoError(
                "ansible-playbook is not installed (pip install ansible-core)",
                code=ReasonCode.EXECUTOR_UNAVAILABLE,
            )
        return found

    def inventory(self, device: Device) -> dict[str, Any]:
        """The run's inventory: the one device, by its ID, with its address and connection variables."""
        if not device.ip_address:
            raise PdsnoError(
                f"{device.device_id}: no IP address to reach it by", code=ReasonCode.DEVICE_UNREACHABLE
            )
        host: dict[str, Any] = dict(self.host_vars)
        for key in (device.device_id, device.hostname, device.ip_address):
            if key and key in self.device_vars:
                host.update(self.device_vars[key])
        if host.get("ansible_connection") == "local":
            # modules run on the controller host: by the Python that runs ansible-playbook (ours, with
            # ansible installed), not by whatever interpreter discovery finds first on the PATH
            host.setdefault("ansible_python_interpreter", "{{ ansible_playbook_python }}")
        host.update(
            ansible_host=device.ip_address,
            pdsno_device_id=device.device_id,
            pdsno_hostname=device.hostname,
        )
        return {"all": {"hosts": {device.device_id: host}}}

    async def _run(self, device: Device, job: Mapping[str, Any], *, check: bool) -> _Run:
        with tempfile.TemporaryDirectory(prefix="pdsno-ansible-") as tmp:
            work = Path(tmp)
            inventory = work / "inventory.yml"
            inventory.write_text(yaml.safe_dump(self.inventory(device), sort_keys=False))
            if job.get("playbook") is not None:
                playbook = self._playbook_path(job["playbook"], what="payload")
            else:
                playbook = work / "change.yml"
                play = {
                    "name": "pdsno change",
                    "hosts": "all",
                    "gather_facts": False,
                    "tasks": list(job["tasks"]),
                }
                playbook.write_text(yaml.safe_dump([play], sort_keys=False))
            argv = [self.program(), "-i", str(inventory), str(playbook)]
            if job.get("vars"):
                extra = work / "vars.json"
                extra.write_text(json.dumps(job["vars"]))
                argv += ["--extra-vars", f"@{extra}"]
            if check:
                argv += ["--check", "--diff"]
            return await self._spawn(device, argv, work)

    async def _spawn(self, device: Device, argv: list[str], work: Path) -> _Run:
        env = {
            **os.environ,
            "ANSIBLE_STDOUT_CALLBACK": CALLBACK_NAME,
            "ANSIBLE_CALLBACK_PLUGINS": str(CALLBACK_DIR),
            "ANSIBLE_RETRY_FILES_ENABLED": "false",
            "ANSIBLE_NOCOLOR": "true",
            "ANSIBLE_LOCAL_TEMP": str(work / "tmp"),
            **self.env,
        }
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                cwd=work,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,  # its own process group: a timeout ends the run and its workers
            )
        except OSError as exc:
            raise PdsnoError(
                f"cannot start ansible-playbook: {exc}", code=ReasonCode.EXECUTOR_UNAVAILABLE
            ) from None
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except TimeoutError:
            raise PdsnoError(
                f"{device.device_id}: ansible-playbook ran longer than {self.timeout_s:g} s and was stopped",
                code=ReasonCode.EXECUTOR_TIMEOUT,
                device_id=device.device_id,
            ) from None
        finally:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(proc.wait(), 5)
        err = stderr.decode(errors="replace")
        try:
            results = parse_output(stdout[:_OUTPUT_MAX].decode(errors="replace"))
        except PdsnoError:
            raise PdsnoError(
                f"{device.device_id}: ansible-playbook failed before running a task (exit {proc.returncode}): "
                f"{_tail(err)}",
                code=ReasonCode.INVALID_REQUEST if proc.returncode == 4 else ReasonCode.EXECUTOR_UNAVAILABLE,
                device_id=device.device_id,
            ) from None
        return _Run(int(proc.returncode or 0), results, err)


def _check_playbook_name(playbook: Any, *, what: str) -> str:
    """A playbook's name as any controller can judge it. The GC and the RCs run no playbooks and hold no
    playbook directory: they refuse what can be valid nowhere, the LC also what it does not have."""
    if not isinstance(playbook, str) or not playbook:
        raise PdsnoError(f"ansible {what}: playbook is a file name", code=ReasonCode.INVALID_REQUEST)
    name = PurePosixPath(playbook)
    if name.is_absolute() or ".." in name.parts:
        raise PdsnoError(
            f"ansible {what}: playbook {playbook!r} is outside the playbook directory",
            code=ReasonCode.INVALID_REQUEST,
        )
    return playbook


def _tail(text: str) -> str:
    text = " ".join(text.split())
    return text[-_ERROR_TAIL:] or "(no output)"


def _job_only(payload: Mapping[str, Any]) -> dict[str, Any]:
    """What commit and verify run again: the payload without its rollback."""
    return {k: v for k, v in payload.items() if k in ("tasks", "playbook", "vars")}


def _planned(plan: DevicePlan) -> Mapping[str, Any]:
    job = plan.details.get("job")
    if not isinstance(job, Mapping):
        raise PdsnoError(
            f"{plan.device_id}: not a plan of the ansible executor", code=ReasonCode.INVALID_REQUEST
        )
    return job


def _raise_failed(device: Device, run: _Run, code: ReasonCode, what: str) -> None:
    failed = run.failed
    if not failed:
        if run.returncode != 0:
            raise PdsnoError(
                f"{device.device_id}: ansible {what} exited {run.returncode}: {_tail(run.stderr)}",
                code=code,
                device_id=device.device_id,
            )
        return
    first = failed[0]
    raise PdsnoError(
        f"{device.device_id}: ansible {what}: task {first.task!r} {first.status}: {first.msg[:_ERROR_TAIL]}",
        code=ReasonCode.DEVICE_UNREACHABLE if first.status == "unreachable" else code,
        device_id=device.device_id,
        task=first.task,
    )
