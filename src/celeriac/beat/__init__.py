"""Periodic tasks: entries, their slots, the scheduler with its leader election, and a store per
broker (see :mod:`celeriac.beat.scheduler`). ``app.beat`` (:mod:`celeriac.beat.api`) edits the
entries at run time; ``celeriac beat`` runs a beat; ``celeriac worker -B`` embeds one."""
