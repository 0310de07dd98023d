"""PostgreSQL-specific store behaviour on a real server (tests/pg_server.py): migrations of an old
database, concurrent first opens, doubles kept exact, recovery that spares a live replica's
episodes, reconnection after a server restart, clear errors that never show the password.
(The shared store suite — runner and store tests on both backends — is in test_app_runner.py.)"""
from __future__ import annotations

import threading

import pytest

from app.store import MIGRATIONS, SCHEMA_VERSION, Store, StoreError, pg_migration

STEP = {"call": 1, "output": "x", "reward": 0.1, "feedback": "f", "outcome": "wrong_value",
        "graded": True, "terminated": False, "truncated": False}


def _episode(store: Store) -> str:
    return store.create_episode(group_id="g", task="gp-l", instance={"deal_id": "HKC5D2C4"}, instance_key="k",
                                participant="p", participant_kind="model")


def test_postgres_migrations_upgrade_an_old_database(postgres_url):
    import psycopg

    with psycopg.connect(postgres_url, autocommit=True) as conn:
        for statement in pg_migration(MIGRATIONS[0]).split(";"):
            if statement.strip():
                conn.execute(statement)
        conn.execute("CREATE TABLE sftvsrl_schema (version INTEGER NOT NULL); INSERT INTO sftvsrl_schema VALUES (1)")
        conn.execute("INSERT INTO episodes (id, group_id, task, instance_key, instance, participant, "
                     "participant_kind, status, created_at) VALUES ('e1', 'g', 'gp-l', 'k', '{}', 'sft', 'model', "
                     "'finished', 0)")
    s = Store(postgres_url)
    assert s.version == SCHEMA_VERSION
    ep = s.get_episode("e1")
    assert ep["eval_run_id"] is None and ep["owner"] is None and ep["status"] == "finished"
    s.close()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE sftvsrl_schema SET version = %s", (SCHEMA_VERSION + 1,))
    with pytest.raises(StoreError, match="newer than this code"):
        Store(postgres_url)


def test_postgres_concurrent_first_opens_migrate_once(postgres_url):
    stores, errors = [], []

    def open_one():
        try:
            stores.append(Store(postgres_url))
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(stores) == 4 and all(s.version == SCHEMA_VERSION for s in stores)
    eid = _episode(stores[0])
    assert stores[3].get_episode(eid)["task"] == "gp-l"  # one database, seen by every store
    for s in stores:
        s.close()


def test_postgres_keeps_doubles_exact(postgres_url):
    s = Store(postgres_url)
    eid = _episode(s)
    s.add_step(eid, STEP)
    ep = s.get_episode(eid)
    assert ep["episode_return"] == 0.1 and ep["steps"][0]["reward"] == 0.1
    assert ep["created_at"] == s.list_episodes()[0]["created_at"] and ep["created_at"] > 1e9
    s.close()


def test_postgres_recovery_spares_a_live_replicas_episodes(postgres_url):
    a, b = Store(postgres_url), Store(postgres_url)
    mine, theirs = _episode(a), _episode(b)
    assert Store(postgres_url).mark_interrupted() == 0  # a third process starting: both owners are alive
    assert a.get_episode(mine)["status"] == "running" and a.get_episode(theirs)["status"] == "running"
    b.close()  # b's process is gone: its running episode is recovered, a's is not
    c = Store(postgres_url)
    assert c.mark_interrupted() == 1
    assert c.get_episode(theirs)["status"] == "interrupted" and c.get_episode(mine)["status"] == "running"
    c.reopen_episode(theirs)  # resumed by c, which now owns it
    assert c.get_episode(theirs)["owner"] == c.owner
    assert a.mark_interrupted([mine]) == 1 and a.get_episode(mine)["status"] == "interrupted"
    a.close()
    c.close()


def test_postgres_reconnects_after_a_server_restart(postgres_server):
    url = postgres_server.create_database()
    s = Store(url)
    eid = _episode(s)
    postgres_server.restart()  # waits until every backend is gone: the store's connection is dead
    assert s.get_episode(eid, steps=False)["id"] == eid  # a read reconnects and retries
    s.add_step(eid, STEP)  # and writes go on, committed
    other = Store(url)
    assert other.mark_interrupted() == 0  # the reconnect took the owner lock again
    assert other.get_episode(eid)["n_steps"] == 1
    other.close()
    s.close()


def test_postgres_url_errors_are_clear_and_hide_the_password(postgres_server, tmp_path):
    bad = f"postgresql://sftvsrl:s3cret@/no_such_db?host={postgres_server.dir}"
    with pytest.raises(StoreError) as err:
        Store(bad)
    assert "s3cret" not in str(err.value) and "***" in str(err.value) and "no_such_db" in str(err.value)
    with pytest.raises(StoreError, match="use sqlite:///PATH or postgresql://"):
        Store("mysql://u:pw@h/db")


def test_a_nul_character_in_model_text_is_stored(store):
    """A model may emit NUL (tiny random models do): SQLite keeps it, PostgreSQL (which cannot
    hold it in text) stores U+FFFD instead of failing the step; the JSON columns keep it escaped."""
    eid = _episode(store)
    store.add_step(eid, {**STEP, "output": "a\x00b", "feedback": "f\x00", "parsed": {"formula": "\x00"}})
    step = store.get_episode(eid)["steps"][0]
    nul = "\ufffd" if store.postgres else "\x00"
    assert step["output"] == f"a{nul}b" and step["feedback"] == f"f{nul}" and step["parsed"] == {"formula": "\x00"}
