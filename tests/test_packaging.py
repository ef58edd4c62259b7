"""gigsterpg installed as users install it: a wheel in a fresh virtual environment, run from any folder.

The wheel is built from the checkout and installed without its dependencies into a new virtual environment;
the dependencies come from the suite's own environment through a path entry (so the test needs no network
for them), and neither the checkout nor the editable install is on that environment's path. The installed
CLI then migrates a fresh database with the migrations packaged in the wheel and syncs real documents.
"""
import os
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import psycopg
from alembic.script import ScriptDirectory

from gigsterpg.fixtures.generate import write_dataset
from gigsterpg.lib.pg.db import alembic_config


def _run(argv, cwd, env=None, timeout=600):
    result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, f"{argv[:3]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def test_the_wheel_installs_and_syncs_from_any_folder(tmp_path, project_root, empty_pg_url, mongo_url, mongo_db):
    wheels = tmp_path / "wheels"
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(wheels), str(project_root)],
         cwd=tmp_path)
    wheel, = wheels.glob("gigsterpg-*.whl")

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=False).create(env_dir)
    python = env_dir / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    # The suite's installed dependencies, appended after the new environment's own packages.
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-deps", str(wheel)],
         cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("DB_URL_", "GIGSTERPG_"))}
    env.pop("PYTHONPATH", None)
    where = _run([str(python), "-c", "import gigsterpg; print(gigsterpg.__file__)"], cwd=elsewhere, env=env)
    assert Path(where.stdout.strip()).is_relative_to(site), where.stdout

    write_dataset(mongo_db, users=40, gigs=80, seed=3)
    env.update(DB_URL_PSQL=empty_pg_url, DB_URL_MONGO=mongo_url)
    result = _run([str(python), "-m", "gigsterpg.cli", "sync", "--no-progress"], cwd=elsewhere, env=env)
    assert "succeeded" in result.stdout, result.stdout
    with psycopg.connect(empty_pg_url) as connection:
        users = connection.execute("SELECT count(*) FROM users").fetchone()[0]
        rejects = connection.execute("SELECT count(*) FROM sync_rejects WHERE collection = 'users'"
                                     " AND resolved_at IS NULL").fetchone()[0]
        head = connection.execute("SELECT version_num FROM alembic_version").fetchone()[0]
    assert users + rejects == 40 and users > 0
    # The installed package applied every migration the checkout has, from its own copy of them.
    assert head == ScriptDirectory.from_config(alembic_config(empty_pg_url)).get_current_head()
