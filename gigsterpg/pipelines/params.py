"""A pipeline's parameters, derived: the CLI's flags, the API's request model and JSON schema, the files check.

Everything here reads ``Pipeline.params`` (``gigsterpg.pipelines.contract.Param``); nothing names a pipeline.
"""
import argparse
import datetime
import keyword
from pathlib import Path
from typing import Annotated, Any, Dict, List, Literal, Optional, Type

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError, create_model

from gigsterpg.exc import ConfigError
from gigsterpg.pipelines.contract import CHOICE, DAY, FLAG, INTEGER, NUMBER, PATH, Param, Pipeline
from gigsterpg.text import place, shown

FILES_ROOT = "GIGSTERPG_FILES_ROOT"
PYTHON_TYPES = {INTEGER: int, NUMBER: float, FLAG: bool, DAY: datetime.date}
MAX_TEXT = 4096  # the longest text parameter over HTTP (a table's name, a path, a time zone)


def _day(value: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError("a day must be written YYYY-MM-DD") from None


def number(kind, low: float, high: float, what: str):
    """An argparse type: ``kind(value)`` from ``low`` to ``high``, else a message saying ``what`` it must be
    (never the value: it may be a password typed in the wrong place)."""
    def parse(value: str):
        try:
            found = kind(value)
        except ValueError:
            found = None
        if found is None or not low <= found <= high:
            raise argparse.ArgumentTypeError(f"the value is not {what}")
        return found
    return parse


# The CLI's checks of numbers, one each (the sync's, the exports', the demo's, serve's).
positive = number(int, 1, float("inf"), "a whole number of 1 or more")
count = number(int, 0, float("inf"), "a whole number of 0 or more")
seconds = number(float, 0, 1e9, "a number of seconds")
rate = number(float, 0, 1, "a number between 0 and 1")
port = number(int, 1, 65535, "a port number (1-65535)")


def _cli_type(param: Param):
    """The argparse ``type`` of ``param``: its own, or its kind's (None: the text as typed)."""
    if param.parse is not None:
        return param.parse
    if param.kind == DAY:
        return _day
    if param.kind in (INTEGER, NUMBER):
        low = -float("inf") if param.minimum is None else param.minimum
        high = float("inf") if param.maximum is None else param.maximum
        what = "a whole number" if param.kind == INTEGER else "a number"
        if param.minimum is not None:
            what += f" of {param.minimum:g} or more"
        return number(PYTHON_TYPES[param.kind], low, high, what)
    return None


def add_arguments(parser: argparse.ArgumentParser, pipeline: Pipeline) -> None:
    """The pipeline's parameters as ``parser``'s arguments, in their order: the CLI of every pipeline."""
    groups: Dict[str, Any] = {}
    for param in pipeline.params:
        target = parser
        if param.group is not None:
            if param.group not in groups:
                groups[param.group] = parser.add_mutually_exclusive_group()
            target = groups[param.group]
        dest = param.dest or param.name
        for flag, value, help_ in param.switches:
            target.add_argument(flag, dest=dest, action="store_const", const=value, help=help_)
        if param.switches:
            continue
        options: Dict[str, Any] = {"help": param.help or None}
        if param.kind == FLAG:
            target.add_argument(param.option, dest=dest, action="store_true", **options)
            continue
        options.update(type=_cli_type(param), metavar=param.metavar, choices=param.choices or None)
        if param.positional:
            target.add_argument(dest, nargs="+" if param.many else None, **options)
            continue
        if param.many:
            options.update(action="append", default=[])
        else:
            options["default"] = param.default
        if param.const is not None:
            options.update(nargs="?", const=param.const)
        target.add_argument(param.option, dest=dest, required=param.required, **options)


def from_args(pipeline: Pipeline, args: argparse.Namespace) -> Dict[str, Any]:
    """The parameters' values in parsed arguments (a parameter the parser lacks: its default)."""
    return {param.name: getattr(args, param.dest or param.name, param.default) for param in pipeline.params}


def _field(param: Param):
    if param.kind == CHOICE:
        kind: Any = Literal[param.choices]
    else:
        kind = PYTHON_TYPES.get(param.kind, str)
    if kind is str:  # a name or a path: a text of a length nothing real reaches
        kind = Annotated[str, StringConstraints(max_length=MAX_TEXT)]
    if param.many:
        kind = List[kind]
    constraints: Dict[str, Any] = {}
    if param.kind in (INTEGER, NUMBER):
        # Over HTTP a number fits PostgreSQL's bigint, and is a number (1e999 reads as infinity in JSON).
        low, high = -(2 ** 63), 2 ** 63 - 1
        constraints = {"ge": low if param.minimum is None else param.minimum,
                       "le": high if param.maximum is None else param.maximum}
        if param.kind == NUMBER:
            constraints["allow_inf_nan"] = False
    default = ... if param.required else ([] if param.many and param.default is None else param.default)
    if default is None:
        kind = Optional[kind]
    return kind, Field(default, description=param.description or None, alias=param.name, **constraints)


def request_model(pipeline: Pipeline) -> Type[BaseModel]:
    """The pydantic model of the pipeline's parameters over HTTP (no CLI-only ones; unknown names refused)."""
    # A name BaseModel has (schema) or Python keeps (from) is the field's alias, the field itself named_.
    fields = {_python(param.name): _field(param) for param in pipeline.params if param.http}
    name = "".join(part.capitalize() for part in pipeline.name.replace("-", "_").split("_")) + "Params"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def _python(name: str) -> str:
    return name + "_" if keyword.iskeyword(name) or hasattr(BaseModel, name) else name


def json_schema(pipeline: Pipeline) -> dict:
    """The JSON schema of the parameters over HTTP (what ``GET /pipelines`` answers)."""
    return request_model(pipeline).model_json_schema(by_alias=True)


def validate(pipeline: Pipeline, values: Dict[str, Any]) -> Dict[str, Any]:
    """Parameters sent over HTTP, checked and completed with the defaults (CLI-only ones: their defaults).

    Raises ConfigError naming each field that does not fit (never its value: it may be a password).
    """
    try:
        given = request_model(pipeline).model_validate(values).model_dump(by_alias=True)
    except ValidationError as err:
        why = "; ".join(f"{place(e['loc'])}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"bad parameters for pipeline {pipeline.name}", why[:2000],
                          f"see GET /pipelines for what {pipeline.name} takes") from None
    values = {param.name: given.get(param.name, param.default) for param in pipeline.params}
    _exclusive(pipeline, values)
    return values


def _exclusive(pipeline: Pipeline, values: Dict[str, Any]) -> None:
    """A ConfigError when two parameters of one group (the CLI's mutually exclusive one) are both given."""
    groups: Dict[str, List[str]] = {}
    for param in pipeline.params:
        value = values.get(param.name)
        if param.group and value not in (None, False, [], param.default):
            groups.setdefault(param.group, []).append(param.name)
    for names in groups.values():
        if len(names) > 1:
            raise ConfigError(f"bad parameters for pipeline {pipeline.name}", f"{' and '.join(names)} exclude each"
                              " other (on the command line too)", f"give one of {', '.join(names)}")


def inside_root(pipeline: Pipeline, values: Dict[str, Any], root: Optional[str]) -> Dict[str, Any]:
    """The PATH parameters resolved inside ``root`` (GIGSTERPG_FILES_ROOT), a folder's CSV files each checked.

    Any other path (absolute elsewhere, ``..``, a symlink out) raises ConfigError naming the setting.
    """
    paths = [param for param in pipeline.params if param.kind == PATH and values.get(param.name)
             and values[param.name] not in param.names]
    if not paths:
        return values
    if not root:
        raise ConfigError(f"pipeline {pipeline.name} reads files, and the server reads none", f"{FILES_ROOT} is not"
                          " set", f"set {FILES_ROOT} to the folder whose files the API may read, and name them in it")
    base = Path(root).resolve()
    checked = dict(values)
    for param in paths:
        names = values[param.name] if param.many else [values[param.name]]
        found = [name if name in param.names else _inside(base, str(name), param.name) for name in names]
        checked[param.name] = found if param.many else found[0]
    return checked


def _inside(base: Path, name: str, what: str) -> str:
    try:
        path = (base / name).resolve()  # an absolute name stays itself; symlinks are followed
        found = path.is_relative_to(base) and path.exists()
    except (OSError, ValueError):  # a NUL byte, a name longer than the system takes
        found = False
    if not found:
        raise ConfigError(f"{what} {shown(name)} is not a file inside {FILES_ROOT}",
                          "over HTTP a pipeline reads only the files under the folder the server is configured with"
                          f" ({FILES_ROOT}); '..', symlinks out and other paths are refused, as are missing files",
                          f"put the file under {FILES_ROOT} and name it relative to it")
    if path.is_dir():
        for inner in path.iterdir():
            if inner.suffix.lower() == ".csv" and not inner.resolve().is_relative_to(base):
                raise ConfigError(f"{what} {shown(name)} holds {shown(inner.name)}, a link out of {FILES_ROOT}",
                                  f"over HTTP a pipeline reads only the files under {FILES_ROOT}",
                                  "replace the link with the file itself")
    return str(path)
