"""Job kinds, job and run states, sync modes: defined here once.

The models' CHECK constraints and partial indexes, the API's types, the CLI's
choices, the sync runner and the API's jobs all use these names; a literal
``'running'`` elsewhere would drift.
"""
from typing import Iterable

# States of an API job (api_jobs.state), a pipeline run (pipeline_runs.state) and a sync run (sync_runs.status).
QUEUED = "queued"  # a job waiting for a free slot (jobs only)
RUNNING = "running"
SUCCEEDED = "succeeded"
FAILED = "failed"
INTERRUPTED = "interrupted"  # stopped (Ctrl-C, the server stopping) or its process died: restart it

JOB_STATES = (QUEUED, RUNNING, SUCCEEDED, FAILED, INTERRUPTED)
# A job in these states is in someone's hands (its server holds its advisory lock): never pruned.
ACTIVE_JOB_STATES = (QUEUED, RUNNING)
ENDED_JOB_STATES = (SUCCEEDED, FAILED, INTERRUPTED)
RUN_STATES = (RUNNING, SUCCEEDED, FAILED, INTERRUPTED)
# A snapshot ledger step (snapshot_ledger.state) is stored RUNNING, SUCCEEDED or FAILED; a RUNNING step whose
# lock is free is read as INTERRUPTED, and a step a snapshot run did not redo is reported SKIPPED.
SKIPPED = "skipped"  # reported only, never stored
SNAPSHOT_STATES = (RUNNING, SUCCEEDED, FAILED)

# Who started a pipeline run (pipeline_runs.source): the command line, or POST /runs of the API.
CLI = "cli"
API = "api"
RUN_SOURCES = (CLI, API)

# What the API runs as a job (api_jobs.kind).
EXPORT = "export"
SYNC = "sync"
JOB_KINDS = (EXPORT, SYNC)

# How a sync reads: what a user asks for (AUTO lets the sync choose), and what a run did (sync_runs.mode).
AUTO = "auto"
FULL = "full"  # every document read, deletes applied
INCREMENTAL = "incremental"  # the documents updated since the watermark
FOLLOW = "follow"  # a follower (sync --follow) applying MongoDB's change streams
SYNC_MODES = (AUTO, FULL, INCREMENTAL)
RUN_MODES = (FULL, INCREMENTAL, FOLLOW)


def sql_in(column: str, values: Iterable[str]) -> str:
    """``column IN ('a', 'b')``: the SQL of a CHECK constraint or a partial index over these constants."""
    quoted = ("'" + value.replace("'", "''") + "'" for value in values)
    return f"{column} IN ({', '.join(quoted)})"
