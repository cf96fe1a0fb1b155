"""``parity serve``'s setting flags, generated from :class:`ServeSettings`.

Every settings field annotated with a :class:`serving.grpc.settings.Flag` becomes a
flag: its name (``--field-name`` unless the ``Flag`` names another), its type (from
the field's annotation), its help (the ``Flag``'s) and, as every serve flag, a default
of ``None``: a flag not given leaves the setting to ``PARITY_SERVE_*`` or the field's
default. :func:`settings_argv` turns settings back into those flags, for the worker
processes of ``--workers``.
"""

from __future__ import annotations

import argparse
import types
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any, Union, get_args, get_origin

from pydantic.fields import FieldInfo

from serving.grpc.settings import Flag, ServeSettings


def name_list(text: str) -> list[str]:
    """A comma-separated flag value as a list of names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def setting_flags() -> Iterator[tuple[str, Flag, FieldInfo]]:
    """``(field name, its Flag, the field)`` for every setting that is a flag, in order."""
    for name, info in ServeSettings.model_fields.items():
        for meta in info.metadata:
            if isinstance(meta, Flag):
                yield name, meta, info


def _option(name: str, flag: Flag) -> str:
    return flag.name or "--" + name.replace("_", "-")


def _kind(annotation: Any) -> Any:
    """The annotation without ``| None``; a ``list[...]`` as ``list``."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return get_origin(annotation) or annotation


def add_setting_flags(
    parser: argparse.ArgumentParser, timestamp: Callable[[str], datetime]
) -> None:
    """Add one flag per setting that is a flag; ``timestamp`` parses a datetime's text."""
    types_by_kind: dict[Any, Any] = {int: int, float: float, datetime: timestamp, list: name_list}
    for name, flag, info in setting_flags():
        kind = _kind(info.annotation)
        options: dict[str, Any] = {"dest": name}
        if kind is bool:
            options.update(action="store_true", default=None)
        elif flag.repeat:
            options.update(action="append")
        else:
            options.update(type=types_by_kind.get(kind))
        if flag.choices is not None:
            options.update(choices=list(flag.choices))
        options.update(help=flag.help)
        if flag.metavar is not None:
            options.update(metavar=flag.metavar)
        parser.add_argument(_option(name, flag), **options)


def given_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings given as flags (a flag not given is left out)."""
    values = {name: getattr(args, name) for name, _, _ in setting_flags()}
    return {name: value for name, value in values.items() if value is not None}


def settings_argv(settings: ServeSettings, *, leave_out: set[str]) -> list[str]:
    """Flags that give a ``parity serve`` process ``settings`` (unset, false and empty
    settings left out, as are the fields named in ``leave_out``)."""
    argv: list[str] = []
    for name, flag, _ in setting_flags():
        value = getattr(settings, name)
        if name in leave_out or value is None or value is False or value == []:
            continue
        option = _option(name, flag)
        if value is True:
            argv.append(option)
        elif isinstance(value, list) and flag.repeat:
            for item in value:
                argv += [option, str(item)]
        elif isinstance(value, list):
            argv += [option, ",".join(value)]
        elif isinstance(value, datetime):
            argv += [option, value.isoformat()]
        else:
            argv += [option, str(value)]
    return argv
