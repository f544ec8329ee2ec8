from scheduler.aggregation import closed_windows, summarise


def test_closed_windows_are_the_last_whole_intervals_before_now():
    assert closed_windows(now=125.0, interval_s=60) == [(0.0, 60.0), (60.0, 120.0)]


def test_top_hashtags_are_case_insensitive_and_ranked_by_count_then_name():
    summary = summarise(["#Celery is #fast", "#celery again", "#beat", "no tags"])
    assert summary["posts"] == 4
    assert summary["top_hashtags"] == [["#celery", 2], ["#beat", 1], ["#fast", 1]]


def test_a_recomputed_window_replaces_its_row_and_the_api_reads_it_from_the_store(client):
    from scheduler.aggregation import aggregate_window
    from tasks.demo.db import engine
    from tasks.demo.models import posts
    from tasks.demo.timeline import create_user

    start, end = 4_000_000_000.0, 4_000_000_060.0  # a window no other test writes

    def post(conn, author, text, at):
        conn.execute(posts.insert().values(author_id=author, text=text, created_at=at))

    with engine().begin() as conn:
        author = create_user(conn, "aggregation-author")
        post(conn, author, "#Beat one", start)
        post(conn, author, "outside", end)  # the window is half-open
        aggregate_window(conn, start, end)
    with engine().begin() as conn:
        post(conn, author, "#beat #late two", start + 30)  # committed after the first pass
        aggregate_window(conn, start, end)

    reader = client.post("/users", json={"name": "aggregation-reader"}).json()["api_key"]
    windows = client.get("/aggregates?limit=200",
                         headers={"Authorization": f"Bearer {reader}"}).json()["windows"]
    mine = [w for w in windows if w["window_start"] == "2096-10-02T07:06:40+00:00"]
    assert mine == [{"window_start": "2096-10-02T07:06:40+00:00",
                     "window_end": "2096-10-02T07:07:40+00:00",
                     "posts": 2, "top_hashtags": [["#beat", 2], ["#late", 1]]}]
