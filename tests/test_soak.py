"""The soak scenario at 300 items in the suite (``bench/soak.py`` runs it at 10,000): worker SIGKILLs, a Redis
restart, a FLUSHALL and a store cut while one job runs; nothing lost, nothing duplicated, and the job finishes
without any manual call. The events are triggered by the job's progress, and the test checks each happened."""

from __future__ import annotations

from support.soak import SoakConfig, run_soak


def test_a_job_survives_kills_redis_restart_flushall_and_a_store_cut():
    result = run_soak(SoakConfig(n=300, size=160, kills=3, store_off_s=4.0, chunk_size=8, time_limit_s=400))
    assert all(e["applied_at_s"] is not None for e in result["events"]), result
    assert result["finished"] and result["final_status"] == "finished", result
    assert (result["lost"], result["duplicated"], result["failed"]) == (0, 0, 0), result
    assert result["records"] == result["unique_ids"] == result["expected"] == 300, result
