"""What a run directory may hold, what ``--overwrite`` may delete, and the lock that makes it one run's.

* A diffalign run directory holds ``config.yaml`` plus only the entries a run writes
  (:data:`RUN_ENTRIES`, and the hidden temporaries of its atomic writes). ``--overwrite`` deletes those
  entries and nothing else, and only in such a directory: a directory holding anything else (a thesis,
  photos) is refused, and so are ``/``, the home directory, the working directory and its parents,
  whatever they hold.
* ``DIR/.lock`` holds the pid and host of the run using DIR. It is created with O_EXCL, so a second
  run (or an ``--overwrite``) on DIR is refused with one line while the first is alive; a lock whose
  process is dead (same host) is stale and taken over.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import time
from pathlib import Path

from ..errors import DiffalignError

CONFIG_FILE = "config.yaml"
LOCK_FILE = ".lock"
# eval.jsonl: the per-evaluation log of prompt-set runs (design.md, section 3b)
RUN_ENTRIES = {CONFIG_FILE, "checkpoints", "final", "logs", "eval.jsonl", LOCK_FILE}
# temporaries of atomic writes a killed run can leave: .config.yaml.XXXX, .final.XXXX, .final.old-PID
_TEMPORARY = re.compile(r"^\.(config\.yaml|final|eval\.jsonl)\..+$")
# the final/ of an earlier end, moved aside when a run is extended past it (:func:`retire_final`)
_EARLIER_FINAL = re.compile(r"^final-step-\d{6,}(-\d+)?$")


def is_run_entry(name: str) -> bool:
    """Whether a run writes entries by this name (its files, its temporaries, an earlier final/)."""
    return name in RUN_ENTRIES or bool(_TEMPORARY.match(name)) or bool(_EARLIER_FINAL.match(name))


def foreign_entries(directory: Path) -> list[str]:
    """Names in ``directory`` that no diffalign run writes (sorted)."""
    return sorted(c.name for c in Path(directory).iterdir() if not is_run_entry(c.name))


def retire_final(directory: Path, step: int) -> Path | None:
    """Move ``final/`` (the end of the run at ``step``) to ``final-step-NNNNNN/`` when the run is
    extended past it, so that ``final/`` is only ever the end of a completed run: an extension that is
    interrupted leaves no stale final/ behind, and the earlier weights are kept, named by their step.
    Returns the new path (None without a final/)."""
    final = Path(directory) / "final"
    if not final.is_dir():
        return None
    target = final.with_name(f"final-step-{step:06d}")
    suffix = 1
    while target.exists():  # never replace an earlier one
        suffix += 1
        target = final.with_name(f"final-step-{step:06d}-{suffix}")
    final.rename(target)
    return target


def refuse_protected(directory: Path) -> None:
    """Never delete /, ~, the working directory or any directory above it, run or not."""
    resolved = Path(directory).expanduser().resolve()
    cwd = Path.cwd().resolve()
    protected = {Path("/"), Path.home().resolve(), cwd, *cwd.parents}
    if resolved in protected:
        raise DiffalignError(f"refusing --overwrite of {directory} ({resolved}): it is /, the home directory or the "
                             "working directory or above it; use a fresh --output-dir")


def check_overwritable(directory: Path) -> None:
    """One line unless ``directory`` is a diffalign run that --overwrite may delete."""
    refuse_protected(directory)
    if not (Path(directory) / CONFIG_FILE).is_file():
        raise DiffalignError(f"output directory {directory} is not empty and holds no diffalign run (no {CONFIG_FILE}); "
                             "--overwrite only replaces a diffalign run, so use another --output-dir")
    foreign = foreign_entries(directory)
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise DiffalignError(f"output directory {directory} holds files that are not a diffalign run's ({shown}); "
                             "--overwrite deletes only a run's own files, so move them or use another --output-dir")


def remove_run(directory: Path) -> None:
    """Delete a run's entries (never the lock, never anything foreign: :func:`check_overwritable` first)."""
    for child in Path(directory).iterdir():
        if child.name == LOCK_FILE or not is_run_entry(child.name):
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def remove_leftovers(directory: Path) -> list[Path]:
    """Temporaries a killed run left at the top of ``directory`` (.final.*, .config.yaml.*): never read, so deleted."""
    directory = Path(directory)
    found = [c for c in directory.iterdir() if _TEMPORARY.match(c.name)] if directory.is_dir() else []
    for child in found:
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child, ignore_errors=True)
        else:
            child.unlink(missing_ok=True)
    return found


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return float("inf")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    except (OverflowError, ValueError):
        return False
    return True


class RunLock:
    """``DIR/.lock`` with {"pid", "host"}; :meth:`acquire` refuses a live holder and takes over a dead one's."""

    def __init__(self, directory: Path):
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.held = False
        self.took_over: dict | None = None

    def _holder(self) -> dict | None:
        try:
            holder = json.loads(self.path.read_text())
            return holder if isinstance(holder, dict) and isinstance(holder.get("pid"), int) else {}
        except FileNotFoundError:
            return None
        except (OSError, ValueError):
            return {}  # unreadable or half-written: nobody can be shown to hold it

    def acquire(self) -> "RunLock":
        self.created = not self.directory.exists()  # removed again at release if the run wrote nothing
        self.directory.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname()}
        for _ in range(20):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
            except FileExistsError:
                holder = self._holder()
                if holder is None:
                    continue  # released in between
                same_host = holder.get("host") == me["host"]
                if holder and not (same_host and not _pid_alive(holder["pid"])):
                    where = "" if same_host else f" on host {holder.get('host')!r}"
                    raise DiffalignError(
                        f"output directory {self.directory} is in use by pid {holder['pid']}{where} (lock {self.path}); "
                        "wait for that run to end, or delete the lock file if that process is gone"
                    ) from None
                if not holder and _age(self.path) < 2.0:
                    time.sleep(0.2)  # created this instant, its pid not yet written: look again
                    continue
                self.took_over = holder  # a dead process's (or an unreadable) lock: stale
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(me))
            self.held = True
            return self
        raise DiffalignError(f"could not take the lock {self.path}; another run is starting on {self.directory}")

    def release(self) -> None:
        if self.held and self._holder() == {"pid": os.getpid(), "host": socket.gethostname()}:
            self.path.unlink(missing_ok=True)
            if getattr(self, "created", False):
                try:
                    self.directory.rmdir()  # only if empty: a run that failed before writing leaves no trace
                except OSError:
                    pass
        self.held = False

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
