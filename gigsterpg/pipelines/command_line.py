"""The command line's side of the registry: each pipeline's command, recorded; ``runs``; ``--format json``.

Every pipeline command's arguments are its pipeline's parameters (``params.add_arguments``). The CLI places
the six commands in its list itself (their place and one-line help are the CLI's), then calls ``add_parsers``:
a pipeline whose command it did not place (a plug-in, a test's toy) gets its parser here, every pipeline's
command gets ``--format``, and ``runs`` lists the history. ``run`` runs a pipeline's command with its record
(``execute.recorded``).
"""
import contextlib
import io
import sys
from typing import Callable, Optional

from gigsterpg import pipelines
from gigsterpg.config import load_settings
from gigsterpg.lib.pg.db.states import CLI, JOB_STATES
from gigsterpg.pipelines import execute, params, runs
from gigsterpg.pipelines.contract import Context, Pipeline
from gigsterpg.pipelines.progress import bar

FORMAT_DEST = "report_format"


def extra_commands(known) -> tuple:
    """The commands of pipelines without a parser of their own in ``known``, then ``runs``."""
    return tuple(dict.fromkeys(each.cli_command for each in pipelines.PIPELINES.values()
                               if each.cli_command not in known)) + ("runs",)


def add_parsers(sub, common) -> None:
    """Parsers for the registry's commands the CLI did not place, ``--format`` on every pipeline's, and ``runs``."""
    for each in pipelines.PIPELINES.values():
        parser = sub.choices.get(each.cli_command)
        if parser is None:
            parser = sub.add_parser(each.cli_command, parents=[common], help=each.help)
            params.add_arguments(parser, each)
        if not any("--format" in action.option_strings for action in parser._actions):
            parser.add_argument("--format", dest=FORMAT_DEST, default="text", choices=("text", "json"),
                                help="the report as text, or its run record as JSON")
    history = sub.add_parser("runs", parents=[common], help="the history of every pipeline's runs (CLI and API)")
    history.add_argument("--pipeline", choices=pipelines.names(), help="only this pipeline's runs")
    history.add_argument("--state", choices=JOB_STATES, help="only the runs in this state")
    history.add_argument("--limit", type=int, default=20, help="how many, newest first (default: %(default)s)")
    history.add_argument("--format", dest=FORMAT_DEST, default="text", choices=("text", "json"),
                         help="a table, or JSON lines (the fields of GET /runs/{id})")


def pipeline_of(args) -> Optional[Pipeline]:
    return pipelines.of_command(getattr(args, "command", None), args)


def run(pipeline: Pipeline, args, own_code: Optional[Callable[[], int]], progress_stream=None) -> int:
    """Run ``pipeline``'s command with its record; ``own_code`` is the command's older code (it ``note``s its
    report), None to run the verb. With ``--format json`` the record is printed instead of the report."""
    settings = load_settings({"pg_url": getattr(args, "pg_url", None), "mongo_url": getattr(args, "mongo_url", None),
                              "batch_size": getattr(args, "batch_size", None)})
    values = params.from_args(pipeline, args)
    settings = execute.settings_for(pipeline, settings, values)
    as_json = getattr(args, FORMAT_DEST, "text") == "json"
    out = io.StringIO()
    with execute.recorded(pipeline, settings, values, CLI) as holder:
        with contextlib.redirect_stdout(out) if as_json else contextlib.nullcontext():
            if own_code is not None:
                code = own_code()
            else:
                context = Context(settings, CLI, bar(progress_stream), say=lambda line: print(line, flush=True))
                native = execute.run_verb(pipeline, context, values, holder)
                if context.progress is not None:
                    context.progress.close()
                print(pipeline.text(native))
                report = pipeline.report(native)
                code = 0 if report.ok else 1
        holder["ok"] = code == 0
    if as_json:
        pg = _own(settings)
        try:
            with pg.engine.connect() as connection:
                print(runs.as_json(runs.get(connection, holder["id"])))
        finally:
            pg.dispose()
    report = holder.get("report")
    if report is not None and not report.ok and report.error:
        print(f"FAILED: {report.error}", file=sys.stderr)
    return code


def _own(settings):
    from gigsterpg.connections import open_pg
    return open_pg(settings)


def history(args) -> int:
    """``runs``: the newest runs, as a table or JSON lines."""
    settings = load_settings({"pg_url": args.pg_url})
    execute.ensure_record(settings)
    pg = _own(settings)
    try:
        with pg.engine.connect() as connection:
            found, _ = runs.page(connection, args.pipeline, args.state, max(1, args.limit))
    finally:
        pg.dispose()
    if getattr(args, FORMAT_DEST) == "json":
        for each in found:
            print(runs.as_json(each))
        return 0
    print(format_runs(found))
    return 0


def format_runs(found) -> str:
    """The runs as an aligned table, with each failure's error below its line."""
    from gigsterpg.status_text import number, table, when

    if not found:
        return "No pipeline has run on this database yet."
    rows = [(each["id"], each["pipeline"], each["source"], each["state"], when(each["started_at"]),
             number(each["seconds"], 1), number(each["read"]),
             ", ".join(f"{key} {value:,}" for key, value in (each["outcomes"] or {}).items() if value))
            for each in found]
    lines = table(("run", "pipeline", "source", "state", "started", "seconds", "read", "outcomes"), rows,
                  right=(0, 5, 6))
    for each in found:
        if each["error"]:
            lines.append(f"  run {each['id']}: {each['error']}")
    return "\n".join(lines)
