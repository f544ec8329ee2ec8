"""Bench tasks on Floodgate's own app; workers load them with ``-I bench.tasks``."""
from config import app

from bench.task_bodies import register

TASKS = register(app)
