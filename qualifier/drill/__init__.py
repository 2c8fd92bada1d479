"""The recovery drill behind `manage.py recovery_drill`: real workers on a queue of their own,
real faults (SIGKILL, SIGSTOP, SIGTERM), and what each fault cost, measured on the configured
database; everything it made is removed at the end.

- `scorer`: the drill's scorer, counting its calls so a fault's wasted calls can be told.
- `workers`: starting, finding, killing and freezing the drill's own `db_worker` processes.
- `faults`: the faults, one trial each, and what a trial measures.
- `drill`: the drill itself (its user, its runs, its sweep, its clean-up) and its summary.
"""
