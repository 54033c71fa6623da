"""One ``Settings`` for every policy, and the one place each setting's default is written.

Each policy declares the options it reads (:class:`Option`: name, default, help). ``Settings`` is
built from those declarations, and ``sambay-serve`` adds a command-line flag for every option that
has one, with the same default and help (:func:`sambay_server.cli.build_parser`) — so a new policy
brings its flag with it, and no default is written twice.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any


class SettingsError(ValueError):
    """A setting that cannot work (its message names the flag)."""


@dataclass(frozen=True)
class Option:
    """One setting of one policy.

    ``flag``: the command-line flag sambay-serve adds (``--`` + the name with dashes unless given);
    ``None`` for settings that come from a flag vLLM already has (read from ``args.<arg>``).
    ``derive``: computes the value from the parsed arguments when it was left at ``None``.
    """

    name: str
    default: Any
    help: str
    type: Callable[[str], Any] | None = None
    flag: str | None = ""
    arg: str = ""
    derive: Callable[[argparse.Namespace], Any] | None = None

    @property
    def cli_flag(self) -> str | None:
        if self.flag is None:
            return None
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def attribute(self) -> str:
        """Where the value lives on the parsed ``args``."""
        return self.arg or self.name


class Settings:
    """The values of the options of a list of policies (attribute access: ``settings.max_pending``)."""

    def __init__(self, options: Iterable[Option], values: Mapping[str, Any] | None = None) -> None:
        self._options = {o.name: o for o in options}
        values = dict(values or {})
        unknown = sorted(set(values) - set(self._options))
        if unknown:
            raise TypeError(f"unknown setting(s): {', '.join(unknown)}")
        given = argparse.Namespace(**{n: values.get(n, o.default) for n, o in self._options.items()})
        for name, option in self._options.items():
            value = values.get(name, option.default)
            if value is None and option.derive is not None:
                value = option.derive(given)  # derived from the other values, as from_args does
            setattr(self, name, value)

    @classmethod
    def from_args(cls, options: Iterable[Option], args: argparse.Namespace) -> Settings:
        """The values sambay-serve was started with (an option missing from ``args`` — e.g. under a
        plain ``vllm serve --middleware ...`` — keeps its default)."""
        options = list(options)
        values = {}
        for option in options:
            value = getattr(args, option.attribute, option.default)
            if value is None and option.derive is not None:
                value = option.derive(args)
            values[option.name] = value
        return cls(options, values)

    def option(self, name: str) -> Option:
        return self._options[name]

    def __repr__(self) -> str:
        return "Settings(" + ", ".join(f"{n}={getattr(self, n)!r}" for n in self._options) + ")"
