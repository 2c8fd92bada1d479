from tests.processes import manage


def test_process_database_is_migrated_and_isolated(process_database):
    result = manage(["recover_stuck_runs", "--json"], process_database)
    assert result.returncode == 0, result.stderr
    assert '"active_count": 0' in result.stdout
