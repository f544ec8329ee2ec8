"""The demo domain: posts appear on their author's timeline at once, a background
job fans them out to every follower, beat aggregates them. Plain work functions
(``timeline``, ``jobs``) know nothing of Celery or HTTP; tasks (``fanout``) are thin."""
