"""What every pipeline is made of: its parameters, its verb, its report (the contract of ``gigsterpg/pipelines/``).

A pipeline lives in ``gigsterpg/pipelines/<name>/__init__.py`` and declares one ``PIPELINE = Pipeline(...)``;
``gigsterpg/pipelines/__init__.py`` lists it once (``PIPELINES``). Everything else is derived from that
declaration: the CLI's flags (``params.add_arguments``), the API's request model (``params.request_model``,
pydantic, built at run time) and the JSON schema ``GET /pipelines`` answers and the page shows, the run record
(``gigsterpg.pipelines.runs``) every run leaves, from the CLI or from ``POST /runs``.
"""
import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from gigsterpg.config import Settings

# A parameter's kind: how the CLI parses it, which JSON type the API takes, how the page's form shows it.
STRING, INTEGER, NUMBER, FLAG, DAY, PATH, CHOICE = "string", "integer", "number", "flag", "day", "path", "choice"
KINDS = (STRING, INTEGER, NUMBER, FLAG, DAY, PATH, CHOICE)


@dataclasses.dataclass(frozen=True)
class Param:
    """One parameter of a pipeline.

    Its ``name`` is the CLI's: a long flag without the dashes, with underscores (``--tax-rate`` ->
    ``tax_rate``), or a positional argument's argparse name (``paths``); the API's request takes the
    same name. ``flag`` overrides the flag the name gives (``--pg`` for ``source_url``). The CLI's
    argument is built from the rest (``gigsterpg.pipelines.params.add_arguments``); ``help`` is the CLI's
    help, ``%(default)s`` in it the default (the API's description too).

    Args:
        kind: one of KINDS; a PATH is a file the run reads, taken over HTTP only inside GIGSTERPG_FILES_ROOT.
        many: a list (positional: ``nargs="+"``; a flag: repeatable).
        http: False for what only the CLI may set (connection URLs: they hold passwords; a follower that never
            ends): the API runs on the server's configured databases.
        minimum: the least value of an INTEGER or NUMBER; ``maximum`` the greatest.
        parse: the CLI's argparse ``type`` where the kind's is not the one (its own message: ``_positive``).
        const: the value of the flag given without one (``--wait`` alone: 3600 s; argparse ``nargs="?"``).
        switches: a CHOICE given on the CLI by flags that each set one choice, ``(flag, choice, help)``
            (``--incremental`` sets ``mode`` to ``incremental``), instead of ``--mode CHOICE``.
        group: the CLI's mutually exclusive group the argument belongs to (by name, per pipeline).
    """

    name: str
    kind: str = STRING
    help: str = ""
    default: Any = None
    required: bool = False
    positional: bool = False
    many: bool = False
    choices: Tuple[str, ...] = ()
    flag: Optional[str] = None
    dest: Optional[str] = None  # the argparse dest, when not the name (--from: first)
    metavar: Optional[str] = None
    parse: Optional[Callable[[str], Any]] = None
    const: Any = None
    switches: Tuple[Tuple[str, Any, str], ...] = ()
    group: Optional[str] = None
    http: bool = True
    minimum: Optional[float] = None
    maximum: Optional[float] = None
    secret: bool = False  # shown masked in the record (a URL: mask_url)
    # Values of a PATH that name something shipped, not a file (a projection's name): no file is read for them.
    names: Tuple[str, ...] = ()

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"parameter {self.name!r}: unknown kind {self.kind!r}")

    @property
    def description(self) -> str:
        """The help with its default written in (``%(default)s``), for the API and the page."""
        return self.help.replace("%(default)s", str(self.default))

    @property
    def option(self) -> str:
        """The CLI's spelling: ``--tax-rate``, or the positional's name."""
        return self.name if self.positional else (self.flag or "--" + self.name.replace("_", "-"))


@dataclasses.dataclass
class Report:
    """What a run did, the same for every pipeline: ``read`` things, and what became of each.

    ``outcomes`` maps what became of them (written, unchanged, rejected...) to how many: its values sum to
    ``read`` (``balanced``). Whatever else the pipeline reports (deleted documents, seconds, per-file counts)
    goes in ``details``, JSON-able.
    """

    read: int = 0
    outcomes: Dict[str, int] = dataclasses.field(default_factory=dict)
    details: Dict[str, Any] = dataclasses.field(default_factory=dict)
    # False when the run completed but failed its own check (an unbalanced sync, a day that failed): exit 1.
    ok: bool = True
    error: Optional[str] = None

    @property
    def balanced(self) -> bool:
        return self.read == sum(self.outcomes.values())


@dataclasses.dataclass
class Context:
    """What a verb gets besides its parameters: the settings, where progress goes, and the record's source."""

    settings: Settings
    source: str = "cli"
    # A progress sink (``gigsterpg.pipelines.progress.Progress``), or None.
    progress: Any = None
    # Called with a line a long run wants shown as it goes (a snapshot step done); the CLI prints it.
    say: Callable[[str], None] = lambda line: None


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A pipeline, declared once.

    Args:
        name: its name in the registry, the API (``"pipeline": NAME``) and the record.
        help: one line, for the CLI's help, ``GET /pipelines`` and the page.
        params: its parameters (see ``Param``).
        run: the verb, ``run(context, params) -> native report``: calls today's library function with the
            parameters (a dict by name, defaults filled in) and never prints.
        report: the native report as the common ``Report``.
        text: the native report as people read it (the CLI prints it).
        command: the CLI command it runs under (default: its name), and for a command with a step
            argument, ``(argument, value)`` of the pipeline (``pipeline run``: ``("action", "run")``).
        settings: the Settings field each parameter overrides, ``{param: field}`` (``source_url`` ->
            ``orders_source_pg``), applied before the verb runs.
        check: ``check(settings, params)``, the checks the verb makes before it starts that touch no server
            (names, encodings, files' headers, options that exclude each other), raising a GigsterPgError;
            ``POST /runs`` calls it before it records the run, so such a request is a 400 and no run.
    """

    name: str
    help: str
    params: Tuple[Param, ...]
    run: Callable[[Context, Dict[str, Any]], Any]
    report: Callable[[Any], Report]
    text: Callable[[Any], str]
    command: Optional[str] = None
    step: Optional[Tuple[str, str]] = None
    settings: Mapping[str, str] = dataclasses.field(default_factory=dict)
    check: Optional[Callable[[Settings, Dict[str, Any]], None]] = None

    @property
    def cli_command(self) -> str:
        return self.command or self.name

    def param(self, name: str) -> Param:
        return {param.name: param for param in self.params}[name]
