"""The model card's inputs as it reads them: every JSON object a ``Recorded`` mapping that
knows which input it came from and where, so a key the card needs but an input lacks is
reported with its input and path (``train.hyperparameters.seed``), from Python helpers and
from the Jinja template alike (``CardUndefined``), instead of a bare KeyError or Jinja's
"'dict object' has no attribute"."""

from __future__ import annotations

from jinja2 import StrictUndefined, UndefinedError
from jinja2.utils import missing

from fairtrain.errors import FairtrainError


class MissingRecordedKey(FairtrainError, KeyError):
    """A key the card needs is absent from one recorded input. ``source`` names the input (a
    key of ``recorded``: "train", "evaluation"...), ``path`` the missing key's place in it
    (``train.hyperparameters.seed``), so the report stage can name the file and its stage."""

    def __init__(self, source: str, path: str) -> None:
        super().__init__(f"no key {path!r}")
        self.source, self.path = source, path

    def __str__(self) -> str:
        return str(self.args[0])


class Recorded(dict):
    """A parsed JSON object that knows where it sits in its input: a missing key raises
    ``MissingRecordedKey`` naming the input and the key's path instead of a bare KeyError."""

    __slots__ = ("_recorded_at",)

    def __missing__(self, key: object) -> None:
        source, path = self._recorded_at
        raise MissingRecordedKey(source, f"{path}.{key}")


def as_recorded(source: str, value: object, path: str | None = None) -> object:
    """``value`` with every JSON object in it (nested in objects and lists) a ``Recorded``."""
    path = source if path is None else path
    if isinstance(value, dict):
        out = Recorded((k, as_recorded(source, v, f"{path}.{k}")) for k, v in value.items())
        out._recorded_at = (source, path)
        return out
    if isinstance(value, list):
        return [as_recorded(source, v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


class CardUndefined(StrictUndefined):
    """StrictUndefined that, for a key missing from a recorded input, raises
    ``MissingRecordedKey`` (input and key path) instead of "'dict object' has no attribute"."""

    __slots__ = ()

    def __init__(self, hint=None, obj=missing, name=None, exc=UndefinedError) -> None:
        if isinstance(obj, Recorded) and hint is None and name is not None:
            source, path = obj._recorded_at
            missing = MissingRecordedKey(source, f"{path}.{name}")
            exc = lambda _message: missing  # noqa: E731 - Undefined raises exc(message)
        super().__init__(hint, obj, name, exc)
