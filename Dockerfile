# One image for every Floodgate role: API, worker, beat, Flower and the migrations.
# The role is chosen by the command (see docker-compose.yml); the default is the API.
#
# Supply chain: the base image is pinned by digest (deploy/IMAGES.md, refreshed by
# deploy/pin-images.sh), and every Python package comes from requirements/app.lock with
# its hashes (`make lock`), as wheels only: nothing is resolved or built from an sdist at
# build time. The two local packages are installed after, with --no-deps.
FROM python:3.11-slim-trixie@sha256:90744cff8f32887f075c47d747a173ff333e9e98801667af93c357fa9f5e28ff

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1

RUN groupadd --system --gid 10001 floodgate \
 && useradd --system --uid 10001 --gid floodgate --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin floodgate

WORKDIR /app

# The locked dependencies first, so a source change does not reinstall them.
COPY requirements/app.lock /tmp/app.lock
RUN pip install --require-hashes --only-binary=:all: -r /tmp/app.lock \
 && rm /tmp/app.lock

COPY . .
# The library (lib/, the distribution celery-floodgate) and the app, without dependencies
# (all locked above) and without build isolation (it would fetch an unpinned setuptools;
# the locked one builds them). Source stays root-owned (read-only to the app); only var/
# is writable, for beat's var/celerybeat-schedule (a path relative to /app).
RUN pip install --no-deps --no-build-isolation ./lib . \
 && rm -rf build lib/build ./*.egg-info lib/src/*.egg-info \
 && mkdir -p /app/var \
 && chown floodgate:floodgate /app/var

USER floodgate

EXPOSE 8000 5555
CMD ["python", "-m", "api.serve", "--host", "0.0.0.0", "--port", "8000"]
