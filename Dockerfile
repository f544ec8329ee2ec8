# One image for every Floodgate role: API, worker, beat and Flower.
# The role is chosen by the command (see docker-compose.yml); the default is the API.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN groupadd --system --gid 10001 floodgate \
 && useradd --system --uid 10001 --gid floodgate --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin floodgate

WORKDIR /app

# The library first (lib/, the distribution celery-floodgate), then the app's other
# dependencies from pyproject.toml alone, so an app source change does not reinstall them.
COPY lib ./lib
RUN pip install --no-cache-dir './lib[prometheus,client,hiredis]' && rm -rf lib/build
COPY pyproject.toml ./
RUN python -c "import tomllib; deps = tomllib.load(open('pyproject.toml', 'rb')).get('project', {}).get('dependencies', []); print('\n'.join(deps))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

COPY . .
# Source stays root-owned (read-only to the app); only var/ is writable, for
# beat's var/celerybeat-schedule (a path relative to /app).
RUN pip install --no-cache-dir . \
 && rm -rf build ./*.egg-info \
 && mkdir -p /app/var \
 && chown floodgate:floodgate /app/var

USER floodgate

EXPOSE 8000 5555
CMD ["uvicorn", "api.main:app", "--host", "0.0.0.0", "--port", "8000"]
