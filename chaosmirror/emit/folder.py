"""Write rendered files into a folder. Each file is replaced whole (a reader never sees half of one);
a secret file is created 0600 with os.open (O_EXCL), so it is never readable by others, not even for
a moment. Other files get 0644 less the umask."""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

from chaosmirror.emit.model import ConfigError, OutputError, Rendered


def _safe(folder: Path, relative: str) -> Path:
    parts = PurePosixPath(relative).parts
    if not parts or PurePosixPath(relative).is_absolute() or ".." in parts:
        raise ConfigError(f"refusing to write {relative!r} outside {folder}")
    return folder.joinpath(*parts)


def write_config(files: list[Rendered], folder: Path) -> list[Path]:
    """Write every file under `folder` (created if needed); return the paths written, in order."""
    written: list[Path] = []
    try:
        folder.mkdir(parents=True, exist_ok=True)
        for rendered in files:
            path = _safe(folder, rendered.path)
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
            tmp.unlink(missing_ok=True)
            mode = 0o600 if rendered.secret else 0o644
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(rendered.text)
            tmp.replace(path)
            written.append(path)
    except OSError as exc:
        raise OutputError(f"cannot write the configuration into {folder}: {exc}") from exc
    return written
