"""The documentation cannot go stale: every command it shows runs, as written, on ``gigsterpg dev start``'s servers.

README.md and the pages of mkdocs.yml's navigation, in that order: each ```` ```console ```` block is one bash
script of its ``$ `` lines (``set -e``; its background jobs end with it), run in one temporary folder after
``gigsterpg dev start``; each must exit 0. A shell block that must not run (docker, servers of your own,
``make test`` itself) is a ```` ```sh ```` block right after ``<!-- not run: why -->``. ``gigsterpg`` is this
checkout's CLI (a shim on PATH), so the test needs no install. The site itself is built ``--strict`` by
``make docs`` (part of ``make test``).
"""
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHELL = {"console", "sh", "bash", "shell", "shell-session"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.M | re.S)
NOT_RUN = re.compile(r"<!-- not run: (.+?) -->\s*$")
MAX_NOT_RUN = 12  # docker, servers of your own, make itself: keep them few
BLOCK_TIMEOUT_S = 300


def pages():
    """README.md, then every page of mkdocs.yml's nav in its order (index.md is the README's copy)."""
    nav = re.findall(r"^\s*- [^:\n]+: (\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(), re.M)
    return [ROOT / "README.md"] + [ROOT / "docs" / page for page in nav if page != "index.md"]


def blocks(path: Path):
    """(language, body, the not-run reason or None, line) of each fenced block of ``path``."""
    text = path.read_text()
    found = []
    for match in FENCE.finditer(text):
        before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        reason = NOT_RUN.search(before)
        found.append((match.group(1), match.group(2), reason.group(1) if reason else None,
                      text.count("\n", 0, match.start()) + 1))
    return found


def commands(body: str):
    """The ``$ `` lines of a console block, continuation lines (``\\``) joined."""
    found, pending = [], None
    for line in body.splitlines():
        if pending is not None:
            pending += "\n" + line
        elif line.startswith("$ "):
            pending = line[2:]
        else:
            continue
        if not pending.endswith("\\"):
            found.append(pending)
            pending = None
    return found


def runnable():
    """(where, commands) of every console block, in reading order."""
    return [(f"{path.relative_to(ROOT)}:{line}", commands(body))
            for path in pages() for lang, body, reason, line in blocks(path) if lang == "console"]


def test_every_shell_block_runs_or_says_why_not():
    not_run, problems = [], []
    for path in pages() + [ROOT / "docs" / "index.md"]:
        for lang, body, reason, line in blocks(path):
            where = f"{path.relative_to(ROOT)}:{line}"
            if lang == "console" and reason:
                problems.append(f"{where}: a console block is run; a block that is not is ```sh")
            elif lang == "console" and not commands(body):
                problems.append(f"{where}: a console block without a '$ ' line")
            elif lang in SHELL - {"console"} and not reason:
                problems.append(f"{where}: a ```{lang} block: make it a runnable ```console block, or put"
                                " '<!-- not run: why -->' right before it")
            elif lang in SHELL:
                not_run.append(where)
            elif lang == "" and any(line.startswith(("$ ", "gigsterpg ")) for line in body.splitlines()):
                problems.append(f"{where}: commands in a block without a language: ```console or ```sh")
    assert problems == []
    assert 0 < len(not_run) <= 2 * MAX_NOT_RUN, not_run  # README and index.md share one
    assert sum(len(found) for _, found in runnable()) >= 40


def test_the_site_index_is_the_readme():
    readme = (ROOT / "README.md").read_text()
    assert (ROOT / "docs" / "index.md").read_text() == readme.replace("](docs/", "]("), \
        "docs/index.md is README.md with its links made relative to docs/: copy it again"


def test_the_readme_links_resolve():
    readme = (ROOT / "README.md").read_text()
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", readme)
    assert targets
    missing = [target for target in targets if not target.startswith("http") and not (ROOT / target).exists()]
    assert missing == []
    assert len(readme.splitlines()) <= 200


def test_commands_are_parsed_as_a_shell_reads_them():
    body = "$ gigsterpg sync \\\n    --incremental\nSync run 2 (incremental) succeeded.\n$ gigsterpg status\n"
    assert commands(body) == ["gigsterpg sync \\\n    --incremental", "gigsterpg status"]
    assert blocks(ROOT / "README.md")[0][2], "the README's first block (make) is marked not run"


@pytest.fixture
def workdir(tmp_path):
    """A folder like a checkout's root to users (the worked example at gigsterpg/examples), gigsterpg on PATH."""
    folder = tmp_path / "try"
    examples = folder / "gigsterpg" / "examples"  # no __init__.py: the package stays the checkout's
    examples.mkdir(parents=True)
    for source in (ROOT / "gigsterpg" / "examples").iterdir():
        if source.suffix in (".csv", ".sql"):
            (examples / source.name).write_bytes(source.read_bytes())
    shims = tmp_path / "bin"
    shims.mkdir()
    for name, line in (("gigsterpg", f'exec "{sys.executable}" -m gigsterpg.cli "$@"'),
                       ("python", f'exec "{sys.executable}" "$@"')):
        (shims / name).write_text(f"#!/bin/sh\n{line}\n")
        (shims / name).chmod(0o755)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    env.update(PATH=f"{shims}{os.pathsep}{env.get('PATH', '')}", PYTHONPATH=str(ROOT), NO_COLOR="1")
    yield folder, env
    subprocess.run(["gigsterpg", "dev", "stop"], cwd=folder, env=env, capture_output=True, timeout=120)
    assert servers_of(folder) == [], "dev stop leaves no process behind"


def servers_of(folder: Path):
    """Processes whose command line names ``folder``: the dev servers and anything else left running."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline"]):
        try:
            if process.pid != os.getpid() and str(folder) in " ".join(process.info["cmdline"] or ()):
                if process.status() != psutil.STATUS_ZOMBIE:
                    found.append(process.pid)
        except psutil.Error:
            pass
    return found


def run_block(script: str, folder: Path, env: dict) -> subprocess.CompletedProcess:
    """One block as one bash script in a session of its own; whatever it left running is ended with it."""
    process = subprocess.Popen(["bash", "-c", "set -euo pipefail\n" + script], cwd=folder, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               text=True, start_new_session=True)
    try:
        output, _ = process.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        return subprocess.CompletedProcess(process.args, -9, output + "\n(timed out)")
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    return subprocess.CompletedProcess(process.args, process.returncode, output)


def test_every_documented_command_runs_on_the_dev_servers(workdir):
    folder, env = workdir
    done = []
    for where, found in runnable():
        result = run_block("\n".join(found), folder, env)
        assert result.returncode == 0, f"{where} failed (exit {result.returncode}):\n" + "\n".join(
            found) + "\n--- output (last 40 lines) ---\n" + "\n".join(result.stdout.splitlines()[-40:])
        assert "Traceback" not in result.stdout, f"{where}:\n{result.stdout}"
        # At the default level nothing but gigsterpg speaks: no library's INFO lines (Dask printed 33).
        assert not re.search(r"^\d\d:\d\d:\d\d INFO ", result.stdout, re.M), f"{where}:\n{result.stdout}"
        done.append(where)
    assert len(done) >= 12


def test_dev_servers_start_reuse_recover_and_stop(workdir):
    folder, env = workdir
    (folder / ".env").write_text("# mine\nMY_SETTING=kept\n")

    def gigsterpg(*args):
        return subprocess.run(["gigsterpg", *args], cwd=folder, env=env, capture_output=True, text=True,
                              timeout=180)

    first = gigsterpg("dev", "start")
    assert first.returncode == 0, first.stderr
    dotenv = (folder / ".env").read_text()
    assert dotenv.startswith("# mine\nMY_SETTING=kept\n") and "DB_URL_PSQL=postgresql://" in dotenv
    assert "GIGSTERPG_ORDERS_SOURCE_PG=" in dotenv and "GIGSTERPG_SNAPSHOT_SOURCE_PG=" in dotenv
    assert gigsterpg("generate", "--users", "50", "--gigs", "50").returncode == 0
    assert gigsterpg("sync").returncode == 0

    again = gigsterpg("dev", "start")
    assert again.returncode == 0 and again.stdout.count("already running, reused") == 2, again.stdout
    assert (folder / ".env").read_text() == dotenv
    status = gigsterpg("dev", "status")
    assert status.returncode == 0 and status.stdout.count("running on 127.0.0.1:") == 2, status.stdout
    pids = [int(pid) for pid in re.findall(r"\(pid (\d+)\)", status.stdout)]
    assert len(pids) == 2 and set(pids) <= set(servers_of(folder))

    for pid in pids:  # killed as a crash or a reboot would
        os.kill(pid, signal.SIGKILL)
    stale = gigsterpg("dev", "status")
    assert stale.returncode == 3 and stale.stdout.count("dead (stale") == 2, stale.stdout
    recovered = gigsterpg("dev", "start")
    assert recovered.returncode == 0, recovered.stdout + recovered.stderr
    assert recovered.stdout.count("running on 127.0.0.1:") == 2
    synced = gigsterpg("sync")  # the same data: nothing new to write
    assert synced.returncode == 0 and "Sync run" in synced.stdout, synced.stdout + synced.stderr
    assert re.search(r"^users\s+50\s+0\s+0\s+", synced.stdout, re.M), synced.stdout

    stopped = gigsterpg("dev", "stop")
    assert stopped.returncode == 0 and "Stopped" in stopped.stdout
    assert servers_of(folder) == []
    assert (folder / ".env").read_text() == "# mine\nMY_SETTING=kept\n"
    after = gigsterpg("dev", "status")
    assert after.returncode == 3 and after.stdout.count("stopped") == 2, after.stdout
    unset = gigsterpg("sync")
    assert unset.returncode == 2 and "no PostgreSQL URL" in unset.stderr
