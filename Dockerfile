# gigsterpg: the sync (or, with `serve`, the HTTP API; with `load-csv` / `transform`, the CSV ETL) as a container.
# Two targets: `production` (the last stage, so the default) runs as an unprivileged user and holds the package
# only; `dev` adds the development extras, the tests and the benchmark, for `make test` inside a container.
# (Debian's docker builds stages in file order, so the small production stage comes last and is the default.)
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY setup.py ./
COPY gigsterpg/__init__.py gigsterpg/__init__.py
RUN pip install --no-compile -e . && useradd --create-home --uid 10001 gigster
COPY containers/entrypoint.sh /usr/local/bin/gigsterpg-entrypoint
ENTRYPOINT ["gigsterpg-entrypoint"]

# The development image: extras (pytest, flake8, the embedded servers) and the whole checkout. Runs as root, so
# that a source folder mounted from the host (docker-compose.dev.yml) stays writable; `make test` uses the
# system Python (VENV=/usr/local) instead of making a virtual environment.
FROM base AS dev
RUN pip install --no-compile -e '.[dev]' \
 && (command -v make >/dev/null || (apt-get update -qq && apt-get install -y -qq --no-install-recommends make)) \
 && rm -rf /var/lib/apt/lists/*
ENV VENV=/usr/local
COPY . .
RUN touch /usr/local/.installed-dev /usr/local/.installed-embedded \
 && python -c "from gigsterpg.cli import commands_known; print(*commands_known(), sep=chr(10))" >/usr/local/share/gigsterpg-commands
CMD ["make", "test"]

FROM base AS production
COPY alembic.ini ./
COPY gigsterpg gigsterpg
RUN python -c "from gigsterpg.cli import commands_known; print(*commands_known(), sep=chr(10))" >/usr/local/share/gigsterpg-commands

USER gigster
# The HTTP API, when run as `serve --host 0.0.0.0` (docker compose's api service).
EXPOSE 8000 5000
CMD ["sync", "--no-progress"]
