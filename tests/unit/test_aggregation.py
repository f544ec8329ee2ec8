from scheduler.aggregation import closed_windows, summarise


def test_closed_windows_are_the_last_whole_intervals_before_now():
    assert closed_windows(now=125.0, interval_s=60) == [(0.0, 60.0), (60.0, 120.0)]


def test_top_hashtags_are_case_insensitive_and_ranked_by_count_then_name():
    summary = summarise(["#Celery is #fast", "#celery again", "#beat", "no tags"])
    assert summary["posts"] == 4
    assert summary["top_hashtags"] == [["#celery", 2], ["#beat", 1], ["#fast", 1]]
