#!/bin/sh
# The images' entry point: a gigsterpg command (`sync`, `serve ...`, `load-csv ...`, `--help`; none: `sync`) runs
# as `python -m gigsterpg.cli ...`; any other program of the image (`bash`, `sh -c ...`, `make test`, `pytest`)
# runs as is, so that `docker-compose run --rm <service> bash` gives a shell. gigsterpg's commands come first
# (`sync` is also a program): the image lists them at build time in /usr/local/share/gigsterpg-commands.
set -e
if [ "$#" -gt 0 ] && [ "${1#-}" = "$1" ] && ! grep -qxF -e "$1" /usr/local/share/gigsterpg-commands 2>/dev/null \
   && command -v "$1" >/dev/null 2>&1; then
  exec "$@"
fi
exec python -m gigsterpg.cli "$@"
