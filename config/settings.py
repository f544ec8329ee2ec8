"""One settings object, read from the environment, failing fast.

Every value comes from an environment variable of the same name in upper case.
A missing or malformed value stops the process at start with a sentence that
names the variable; nothing runs half-configured.
"""
from __future__ import annotations

import functools
import math
import re
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.queues import DEFAULT_LIMITS, parse_queue_limits
from celery_floodgate import broker_kind
from celery_floodgate.fairness import (
    CRITICAL,
    DEFAULT,
    DEFAULT_TENANT,
    SHEDDABLE,
    Fairness,
    check_tenant,
)

#: SQS's longest visibility timeout.
SQS_MAX_VISIBILITY_S = 43_200
PLACEHOLDERS = {"changeme", "change-me", "password", "secret", "guest", "admin", ""}
#: Fields read from ``<NAME>_FILE`` when that is set (Docker secrets, docs/app/security.md).
SECRET_FIELDS = ("broker_url", "result_backend", "database_url", "migration_database_url",
                 "meter_url", "flower_basic_auth", "api_key_secret", "ops_token")
FLOWER_PASSWORD_MIN = 12
API_KEY_SECRET_MIN = 32
OPS_TOKEN_MIN = 24
#: The tenant of the work the service does for itself (beat's entries, the outbox
#: sweep), submitted as critical. No account may take its name, nor the library's
#: default tenant's (api/routes/users.py), so no user shares their counts.
SYSTEM_TENANT = "system"
RESERVED_NAMES = frozenset({SYSTEM_TENANT, DEFAULT_TENANT})
#: The heaviest weight TENANT_WEIGHTS may give (the library's own cap).
TENANT_WEIGHT_MAX = 1000
#: A user name (api/schemas.py's Name), as CRITICAL_USERS lists them.
USER_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


