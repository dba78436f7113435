# One image for every Écoute service; the command picks it: `ecoute ingest|analyzer|api|run`.
#   docker build -t ecoute .
#   docker run --rm ecoute --help
# docker-compose.yml runs one container per service from this image.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

WORKDIR /build

# Dependencies first, in a layer of their own, so a code change does not reinstall them. The pinned
# requirements.lock is used as constraints: only what pyproject.toml asks for is installed, at the
# versions the tests ran with (the lock also pins dev tools, which are not installed here).
COPY pyproject.toml requirements.lock ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" > deps.txt \
    && pip install -c requirements.lock -r deps.txt

# README.md is the package's readme in pyproject.toml: the build needs it.
COPY README.md ./
COPY ecoute ./ecoute
COPY schemas ./schemas
COPY services ./services
RUN pip install -c requirements.lock . \
    && cd / && rm -rf /build

# Non-root, with a numeric uid so orchestrators can check runAsNonRoot. The home directory is the
# working directory: the analyzer keeps its Faust state in data/analyzer under it, and Faust creates
# only the last level of that path, so data/ must exist.
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/ecoute --create-home ecoute \
    && install -d -o ecoute -g ecoute /var/lib/ecoute/data
WORKDIR /var/lib/ecoute
USER 10001:10001

# In a container a server bound to 127.0.0.1 is unreachable from outside it (`docker run -p` too).
ENV ECOUTE_INGEST_HOST=0.0.0.0 \
    ECOUTE_API_HOST=0.0.0.0 \
    ECOUTE_ANALYZER_METRICS_HOST=0.0.0.0

# api, ingest, analyzer metrics.
EXPOSE 8000 8001 8002

ENTRYPOINT ["ecoute"]
CMD ["--help"]
