"""One fleet, two implementations (issue 16): Celery 5.7 and celeriac workers, clients, Celery's
command line and Flower 2, all real processes, on the shared RabbitMQ and on the shared Redis (in
kombu's layout), with results in Celery's layout on Redis.

The modules: :mod:`.fleet_tasks` (the task code, registered on both kinds of app as Celery
users write it), :mod:`.celery_side` and :mod:`.celeriac_side` (the two apps, built from the
environment in the workers), :mod:`.fleet` (one session's vhost, Redis prefix, workers and
clients, always cleaned up), :mod:`.runs` (what the tasks recorded), :mod:`.flower` (a real
Flower on a free port).
"""