class ConfigError(SystemExit):
    """A configuration value is missing or wrong; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    # URLs carry passwords, so every one is a SecretStr: printed or logged, it shows as
    # '**********' (urls are shown masked with config.secrets.masked_url).
    broker_url: SecretStr = Field(
        description="redis://, rediss://, amqp://, sqs:// or memory:// URL")
    result_backend: SecretStr | None = Field(
        default=None, description="Result backend URL; defaults to BROKER_URL when that is Redis"
    )
    database_url: SecretStr = Field(
        description="sqlite:/// or postgresql:// URL for the app's data")
    migration_database_url: SecretStr | None = Field(
        default=None,
        description="the URL `python -m config.migrate` uses: a role that owns the tables; "
        "defaults to DATABASE_URL (the app's own role only reads and writes rows)",
    )
    meter_url: SecretStr | None = Field(
        default=None,
        description="Redis URL where workers record drain rates; defaults to the Redis broker "
        "or, on RabbitMQ, to a Redis RESULT_BACKEND",
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None, description=f"user:password for Flower; the password has at least "
        f"{FLOWER_PASSWORD_MIN} characters")
    # The API's secrets: optional here (workers and beat never use them), required by the
    # API, which refuses to start without them (Settings.require_api_secrets).
    api_key_secret: SecretStr | None = Field(
        default=None, description=f"at least {API_KEY_SECRET_MIN} random characters: the key "
        "that signs every API key's id (api/auth.py); changing it revokes every API key")
    ops_token: SecretStr | None = Field(
        default=None, description=f"at least {OPS_TOKEN_MIN} random characters: the bearer "
        "token of GET /metrics and GET /healthz/details")
    auth_cache_s: float = Field(
        default=10, ge=0, le=300,
        description="how long an API process trusts a key it has checked; a revoked key "
        "stops working in other processes within this time (in its own at once)")
    rate_limit_signups: str = Field(
        default="20/minute", description="POST /users per client address ('limits' notation, "
        "shared by every API process through the meter's Redis)")
    rate_limit_follows: str = Field(
        default="120/minute", description="POST and DELETE /follows per user")
    rate_limit_keys: str = Field(
        default="10/hour", description="POST /keys per user")
    max_keys_per_user: int = Field(default=10, ge=1, le=1000,
                                   description="live (unrevoked) API keys one account may hold")
    max_follows_per_user: int = Field(default=5000, ge=1, le=1_000_000,
                                      description="how many accounts one account may follow")
    sse_max_per_user: int = Field(default=4, ge=1, le=1000,
                                  description="open event streams per user, per API process")
    sse_max_per_process: int = Field(default=1000, ge=1, le=100_000,
                                     description="open event streams per API process")
    sse_max_lifetime_s: float = Field(default=600, gt=0, le=86_400,
                                      description="a stream closes after this; clients reconnect")
    sse_send_timeout_s: float = Field(default=10, gt=0, le=300,
                                      description="a client that takes no event for this long "
                                      "is dropped")
    health_cache_s: float = Field(default=5, gt=0, le=300,
                                  description="how long the public /healthz reuses its checks")
    request_read_timeout_s: float = Field(
        default=10, gt=0, le=300,
        description="a client must send a request's headers and body within this time, or its "
        "connection is closed (slow-header and slow-body clients, api/serve.py)")
    api_max_connections_per_client: int = Field(
        default=64, ge=0, le=1_000_000,
        description="open connections one peer address may hold per API process (429 past "
        "it); 0 for none, behind a reverse proxy, which is then the only peer")
    rate_limit_follows_per_address: str = Field(
        default="600/minute", description="POST and DELETE /follows per client address, "
        "over all its accounts")
    api_public_docs: bool = Field(
        default=True, description="serve /docs, /redoc and /openapi.json without a key")
    api_limit_concurrency: int = Field(
        default=2000, ge=10, le=1_000_000,
        description="open connections per API process before uvicorn answers 503")
    api_port: int = Field(default=8000, ge=1, le=65535)
    flower_port: int = Field(default=5555, ge=1, le=65535)
    aggregation_interval_s: int = Field(default=60, ge=1, le=86400)
    queue_limits: str = Field(
        default=DEFAULT_LIMITS,
        description="queue=length or queue=<seconds>s, comma separated",
    )
    fanout_chunk_size: int = Field(default=500, ge=1, le=100_000)
    republish_after_s: int = Field(default=120, ge=10)
    commit_grace_s: float = Field(
        default=10, gt=0, le=600,
        description="how long a worker waits for the API to commit a job it was handed "
        "before fencing it as abandoned (tasks/demo/handoff.py)",
    )
    max_body_bytes: int = Field(default=64 * 1024, ge=1024)
    api_submit_path: Literal["async", "threads"] = Field(
        # threads until the async path meets FAULTS rows 5, 7 and 11 on RabbitMQ (a broker
        # stopped or restarted: aio-pika's reconnects answer late or not at all)
        default="threads",
        description="how POST /posts and POST /posts:batch admit and store: async awaits "
        "the guarded publish (celery_floodgate.aio) and the database (asyncpg, aiosqlite) on "
        "the event loop, with no thread; threads runs Celery's publish and the blocking "
        "driver in API_STORE_THREADS threads (to compare the two, bench (f))")
    api_store_threads: int = Field(
        default=4, ge=1, le=64,
        description="API_SUBMIT_PATH=threads: threads per API process that publish posts at "
        "once, and as many that store them; more only contend for the GIL (api/threaded.py)",
    )
    api_db_pool_size: int = Field(
        default=10, ge=1, le=1000,
        description="API_SUBMIT_PATH=async: database connections each API process keeps "
        "open for posts; a post waits for a free one")
    api_db_pool_overflow: int = Field(
        default=10, ge=0, le=1000,
        description="API_SUBMIT_PATH=async: connections opened past API_DB_POOL_SIZE under "
        "load, closed again when returned")
    task_soft_time_limit_s: int = Field(default=240, ge=1)
    task_time_limit_s: int = Field(default=300, ge=2)
    redis_visibility_timeout_s: int | None = Field(
        default=None, ge=10,
        description="defaults to 2 x TASK_TIME_LIMIT_S; must exceed it",
    )
    rabbitmq_queue_type: Literal["classic", "quorum"] = Field(
        default="classic", description="quorum replicates queues across a RabbitMQ cluster"
    )
    rabbitmq_queue_version: int = Field(
        default=2, ge=1, le=2,
        description="classic queues only; 2 confirms persistent messages sooner (bench/RESULTS.md, "
        "finding 12); an existing queue keeps the version it was declared with",
    )
    rabbitmq_consumer_timeout_s: int = Field(
        default=1800, ge=60, description="the broker's consumer_timeout (RabbitMQ default 30 min)"
    )
    publish_timeout_s: float = Field(default=1.0, gt=0, le=30)
    # Amazon SQS (BROKER_URL=sqs://, or sqs://KEY:SECRET@ for explicit credentials; else
    # boto3's usual chain: environment, profile, instance role). docs/app/sqs.md.
    sqs_region: str | None = Field(default=None, description="AWS region; else boto3's default, "
                                   "else us-east-1")
    sqs_endpoint_url: str | None = Field(default=None, description="another SQS endpoint "
                                         "(moto, localstack, a VPC endpoint)")
    sqs_wait_time_s: int = Field(default=10, ge=0, le=20,
                                 description="long-poll wait of a ReceiveMessage (SQS allows 0-20)")
    sqs_queue_name_prefix: str = Field(default="floodgate-", max_length=40,
                                       pattern=r"^[A-Za-z0-9_-]*$",
                                       description="prefix of every SQS queue name")
    sqs_reconcile_interval_s: float = Field(default=10, gt=0, le=3600,
                                            description="how often the admission count is "
                                            "compared with SQS's own")
    sqs_reconcile_lag_s: float = Field(default=60, ge=0, le=3600,
                                       description="sends younger than this are never taken for "
                                       "drift (SQS's counts lag up to a minute)")
    max_redeliveries: int = Field(default=3, ge=0, le=100)
    # https://docs.celeryq.dev/en/stable/userguide/configuration.html#worker-send-task-events
    worker_send_task_events: bool = Field(
        default=False,
        description="workers send task events from their start (three extra publishes per "
        "task); on wherever Flower runs, which otherwise switches them on only ~5 s after "
        "it starts and misses the tasks run before",
    )

    # Fair admission (docs/app/configuration.md#fair-admission, celery_floodgate.fairness).
    fair_admission: bool = Field(
        default=True, description="share each bounded queue among the users who post, and "
        "shed work by criticality; false: first come, first served (for benchmarks)")
    fair_watermark: float = Field(
        default=0.5, gt=0, le=1, description="the fraction of a queue's limit above which a "
        "user holding its share is refused")
    fair_sheddable_fraction: float = Field(
        default=0.5, gt=0, le=1, description="sheddable work is refused from this fraction "
        "of a queue's limit")
    fair_default_fraction: float = Field(
        default=0.9, gt=0, le=1, description="default work is refused from this fraction; "
        "critical work only at the full limit")
    tenant_weights: str = Field(
        default="", description="user=weight, comma separated (alice=2,bob=0.5): a user's "
        f"share is in proportion to its weight (default 1, at most {TENANT_WEIGHT_MAX})")
    critical_users: str = Field(
        default="", description="user names, comma separated, that may submit critical "
        "work; everyone may submit default and sheddable work")

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: readable lines; json: one JSON object per line (API, worker, beat), "
        "each carrying the job id, task name and queue where known (config/logging.py)",
    )

    @model_validator(mode="before")
    @classmethod
    def _read_secret_files(cls, data):
        """``<NAME>_FILE=/run/secrets/x`` stands for ``<NAME>``: Docker secrets and other
        mounted files keep secrets out of the environment (and out of ``docker inspect``)."""
        return read_secret_files(data)

    @field_validator("broker_url", "result_backend", "meter_url", "database_url",
                     "migration_database_url")
    @classmethod
    def _url_has_scheme(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and "://" not in value.get_secret_value():
            # The value itself may hold a password: name the problem, not the value.
            raise ValueError("is not a URL (expected scheme://...)")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _auth_is_user_password(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        user, sep, password = value.get_secret_value().partition(":")
        if not sep or not user or password.lower() in PLACEHOLDERS:
            raise ValueError("must be user:password with a real password (not a placeholder)")
        if len(password) < FLOWER_PASSWORD_MIN:
            raise ValueError(f"has a password of {len(password)} characters; use at least "
                             f"{FLOWER_PASSWORD_MIN}")
        return value

    @field_validator("api_key_secret", "ops_token")
    @classmethod
    def _long_random(cls, value: SecretStr | None, info) -> SecretStr | None:
        if value is None:
            return value
        least = API_KEY_SECRET_MIN if info.field_name == "api_key_secret" else OPS_TOKEN_MIN
        raw = value.get_secret_value()
        if raw.lower() in PLACEHOLDERS or len(raw) < least or len(set(raw)) < 8:
            raise ValueError(f"must be at least {least} random characters (e.g. python -c "
                             "'import secrets; print(secrets.token_urlsafe(32))')")
        return value

    @field_validator("rate_limit_signups", "rate_limit_follows", "rate_limit_keys",
                     "rate_limit_follows_per_address")
    @classmethod
    def _rate_parses(cls, value: str) -> str:
        from limits import parse

        try:
            parse(value)
        except ValueError:
            raise ValueError(f"{value!r} is not a rate such as '20/minute'") from None
        return value

    @field_validator("tenant_weights")
    @classmethod
    def _weights_parse(cls, value: str) -> str:
        parse_tenant_weights(value)
        return value

    @field_validator("critical_users")
    @classmethod
    def _users_parse(cls, value: str) -> str:
        parse_user_names(value)
        return value

    @model_validator(mode="after")
    def _fractions_ordered(self) -> "Settings":
        if self.fair_sheddable_fraction > self.fair_default_fraction:
            raise ValueError(
                f"FAIR_SHEDDABLE_FRACTION ({self.fair_sheddable_fraction:g}) must be at most "
                f"FAIR_DEFAULT_FRACTION ({self.fair_default_fraction:g}): sheddable work is "
                "refused first")
        return self

    def fairness(self) -> Fairness | None:
        """The policy ``install()`` gets: None (first come, first served) when
        FAIR_ADMISSION is false."""
        if not self.fair_admission:
            return None
        return Fairness(watermark=self.fair_watermark,
                        weights=parse_tenant_weights(self.tenant_weights),
                        class_fractions={SHEDDABLE: self.fair_sheddable_fraction,
                                         DEFAULT: self.fair_default_fraction, CRITICAL: 1.0})

    def may_submit(self, user_name: str, criticality: str) -> bool:
        """Whether ``user_name`` may submit work of class ``criticality``."""
        return criticality != CRITICAL or user_name in parse_user_names(self.critical_users)

    def require_api_secrets(self) -> None:
        """The API's own fail-fast check (workers and beat need neither secret)."""
        missing = [n.upper() for n in ("api_key_secret", "ops_token") if getattr(self, n) is None]
        if missing:
            raise ConfigError(f"Floodgate configuration error: {' and '.join(missing)} "
                              f"{'is' if len(missing) == 1 else 'are'} required by the API but "
                              "not set (or set <NAME>_FILE to a file holding it).")

    @field_validator("queue_limits")
    @classmethod
    def _limits_parse(cls, value: str) -> str:
        parse_queue_limits(value)  # checked here so a typo fails at start
        return value

    @model_validator(mode="after")
    def _limits_fit_the_broker(self) -> "Settings":
        if self.task_soft_time_limit_s >= self.task_time_limit_s:
            raise ValueError("TASK_SOFT_TIME_LIMIT_S must be below TASK_TIME_LIMIT_S")
        if self.visibility_timeout_s <= self.task_time_limit_s:
            raise ValueError(
                f"REDIS_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) must exceed "
                f"TASK_TIME_LIMIT_S ({self.task_time_limit_s}), or Redis redelivers a task "
                "that is still running and it runs twice"
            )
        if self.broker_kind == "amqp" and self.task_time_limit_s >= self.rabbitmq_consumer_timeout_s:
            raise ValueError(
                f"TASK_TIME_LIMIT_S ({self.task_time_limit_s}) must be below RabbitMQ's "
                f"consumer_timeout ({self.rabbitmq_consumer_timeout_s} s, "
                "RABBITMQ_CONSUMER_TIMEOUT_S), or the broker closes the channel mid-task"
            )
        if self.broker_kind == "sqs" and self.visibility_timeout_s > SQS_MAX_VISIBILITY_S:
            raise ValueError(
                f"REDIS_VISIBILITY_TIMEOUT_S ({self.visibility_timeout_s}) is also SQS's visibility "
                f"timeout, which SQS caps at {SQS_MAX_VISIBILITY_S} s (12 h): lower it, or "
                "TASK_TIME_LIMIT_S"
            )
        if self.broker_kind == "amqp":
            waits = [l.queue for l in parse_queue_limits(self.queue_limits).values() if l.wait_s]
            if waits:
                raise ValueError(
                    f"QUEUE_LIMITS gives wait limits for {', '.join(waits)}, which need the Redis "
                    "broker; on RabbitMQ give a length (the broker enforces it exactly)"
                )
        return self

    @property
    def visibility_timeout_s(self) -> int:
        return self.redis_visibility_timeout_s or 2 * self.task_time_limit_s

    @property
    def max_countdown_s(self) -> int:
        """The longest countdown/ETA a message may carry before the broker redelivers it."""
        if self.broker_kind == "amqp":
            return self.rabbitmq_consumer_timeout_s - self.task_time_limit_s
        return self.visibility_timeout_s - self.task_time_limit_s

    @model_validator(mode="after")
    def _derived_urls(self) -> "Settings":
        if self.result_backend is None and not _is_redis(self.broker):
            if not self.broker.startswith("memory://"):
                raise ValueError("RESULT_BACKEND must be set when BROKER_URL is not Redis"
                                 + (" (SQS holds no results: use redis:// or db+postgresql://)"
                                    if self.broker_kind == "sqs" else ""))
        if self.result_backend and broker_kind(self.result_backend.get_secret_value()) == "sqs":
            raise ValueError("RESULT_BACKEND cannot be SQS, which holds no results: use redis:// "
                             "or db+postgresql://")
        if self.broker_kind == "sqs" and self.meter_redis_url is None:
            raise ValueError("BROKER_URL is SQS, whose queues have no length cap: the guard counts "
                             "admissions in Redis; set METER_URL (or a Redis RESULT_BACKEND)")
        return self

    # The plain URLs, for the few places that connect (never for printing: masked_url).
    @property
    def broker(self) -> str:
        return self.broker_url.get_secret_value()

    @property
    def database(self) -> str:
        return self.database_url.get_secret_value()

    @property
    def migration_database(self) -> str:
        return (self.migration_database_url or self.database_url).get_secret_value()

    @property
    def result_backend_url(self) -> str:
        if self.result_backend:
            return self.result_backend.get_secret_value()
        if self.broker.startswith("memory://"):
            return "cache+memory://"
        return self.broker

    @property
    def meter_redis_url(self) -> str | None:
        meter = self.meter_url.get_secret_value() if self.meter_url else None
        for url in (meter, self.broker, self.result_backend_url):
            if url and _is_redis(url):
                return url
        return None

    @property
    def broker_kind(self) -> str:
        """'redis', 'amqp', 'sqs' or 'memory': the broker family the guard adapts to."""
        return broker_kind(self.broker)


