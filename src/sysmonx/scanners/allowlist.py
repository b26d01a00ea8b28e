"""Allow-lists: documented, benign causes of scanner findings, as data the user can extend.

The default list is ``sysmonx/data/scanner-allowlist.yaml`` (JIT runtimes, runc's sealed memfd
re-exec, package upgrades, debuggers, programs that retitle themselves, uprobes' breakpoints);
``--allowlist FILE`` adds entries of the same shape. Shape: finding name -> list of entries,
each a mapping of ``image`` (glob on Image), ``details`` (glob on Details), ``package_upgrade``
(``deleted_exe``: the path now holds a file the package manager installed) and ``why``; an
entry dismisses a finding when every key it has (but ``why``) matches.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Union

from ..core.errors import ConfigError
from .base import Finding

__all__ = ["AllowEntry", "AllowList", "default_allowlist", "dpkg_owns"]

_KEYS = {"image", "details", "package_upgrade", "why"}


@dataclass(frozen=True)
class AllowEntry:
    """One entry (module docstring); ``source`` is the file it came from."""

    image: Optional[str] = None
    details: Optional[str] = None
    package_upgrade: bool = False
    why: str = ""
    source: str = ""

    def matches(self, finding: Finding, image: str) -> bool:
        """Every key given matches ``finding`` on a process running ``image``."""
        if self.image is not None and not fnmatch.fnmatchcase(image, self.image):
            return False
        if self.details is not None and not fnmatch.fnmatchcase(finding.details, self.details):
            return False
        if self.package_upgrade:
            path = image[:-10] if image.endswith(" (deleted)") else image
            if not dpkg_owns(path):
                return False
        return True


@dataclass
class AllowList:
    """finding name -> entries. ``yara:*`` keys apply to every YARA rule."""

    entries: dict[str, list[AllowEntry]] = field(default_factory=dict)

    def dismiss(self, finding: Finding, image: str) -> Optional[AllowEntry]:
        """The entry that dismisses ``finding`` (on a process running ``image``), else ``None``."""
        for key in (finding.finding, "yara:*" if finding.finding.startswith("yara:") else None):
            for e in self.entries.get(key or "", ()):
                if e.matches(finding, image):
                    return e
        return None

    def extend(self, path: Union[str, Path]) -> None:
        """Add the entries of a YAML file. Raises :class:`ConfigError` (with the path) on a
        file that cannot be read or has another shape."""
        import yaml
        p = str(path)
        try:
            with open(p, encoding="utf-8") as f:
                data = yaml.safe_load(f)
        except OSError as exc:
            raise ConfigError(f"cannot read the allow-list: {exc.strerror}", p) from None
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            raise ConfigError(f"allow-list is not valid YAML: {getattr(exc, 'problem', exc)}", p,
                              mark.line + 1 if mark is not None else None) from None
        self._add(data, p)

    def _add(self, data: Any, source: str) -> None:
        if data is None:
            return
        if not isinstance(data, dict):
            raise ConfigError("an allow-list maps finding names to lists of entries", source)
        for name, items in data.items():
            if not isinstance(items, list):
                raise ConfigError(f"{name}: expected a list of entries", source)
            for item in items:
                if not isinstance(item, dict) or not item or set(item) - _KEYS \
                        or set(item) <= {"why"}:
                    raise ConfigError(f"{name}: an entry is a mapping of image, details, "
                                      f"package_upgrade and why (at least one but why): {item!r}",
                                      source)
                self.entries.setdefault(str(name), []).append(AllowEntry(
                    item.get("image"), item.get("details"), bool(item.get("package_upgrade")),
                    str(item.get("why", "")), source))

    def __len__(self) -> int:
        return sum(len(v) for v in self.entries.values())


def default_allowlist() -> AllowList:
    """The packaged default allow-list (module docstring)."""
    import yaml
    text = resources.files("sysmonx").joinpath("data/scanner-allowlist.yaml").read_text("utf-8")
    al = AllowList()
    al._add(yaml.safe_load(text), "default")
    return al


_dpkg: dict[str, Any] = {"files": None}


def dpkg_owns(path: str, info_dir: str = "/var/lib/dpkg/info") -> bool:
    """True when a dpkg package lists ``path`` (or its ``/usr``-merged twin) among its files.
    The lists are read once per process."""
    files = _dpkg["files"]
    if files is None:
        files = set()
        try:
            names = os.listdir(info_dir)
        except OSError:
            names = []
        for n in names:
            if n.endswith(".list"):
                try:
                    with open(os.path.join(info_dir, n), "rb") as f:
                        files.update(line.rstrip(b"\n") for line in f)
                except OSError:
                    continue
        _dpkg["files"] = files
    b = os.fsencode(path)
    twins = {b, b[4:] if b.startswith(b"/usr/") else b"/usr" + b}
    return any(t in files for t in twins)
