"""The worker side of recovery, behind `manage.py db_worker`: one module per part.

- `registry`: a process registers as a worker, beats on the database's clock, deregisters, and
  registers again after being found dead while it lives (Solid Queue's Registrable).
- `outage`: errors by kind. Only a lost connection is an outage, waited out with backoff while
  honouring stop requests; anything else is a bug or a lost race and is never retried.
- `supervisor`: runs the executor as a child, owns the stop signals and the periodic sweeper.
- `executor`: django-tasks-db's queue loop; it claims nothing once its worker's row is gone.
- `handback`: the one way a lease goes back to the queue (shutdown, crash, lost supervisor).
- `sweeper`: the periodic sweep timer every server and worker process runs.
"""
