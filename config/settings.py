"""One settings object, read from the environment, failing fast.

Every value comes from an environment variable of the same name in upper case.
A missing or malformed value stops the process at start with a sentence that
names the variable; nothing runs half-configured.
"""
from __future__ import annotations

import functools
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from config.queues import DEFAULT_LIMITS, parse_queue_limits
from celery_floodgate import broker_kind

#: SQS's longest visibility timeout.
SQS_MAX_VISIBILITY_S = 43_200
PLACEHOLDERS = {"changeme", "change-me", "password", "secret", "guest", "admin", ""}


class ConfigError(SystemExit):
    """A configuration value is missing or wrong; the message names the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", frozen=True)

    broker_url: str = Field(description="redis://, rediss://, amqp://, sqs:// or memory:// URL")
    result_backend: str | None = Field(
        default=None, description="Result backend URL; defaults to BROKER_URL when that is Redis"
    )
    database_url: str = Field(description="sqlite:/// or postgresql:// URL for the app's data")
    meter_url: str | None = Field(
        default=None,
        description="Redis URL where workers record drain rates; defaults to the Redis broker "
        "or, on RabbitMQ, to a Redis RESULT_BACKEND",
    )
    flower_basic_auth: str | None = Field(default=None, description="user:password for Flower")
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
    api_store_threads: int = Field(
        default=4, ge=1, le=64,
        description="threads per API process that publish posts at once, and as many that "
        "store them; more only contend for the GIL (api/routes/posts.py)",
    )
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

    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: readable lines; json: one JSON object per line (API, worker, beat), "
        "each carrying the job id, task name and queue where known (config/logging.py)",
    )

    @field_validator("broker_url", "result_backend", "meter_url", "database_url")
    @classmethod
    def _url_has_scheme(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a URL (expected scheme://...)")
        return value

    @field_validator("flower_basic_auth")
    @classmethod
    def _auth_is_user_password(cls, value: str | None) -> str | None:
        if value is None:
            return value
        user, sep, password = value.partition(":")
        if not sep or not user or password.lower() in PLACEHOLDERS:
            raise ValueError("must be user:password with a real password (not a placeholder)")
        return value

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
        if self.result_backend is None and not _is_redis(self.broker_url):
            if not self.broker_url.startswith("memory://"):
                raise ValueError("RESULT_BACKEND must be set when BROKER_URL is not Redis"
                                 + (" (SQS holds no results: use redis:// or db+postgresql://)"
                                    if self.broker_kind == "sqs" else ""))
        if self.result_backend and broker_kind(self.result_backend) == "sqs":
            raise ValueError("RESULT_BACKEND cannot be SQS, which holds no results: use redis:// "
                             "or db+postgresql://")
        if self.broker_kind == "sqs" and self.meter_redis_url is None:
            raise ValueError("BROKER_URL is SQS, whose queues have no length cap: the guard counts "
                             "admissions in Redis; set METER_URL (or a Redis RESULT_BACKEND)")
        return self

    @property
    def result_backend_url(self) -> str:
        if self.result_backend:
            return self.result_backend
        if self.broker_url.startswith("memory://"):
            return "cache+memory://"
        return self.broker_url

    @property
    def meter_redis_url(self) -> str | None:
        for url in (self.meter_url, self.broker_url, self.result_backend_url):
            if url and _is_redis(url):
                return url
        return None

    @property
    def broker_kind(self) -> str:
        """'redis', 'amqp', 'sqs' or 'memory': the broker family the guard adapts to."""
        return broker_kind(self.broker_url)


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