def read_secret_files(data):
    """Replace each ``<NAME>_FILE`` of :data:`SECRET_FIELDS` with the file's content."""
    import os

    if not isinstance(data, dict):
        return data
    data = dict(data)
    for name in SECRET_FIELDS:
        path = os.environ.get(f"{name.upper()}_FILE")
        if not path or data.get(name) is not None or os.environ.get(name.upper()):
            continue
        try:
            with open(path, encoding="utf-8") as file:
                data[name] = file.read().strip()
        except OSError as exc:
            raise ValueError(f"{name.upper()}_FILE names {path!r}, which cannot be read "
                             f"({exc.strerror})") from None
    return data


def parse_tenant_weights(text: str) -> dict[str, float]:
    """``"alice=2, bob=0.5"`` as ``{"alice": 2.0, "bob": 0.5}``; "" as ``{}``.

    Raises ValueError with a sentence naming the item at fault."""
    weights: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        tenant, sep, raw = (piece.strip() for piece in item.partition("="))
        if not sep or not tenant:
            raise ValueError(f"has {item!r}, which is not user=weight (e.g. 'alice=2')")
        try:
            check_tenant(tenant)
        except ValueError as exc:
            raise ValueError(f"names {tenant!r}: {exc}") from None
        try:
            weight = float(raw)
        except ValueError:
            raise ValueError(f"gives {tenant!r} the weight {raw!r}, which is not a number") from None
        if not (math.isfinite(weight) and 0 < weight <= TENANT_WEIGHT_MAX):
            raise ValueError(f"gives {tenant!r} the weight {raw}; a weight is above 0 and at "
                             f"most {TENANT_WEIGHT_MAX}")
        if tenant in weights:
            raise ValueError(f"names {tenant!r} twice; give each user one weight")
        weights[tenant] = weight
    return weights


@functools.cache
def parse_user_names(text: str) -> frozenset[str]:
    """``"alice, bob"`` as ``{"alice", "bob"}``; raises ValueError naming a bad name."""
    names = frozenset(name.strip() for name in text.split(",") if name.strip())
    for name in sorted(names):
        if not USER_NAME.match(name):
            raise ValueError(f"names {name!r}, which is not a user name (1 to 64 letters, "
                             "digits, '_', '.' or '-'; separate names with commas)")
    return names


def _is_redis(url: str) -> bool:
    return broker_kind(url) == "redis"


def _sentence(error: ValidationError) -> str:
    lines = []
    for item in error.errors():
        name = "_".join(str(p) for p in item["loc"]).upper() or "configuration"
        msg = item["msg"].removeprefix("Value error, ")
        if item["type"] == "missing":
            msg = "is required but not set"
        lines.append(f"{name} {msg}" if name != "configuration" else msg)
    return "Floodgate configuration error: " + "; ".join(lines) + "."


@functools.cache
def get_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(_sentence(exc)) from None
