# syntax=docker/dockerfile:1
# The payout processor image. Two targets:
#   app    the runtime (api, worker, beat, flower, migrate): the package, no dev tools
#   tests  the same plus the dev extras and the test suite (docker compose run --rm tests)

FROM python:3.11-slim-bookworm AS base
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /app
# Never run as root: the app holds the hot wallet's RPC credentials.
RUN useradd --create-home --uid 10001 payouts

FROM base AS app
# The locked, hash-checked dependencies first (their own layer), then the project without
# resolving anything: the image runs exactly what requirements.lock names.
COPY requirements.lock ./
RUN pip install --require-hashes -r requirements.lock
COPY pyproject.toml ./
COPY api ./api
COPY cli ./cli
COPY devnode ./devnode
COPY shared ./shared
COPY workers ./workers
RUN pip install --no-deps . && pip check
USER payouts
EXPOSE 8000 5555
CMD ["payouts", "api", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS tests
COPY requirements.lock requirements-dev.lock ./
RUN pip install --require-hashes -r requirements.lock \
    && pip install --require-hashes -r requirements-dev.lock
COPY . .
RUN pip install --no-deps -e . && pip check && chown -R payouts:payouts /app
USER payouts
CMD ["pytest", "-q", "tests/integration"]
