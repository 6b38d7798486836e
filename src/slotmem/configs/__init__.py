"""The built-in configs, shipped inside the package (so a wheel install finds them from any
directory): training configs (``mqar_lattice``, ``lm_bytes``, ...), the ``slotmem compare``
comparison files (``compare_*``) and model configs (``models/lattice-tiny``, ...).

Every lookup of a built-in config goes through ``builtin_path``; command-line arguments that
may be a file or a built-in name go through ``resolve_config``::

    builtin_path("compare_mqar")        # .../slotmem/configs/compare_mqar.yaml
    resolve_config("mqar_lattice")      # the built-in, unless ./mqar_lattice exists
    resolve_config("my/run.yaml")       # an existing file is used as is
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

_SUFFIXES = (".yaml", ".yml", ".json")


def config_dir() -> Path:
    """The folder holding the built-in configs (inside the installed package)."""
    return Path(str(resources.files(__name__)))


def builtin_names() -> list[str]:
    """Names of the built-in configs, e.g. ``['compare_mqar', ..., 'models/lattice-tiny', ...]``."""
    root = config_dir()
    return sorted(p.relative_to(root).with_suffix("").as_posix() for p in root.rglob("*") if p.suffix in _SUFFIXES)


_COMPARISONS = ("compare_", "ablations/")  # built-in comparison files (for `slotmem compare`)


def comparison_names() -> list[str]:
    """Built-in comparison configs (``slotmem compare``): ``compare_*`` and ``ablations/*``."""
    return [n for n in builtin_names() if n.startswith(_COMPARISONS)]


def training_names() -> list[str]:
    """Built-in training configs (``slotmem train``): neither comparisons nor model configs."""
    return [n for n in builtin_names() if not n.startswith(_COMPARISONS) and not n.startswith("models/")]


def builtin_path(name: str) -> Path:
    """Path of the built-in config ``name``: with or without ``.yaml`` (and an old ``configs/``
    prefix); model configs also without the ``models/`` prefix (``lattice-tiny``). Raises ``FileNotFoundError`` naming the
    built-in configs if there is none of that name."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"a built-in config name must be a non-empty str, got {name!r}")
    root = config_dir()
    if name.startswith("configs/"):  # the repository path of the built-ins before they moved into the package
        name = name[len("configs/"):]
    stem = name[: -len(Path(name).suffix)] if Path(name).suffix in _SUFFIXES else name
    for rel in (name, *(stem + s for s in _SUFFIXES), *("models/" + stem + s for s in _SUFFIXES)):
        p = root / rel
        if p.is_file():
            return p
    raise FileNotFoundError(f"no built-in config named {name!r}; built-in configs: {', '.join(builtin_names())}")


def resolve_config(name_or_path) -> Path:
    """An existing file as given, else the built-in config of that name (``builtin_path``).
    Raises ``FileNotFoundError`` naming both possibilities."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    try:
        return builtin_path(str(name_or_path))
    except FileNotFoundError:
        raise FileNotFoundError(
            f"config {str(name_or_path)!r}: no such file, and no built-in config of that name "
            f"(built-in: {', '.join(builtin_names())})"
        ) from None
