# gigsterpg: the sync (or, with `serve`, the HTTP API) as a container. Runs as an unprivileged user.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

# Dependencies first, so that a code change does not reinstall them.
COPY setup.py ./
COPY gigsterpg/__init__.py gigsterpg/__init__.py
RUN pip install --no-compile -e . && useradd --create-home --uid 10001 gigster

COPY alembic.ini ./
COPY gigsterpg gigsterpg

USER gigster
# The HTTP API, when run as `serve --host 0.0.0.0` (docker compose's api service).
EXPOSE 8000
ENTRYPOINT ["python", "-m", "gigsterpg.cli"]
CMD ["sync", "--no-progress"]
