from tests import taskapp


def test_add_runs_on_a_worker(app, worker):
    worker("-c", "1")
    assert taskapp.add.delay(2, 3).get(timeout=30) == 5
