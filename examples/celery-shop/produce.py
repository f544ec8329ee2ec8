"""Overfill the emails queue: the first EMAILS_LIMIT are accepted, the rest refused at once.

    python produce.py              # 15 emails; with no worker running, 5 are refused
    python produce.py --patient    # retry each refusal, waiting as long as it says
"""
import argparse

from celery_floodgate import QueueFull

from tasks import send_email


def submit_patiently(to):
    """Retry refusals with backoff, never sooner than retry_after_s (extra [client])."""
    from celery_floodgate.client import call_with_backoff

    return call_with_backoff(lambda: send_email.delay(to), max_attempts=20, max_total_s=300)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=15, help="emails to submit")
    parser.add_argument("--patient", action="store_true", help="retry refusals with backoff")
    args = parser.parse_args()
    accepted = refused = 0
    for n in range(args.count):
        to = f"customer{n}@example.com"
        try:
            submit_patiently(to) if args.patient else send_email.delay(to)
        except QueueFull as full:
            refused += 1
            print(f"refused {to}: {full} (retry_after_s={full.retry_after_s})")
        else:
            accepted += 1
    print(f"accepted {accepted}, refused {refused}")


if __name__ == "__main__":
    main()
