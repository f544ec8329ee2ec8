"""Bench tasks on Floodgate's own app; workers load them with ``-I bench.harness.tasks``."""
from config import app

from bench.harness.task_bodies import register

TASKS = register(app)
